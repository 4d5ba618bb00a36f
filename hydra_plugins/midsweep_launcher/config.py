"""Config schemas of the midsweep launchers, registered under ``hydra/launcher``."""

from dataclasses import dataclass
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

from midsweep.launch.memory import Gpus
from midsweep.launch.preview import Throughput


@dataclass
class MidsweepOptions:
    preview: bool = False
    """Dry run: print the grid, the jobs, what is skipped and the estimated cost; submit nothing."""
    skip_done: bool = True
    """Do not launch points whose run directory says ``done`` (their results are reported instead)."""
    run_config: str = "midsweep.config.to_run_config"
    """Function turning a point's composed config into a validated run config (run_id(), run_dir(), plan())."""
    peak_tflops: float = Throughput.peak_tflops
    """Peak bf16 TFLOP/s of one GPU, for the GPU-hours estimate of the preview (A100: 312, H100: 989)."""
    mfu: float = Throughput.mfu
    """Assumed fraction of peak reached, for the GPU-hours estimate of the preview."""
    gpu_memory_gb: float = Gpus.memory_gb
    """Memory of one GPU in GiB (nvidia-smi's total MiB / 1024: an A100 80GB has 80). The preview shows each
    point's estimated peak per GPU against it, and a launch refuses points that would not fit, naming the keys
    that would (docs/slurm.md#gpu-memory)."""
    list_duplicates: bool = False
    """List each duplicate point (the same run as an earlier point of the grid, e.g. every weight of a
    no-introduction baseline) in the log and the preview, instead of one line that counts them."""


@dataclass
class MidsweepLocalConf(MidsweepOptions):
    _target_: str = "hydra_plugins.midsweep_launcher.local_launcher.MidsweepLocalLauncher"


@dataclass
class MidsweepSlurmConf(SlurmQueueConf, MidsweepOptions):
    _target_: str = "hydra_plugins.midsweep_launcher.slurm_launcher.MidsweepSlurmLauncher"
    max_num_timeout: int = 3
    """Requeues allowed after a timeout (or, with timeout_min < 50, any preemption: submitit counts those as
    timeouts). submitit_slurm's default 0 fails the job at the first preemption."""
    wait: bool = True
    """False: submit, write the sweep manifest and return at once (follow with ``midsweep status``)."""
    srun_args: Optional[List[str]] = None
    """Extra ``srun`` arguments (e.g. ["--cpu-bind=none"]); missing from hydra-submitit-launcher 1.2.0."""
    python: Optional[str] = None
    """Command that runs Python in the job (e.g. a container wrapper); default: this interpreter."""


ConfigStore.instance().store(group="hydra/launcher", name="midsweep_local", node=MidsweepLocalConf,
                             provider="midsweep_launcher")
ConfigStore.instance().store(group="hydra/launcher", name="midsweep_slurm", node=MidsweepSlurmConf,
                             provider="midsweep_launcher")


@dataclass
class MidsweepSweeperConf:
    _target_: str = "hydra_plugins.midsweep_launcher.sweeper.MidsweepSweeper"
    max_batch_size: Optional[int] = None
    """Points handed to the launcher at once (None: the whole grid)."""
    params: Optional[Dict[str, str]] = None
    """Sweep axes given in the config instead of the command line, like the basic sweeper's."""


ConfigStore.instance().store(group="hydra/sweeper", name="midsweep", node=MidsweepSweeperConf,
                             provider="midsweep_launcher")
