"""``midsweep prepare OVERRIDES``: tokenize every domain of a config into the shard cache before training.

It takes the training command's overrides (``sweep=plasticity_window profile=small``, ``data=...``), so it
builds exactly the shards those runs open (the sweep's base config: a grid axis over ``data.*`` keys needs
one call per value). Documents are read by this process and tokenized by ``--num-proc`` worker processes;
the shards are the same for any number. ``--slurm PROFILE`` submits the same command as one CPU job with
the keys of a launcher profile (``conf/hydra/launcher/PROFILE.yaml``: partition, account, setup, ...), with
``--num-proc`` defaulting to its ``cpus_per_task``; a domain that job could not tokenize within a day
(midsweep.launch.cache_plan) gets an array of jobs instead, each tokenizing a part, and a merge job that waits
for them (``afterok``): its shards are the bytes one process would write (midsweep.data.parts). A multi-rank
training job needs its shards ready: it never tokenizes behind a distributed barrier.
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


def prepare(run: RunConfig, num_proc: int = 1, names: Optional[list[str]] = None) -> list[dict]:
    """Build (or find) the shards of the named domains of ``run.data`` (default: all); one row per domain for the
    report."""
    from midsweep.data import prepare_domains  # lazy: `midsweep --help` stays fast

    rows = []
    for name in run.data.domains if names is None else names:
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


def run_prepare(overrides: list[str], num_proc: Optional[int] = None, names: Optional[list[str]] = None) -> str:
    """Compose, validate and prepare; returns the report (also what a SLURM job returns). ``num_proc`` None:
    one process per usable CPU, or one for the byte tokenizer (encoding bytes costs less than sending them)."""
    run = to_run_config(compose(overrides))
    return report(prepare(run, _processes(run, num_proc), names), _processes(run, num_proc))


def _processes(run: RunConfig, num_proc: Optional[int]) -> int:
    if num_proc is not None:
        return num_proc
    return 1 if run.data.tokenizer == "byte" else len(os.sched_getaffinity(0))


def prepare_job(overrides: list[str], num_proc: Optional[int], names: Optional[list[str]] = None) -> str:
    """What the SLURM job runs: the report goes to the job's log, and is its result."""
    out = run_prepare(overrides, num_proc, names)
    print(out, flush=True)
    return out


def part_job(overrides: list[str], name: str, part: int, parts: int, num_proc: Optional[int]) -> str:
    """One task of a domain's array: tokenize its part ``part`` of ``parts``."""
    from midsweep.data import load_tokenizer
    from midsweep.data.parts import prepare_part

    run = to_run_config(compose(overrides))
    tokenizer = load_tokenizer(run.data.tokenizer)
    path = prepare_part(name, run.data.domains[name], tokenizer, run.data.cache_dir, part, parts,
                        _processes(run, num_proc))
    print(f"domain {name}: part {part + 1} of {parts} in {path}", flush=True)
    return str(path)


def merge_job(overrides: list[str], name: str, parts: int) -> str:
    """The job after a domain's array: its shards from the parts, and the report row."""
    from midsweep.data import load_tokenizer
    from midsweep.data.parts import merge_parts

    run = to_run_config(compose(overrides))
    merge_parts(name, run.data.domains[name], load_tokenizer(run.data.tokenizer), run.data.cache_dir, parts)
    return prepare_job(overrides, 1, [name])  # finds the merged shards: checks a sequence fits, reports


def split(run: RunConfig, cores: int, parts: Optional[int] = None) -> dict[str, int]:
    """Domain -> array jobs for each domain of ``run`` not prepared yet that one job of ``cores`` cores cannot
    tokenize within a day (``parts`` given: every domain not prepared yet, in that many)."""
    from midsweep.launch.cache_plan import parts as needed
    from midsweep.launch.epochs import split_sizes

    out = {}
    for name, (tokens, origin) in split_sizes(run).items():
        if origin != "prepared shards":
            out[name] = parts or needed(tokens, cores)
    return {name: k for name, k in out.items() if k > 1}


