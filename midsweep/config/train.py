"""Training run config: length, batch, precision, seeding, checkpoints, output location."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from midsweep.config.errors import Problem, require

PRECISIONS = ("auto", "fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""torch.compile's modes (``mode=``)."""
PARALLEL = ("ddp", "fsdp", "hsdp")


@dataclass
class TrainConfig:
    tokens: int = 1_048_576
    """Training tokens of the main phases (pretraining + midtraining), all domains together."""
    global_batch: int = 32
    """Sequences per optimizer step, across all ranks and accumulation steps."""
    micro_batch: int = 16
    """Sequences per forward/backward on one device; global_batch / (micro_batch * ranks) is the accumulation."""
    seed: int = 0
    """Seeds the model init and the data order (the domain of sample i is a function of (seed, i))."""
    precision: str = "auto"
    """``bf16`` (autocast, GPU and CPU), ``fp32``, or ``auto``: bf16 where the hardware computes it natively
    (CUDA with bf16, CPUs with AVX512-BF16/AMX), fp32 elsewhere (emulated bf16 is slower than fp32)."""
    compile: bool = False
    """torch.compile the model and the chunked loss head (helps on GPU; on CPU it mostly adds compile time)."""
    compile_mode: str = "default"
    """torch.compile's mode with ``compile``: ``default``, ``reduce-overhead`` (CUDA graphs), ``max-autotune``
    (searches matmul kernels, fuses more; minutes of compilation) or ``max-autotune-no-cudagraphs``."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    out_dir: str = "runs/${name}"
    """Sweep directory: each run writes ``out_dir/<run_id>``, the id being a hash of the resolved config."""
    checkpoint_every: int = 200
    """Steps between periodic checkpoints (0: only at pinned steps and the end)."""
    keep_last: int = 2
    """Periodic checkpoints kept (pinned ones are always kept)."""
    pin_steps: list[int] = field(default_factory=list)
    """Extra steps whose checkpoints are kept forever; phase boundaries are pinned too."""
    share_prefixes: bool = True
    """Prefix sharing (docs/sharing.md): start from the longest prefix of this run that another run of the sweep
    published in ``out_dir/_prefixes`` (bitwise the same results, fewer steps), and publish ``publish_steps``.
    The launchers plan it for a whole grid; False trains every step of this run itself and publishes nothing."""
    publish_steps: list[int] = field(default_factory=list)
    """Steps whose state this run publishes to ``out_dir/_prefixes`` for other runs to fork from (set by the
    launcher's plan; entries are kept until ``midsweep gc``, the run's own copies pruned like periodic ones)."""
    init_from: Optional[str] = None
    """Start the weights from another run's checkpoint: a run directory (its newest checkpoint) or a
    ``checkpoints/step_XXXXXXXX`` directory. The optimizer and data order start fresh (continual pretraining)."""
    log_every: int = 10
    """Steps between training-loss rows in train.jsonl. Also how often the loop waits for the device: it reads
    the loss, checks for a non-finite loss (recording the step it first occurred) and polls for a preemption
    signal at these steps and before every evaluation and checkpoint, never in between."""
    progress: bool = True
    """Show a progress bar with loss, tokens/s and ETA, on a terminal (redirected output, e.g. a SLURM job log, has
    the log's step lines instead)."""
    deterministic: bool = True
    """Ask torch for deterministic kernels, so a resumed run equals an uninterrupted one bitwise on CPU. On a GPU
    it costs throughput (slower deterministic kernels, e.g. for the embedding's backward and scatter/index ops)
    and does not make runs bitwise reproducible by itself (cuBLAS also needs CUBLAS_WORKSPACE_CONFIG), so
    ``train=gpu`` turns it off."""
    parallel: str = "ddp"
    """How ranks share the work: ``ddp`` (every rank holds the whole model and optimizer; gradients averaged),
    ``fsdp`` (FSDP2: parameters, gradients and optimizer states sharded over all ranks, each block gathered for
    its forward and backward; under ``precision=bf16`` bf16 parameters with fp32 gradient reduction) or ``hsdp``
    (sharded within a node, replicated across nodes). Checkpoints load into any world size and either mode.
    Neither changes the run id. With ``compile`` under fsdp/hsdp each block is compiled on its own; one process
    alone (no torchrun/SLURM ranks) trains unsharded."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward instead of keeping them: about a third more compute
    for activation memory of one block per layer boundary (what lets 1-7B models fit their micro-batch)."""
    wait_for_lock: bool = False
    """When another process holds the run directory (its ``run.lock``): wait for it to end instead of exiting
    with an error that names the holder. Then the run resumes from where the other left it, or is skipped if done."""

    @property
    def compiled(self) -> Optional[str]:
        """torch.compile's mode for the model and the loss head, None when the run is not compiled."""
        return self.compile_mode if self.compile else None

    def problems(self, prefix: str = "train") -> list[Problem]:
        out: list[Problem] = []
        require(out, self.tokens > 0, f"{prefix}.tokens", f"tokens={self.tokens} is not positive",
                "give the training length in tokens, e.g. 1048576")
        require(out, self.global_batch > 0, f"{prefix}.global_batch", "not positive", "use a positive batch")
        require(out, self.micro_batch > 0, f"{prefix}.micro_batch", "not positive", "use a positive micro batch")
        require(out, self.micro_batch <= 0 or self.global_batch % self.micro_batch == 0, f"{prefix}.global_batch",
                f"global_batch {self.global_batch} is not divisible by micro_batch {self.micro_batch}",
                "make global_batch a multiple of micro_batch x number of ranks")
        require(out, self.seed >= 0, f"{prefix}.seed", f"seed {self.seed} is negative", "use a seed >= 0")
        require(out, self.precision in PRECISIONS, f"{prefix}.precision", f"unknown precision {self.precision!r}",
                "use auto, bf16 or fp32")
        require(out, self.device in DEVICES, f"{prefix}.device", f"unknown device {self.device!r}",
                "use auto, cpu or cuda")
        require(out, self.compile_mode in COMPILE_MODES, f"{prefix}.compile_mode",
                f"unknown torch.compile mode {self.compile_mode!r}", f"use one of {', '.join(COMPILE_MODES)}")
        require(out, self.checkpoint_every >= 0, f"{prefix}.checkpoint_every", "negative", "use 0 or more steps")
        require(out, self.keep_last >= 1, f"{prefix}.keep_last", f"keep_last={self.keep_last}",
                "keep at least the last checkpoint (1)")
        require(out, all(s >= 1 for s in self.publish_steps), f"{prefix}.publish_steps",
                f"steps {self.publish_steps} include one below 1",
                "publish steps >= 1 (the state after that many steps)")
        require(out, self.parallel in PARALLEL, f"{prefix}.parallel", f"unknown parallelism {self.parallel!r}",
                f"use one of {', '.join(PARALLEL)}")
        require(out, self.log_every >= 1, f"{prefix}.log_every", "must be >= 1", "use e.g. 10")
        return out
