"""``midsweep prepare OVERRIDES``: tokenize every domain of a config into the shard cache before training.

It takes the training command's overrides (``sweep=plasticity_window profile=cluster``, ``data=...``), so it
builds exactly the shards those runs open (the sweep's base config: a grid axis over ``data.*`` keys needs
one call per value). Documents are read by this process and tokenized by ``--num-proc`` worker processes;
the shards are the same for any number. ``--slurm PROFILE`` submits the same command as one CPU job with
the keys of a launcher profile (``conf/hydra/launcher/PROFILE.yaml``: partition, account, setup, ...), with
``--num-proc`` defaulting to its ``cpus_per_task``. A multi-rank training job needs its shards ready: it
never tokenizes behind a distributed barrier.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Any, Optional

from omegaconf import DictConfig

from midsweep.config import RunConfig, to_run_config

CONF_MODULE = "midsweep_conf"


def compose(overrides: list[str], with_hydra: bool = False) -> DictConfig:
    """The config that ``midsweep-train OVERRIDES`` composes (with its ``hydra`` node when asked)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module=CONF_MODULE, version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=with_hydra)


def prepare(run: RunConfig, num_proc: int = 1) -> list[dict]:
    """Build (or find) the shards of every domain of ``run.data``; one row per domain for the report."""
    from midsweep.data import prepare_domains  # lazy: `midsweep --help` stays fast

    rows = []
    for name in run.data.domains:
        tic = time.perf_counter()
        domain = prepare_domains(run.data, [name], seq_len=run.model.seq_len, num_proc=num_proc)[name]
        seconds = time.perf_counter() - tic
        tokens = domain.meta["train"]["tokens"] + domain.meta["heldout"]["tokens"]
        rows.append({"domain": name, "built": not domain.cache_hit, "train_tokens": domain.meta["train"]["tokens"],
                     "heldout_tokens": domain.meta["heldout"]["tokens"],
                     "documents": domain.meta["train"]["documents"] + domain.meta["heldout"]["documents"],
                     "seconds": round(seconds, 2), "tokens_per_s": tokens / seconds if not domain.cache_hit else None,
                     "path": str(domain.path)})
    return rows


def report(rows: list[dict], num_proc: int) -> str:
    lines = [f"{'domain':12} {'state':8} {'train tokens':>13} {'held-out':>10} {'documents':>10} {'tokens/s':>10}"
             "  shards"]
    for r in rows:
        speed = f"{r['tokens_per_s']:.3g}" if r["tokens_per_s"] else "-"
        lines.append(f"{r['domain']:12} {'built' if r['built'] else 'cached':8} {r['train_tokens']:>13,} "
                     f"{r['heldout_tokens']:>10,} {r['documents']:>10,} {speed:>10}  {r['path']}")
    built = sum(r["built"] for r in rows)
    lines.append(f"{built} domain(s) tokenized with {num_proc} process(es), {len(rows) - built} already cached")
    return "\n".join(lines)


def run_prepare(overrides: list[str], num_proc: Optional[int] = None) -> str:
    """Compose, validate and prepare; returns the report (also what a SLURM job returns). ``num_proc`` None:
    one process per usable CPU, or one for the byte tokenizer (encoding bytes costs less than sending them)."""
    run = to_run_config(compose(overrides))
    if num_proc is None:
        num_proc = 1 if run.data.tokenizer == "byte" else len(os.sched_getaffinity(0))
    return report(prepare(run, num_proc), num_proc)


def prepare_job(overrides: list[str], num_proc: Optional[int]) -> str:
    """What the SLURM job runs: the report goes to the job's log, and is its result."""
    out = run_prepare(overrides, num_proc)
    print(out, flush=True)
    return out


def submit(overrides: list[str], profile: str, num_proc: Optional[int]) -> Any:
    """Submit ``run_prepare`` as one single-task CPU job built from launcher profile ``profile``."""
    from hydra.utils import instantiate

    cfg = compose([*overrides, f"hydra/launcher={profile}"], with_hydra=True)
    to_run_config(cfg)  # a bad value fails here, not in the queue
    launcher = instantiate(cfg.hydra.launcher)
    if not hasattr(launcher, "executor"):
        raise SystemExit(f"midsweep prepare: hydra/launcher={profile} is not a SLURM profile. "
                         "Fix: use --slurm slurm_cpu (or another midsweep_slurm profile), or drop --slurm")
    cpus = launcher.params.get("cpus_per_task") or 1
    ex = launcher.executor()
    ex.update_parameters(name="midsweep-prepare", nodes=1, tasks_per_node=1, gpus_per_node=0)
    return ex.submit(prepare_job, list(overrides), num_proc or cpus)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="the training command's overrides, e.g. sweep=plasticity_window "
                                                     "profile=cluster")
    parser.add_argument("--num-proc", type=int, default=None,
                        help="tokenizer processes (default: the CPUs this process may use, 1 for the byte "
                             "tokenizer; with --slurm, the profile's cpus_per_task)")
    parser.add_argument("--slurm", metavar="PROFILE",
                        help="submit as one CPU job with launcher profile PROFILE (e.g. slurm_cpu) and return")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from midsweep.config import ConfigError
    from midsweep.data import DataSourceError
    from midsweep.data.tokenizers import TokenizerError

    try:
        if args.slurm:
            try:
                job = submit(args.overrides, args.slurm, args.num_proc)
            except RuntimeError as err:  # submitit: no srun/sbatch here
                raise SystemExit(f"midsweep prepare: cannot submit to SLURM ({err}). Fix: run it on a machine "
                                 "of the cluster (a login node), or drop --slurm to prepare here") from err
            print(f"submitted SLURM job {job.job_id}: midsweep prepare {' '.join(args.overrides)}\n"
                  f"log: {job.paths.stdout}")
            return 0
        print(run_prepare(args.overrides, args.num_proc))
    except (ConfigError, DataSourceError, TokenizerError) as err:
        raise SystemExit(f"midsweep prepare: {err}")
    return 0