def submit(overrides: list[str], profile: str, num_proc: Optional[int], parts: Optional[int] = None) -> list[str]:
    """Submit the preparation as CPU jobs built from launcher profile ``profile``: one job for the domains it can
    tokenize within a day, an array and a merge job for each other domain; returns a line per submission."""
    from hydra.utils import instantiate

    cfg = compose([*overrides, f"hydra/launcher={profile}"], with_hydra=True)
    run = to_run_config(cfg)  # a bad value fails here, not in the queue
    launcher = instantiate(cfg.hydra.launcher)
    if not hasattr(launcher, "executor"):
        raise SystemExit(f"midsweep prepare: hydra/launcher={profile} is not a SLURM profile. "
                         "Fix: use --slurm slurm_cpu (or another midsweep_slurm profile), or drop --slurm")
    cpus = launcher.params.get("cpus_per_task") or 1
    arrays = split(run, cpus, parts)
    lines = []
    rest = [name for name in run.data.domains if name not in arrays]
    if rest:
        ex = _cpu_executor(launcher, "midsweep-prepare")
        job = ex.submit(prepare_job, list(overrides), num_proc or cpus, rest)
        lines.append(f"submitted SLURM job {job.job_id}: midsweep prepare {' '.join(overrides)} "
                     f"({', '.join(rest)})\nlog: {job.paths.stdout}")
    for name, k in arrays.items():
        ex = _cpu_executor(launcher, f"midsweep-prepare-{name}")
        tasks = ex.map_array(part_job, [list(overrides)] * k, [name] * k, range(k), [k] * k, [num_proc or cpus] * k)
        array = tasks[0].job_id.split("_")[0]
        ex = _cpu_executor(launcher, f"midsweep-merge-{name}", dependency=f"afterok:{array}", kill_on_invalid_dep="yes")
        merge = ex.submit(merge_job, list(overrides), name, k)
        lines.append(f"submitted SLURM array {array} ({k} jobs, a part of {name} each) and merge job "
                     f"{merge.job_id} after it\nlog: {merge.paths.stdout}")
    return lines


def _cpu_executor(launcher: Any, name: str, **additional: str) -> Any:
    ex = launcher.executor()
    ex.update_parameters(name=name, nodes=1, tasks_per_node=1, gpus_per_node=0)
    if additional:  # beside the profile's own additional_parameters
        ex.update_parameters(slurm_additional_parameters={**(launcher.params.get("additional_parameters") or {}),
                                                          **additional})
    return ex


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", help="the training command's overrides, e.g. sweep=plasticity_window "
                                                     "profile=small")
    parser.add_argument("--num-proc", type=int, default=None,
                        help="tokenizer processes (default: the CPUs this process may use, 1 for the byte "
                             "tokenizer; with --slurm, the profile's cpus_per_task)")
    parser.add_argument("--slurm", metavar="PROFILE",
                        help="submit as CPU jobs with launcher profile PROFILE (e.g. slurm_cpu) and return: one job, "
                             "and an array per domain it could not tokenize within a day")
    parser.add_argument("--parts", type=int, default=None,
                        help="with --slurm: tokenize every domain not prepared yet as an array of PARTS jobs "
                             "(default: only domains over a day of the profile's cores, at 2.5e5 tokens/s per core)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from midsweep.config import ConfigError
    from midsweep.data import DataSourceError
    from midsweep.data.tokenizers import TokenizerError

    try:
        if args.slurm:
            try:
                lines = submit(args.overrides, args.slurm, args.num_proc, args.parts)
            except RuntimeError as err:  # submitit: no srun/sbatch here
                raise SystemExit(f"midsweep prepare: cannot submit to SLURM ({err}). Fix: run it on a machine "
                                 "of the cluster (a login node), or drop --slurm to prepare here") from err
            print("\n".join(lines))
            return 0
        print(run_prepare(args.overrides, args.num_proc))
    except (ConfigError, DataSourceError, TokenizerError) as err:
        raise SystemExit(f"midsweep prepare: {err}") from None
    return 0
