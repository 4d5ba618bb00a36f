"""Validate and submit a 1,000-point grid of the real engine to the local SLURM, and say where the time goes.
Target: under 60 s from command line to return (``hydra.launcher.wait=false``).

    .venv/bin/python benchmarks/submit_grid.py [--points 1000]

When no SLURM controller answers, it starts the project's local cluster (scripts/local_slurm/start.sh, which
needs root) or says in one line how to.

The grid is ``experiment=nano_test`` (10 steps a run) over 40 mixture weights x points/40 seeds. The array
runs at most 2 tasks at once and is cancelled as soon as the command returns, so the machine is not swamped.
Phases: the launcher's pre-flight (compose + validate every point, run ids, run-directory states), submission
(the launcher pickled once, one small pickle per job, one sbatch for the array) and the rest (interpreter,
imports, Hydra startup, manifest). For comparison, not counted in the total: Hydra's own per-point
composition (which hydra/sweeper=midsweep skips) and pickling the launcher once per job (submitit's default),
both estimated from a sample.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = REPO / "scripts" / "local_slurm" / "start.sh"
TARGET_S = 60.0


def controller_answers() -> bool:
    if shutil.which("sbatch") is None or shutil.which("scontrol") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return ping.returncode == 0 and "UP" in ping.stdout


def ensure_cluster() -> str | None:
    """None once a SLURM controller answers, starting the local cluster if need be; else the line saying how."""
    if controller_answers():
        return None
    if os.geteuid() != 0:
        return f"no SLURM controller answers (scontrol ping): start the local cluster with sudo {START}, then rerun"
    print(f"no SLURM controller answers: starting the local cluster ({START}; installs slurm-wlm on first use)",
          flush=True)
    started = subprocess.run([str(START)], capture_output=True, text=True)
    if started.returncode != 0 or not controller_answers():
        last = (started.stderr.strip().splitlines() or ["no output"])[-1]
        return f"could not start the local SLURM cluster ({last}); see {START}"
    return None


def hydra_compose_cost(overrides: list[list[str]], base: list[str]) -> float:
    """Seconds Hydra's own composition (load_sweep_config) takes for these points, in this process."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(REPO / "conf")))
    master = loader.load_configuration("config", overrides=base, run_mode=RunMode.MULTIRUN)
    sample = overrides[:: max(1, len(overrides) // 20)]  # ~0.3 s a point: time a sample, scale to the grid
    tic = time.perf_counter()
    for o in sample:
        loader.load_sweep_config(master, base + o)
    return (time.perf_counter() - tic) * len(overrides) / len(sample)


def found(pattern: str, text: str) -> re.Match:
    m = re.search(pattern, text)
    if m is None:
        raise SystemExit(f"the launcher's log has no line matching {pattern!r}:\n{text[-3000:]}")
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1000, help="grid size (40 weights x points/40 seeds)")
    args = ap.parse_args()
    problem = ensure_cluster()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    weights = [f"{0.01 * (i + 1):.2f}" for i in range(40)]
    seeds = [str(i) for i in range(max(1, args.points // 40))]
    n = len(weights) * len(seeds)
    base = ["hydra/launcher=slurm_local", "experiment=nano_test", "train.tokens=5120"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MIDSWEEP_CACHE": os.environ.get(
        "MIDSWEEP_CACHE", str(REPO / ".cache" / "midsweep"))}
    with tempfile.TemporaryDirectory(prefix="midsweep_bench_") as tmp:
        out_dir = Path(tmp) / "sweep"
        cmd = [sys.executable, "-m", "midsweep.train", "-m", *base, f"train.out_dir={out_dir}",
               "hydra.launcher.wait=false", "hydra.launcher.array_parallelism=2",
               f"mixture.weight={','.join(weights)}", f"train.seed={','.join(seeds)}"]
        tic = time.perf_counter()
        out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        total = time.perf_counter() - tic
        log = out.stdout + out.stderr
        array = re.search(r'"job_id": "(\d+)_', (out_dir / "sweep_manifest.json").read_text()) \
            if (out_dir / "sweep_manifest.json").exists() else None
        if array:
            subprocess.run(["scancel", array.group(1)])
        if out.returncode != 0:
            print(log[-3000:])
            return 1
        validated = float(found(r"validated \d+ grid point\(s\) in ([\d.]+)s", log).group(1))
        m = found(r"submitted \d+ job\(s\) in ([\d.]+)s \(launcher pickled once: ([\d.]+) MB in ([\d.]+)s\)", log)
        submitted, pickle_mb, pickle_s = float(m.group(1)), float(m.group(2)), float(m.group(3))
        grid = [[f"mixture.weight={w}", f"train.seed={s}"] for w in weights for s in seeds]
        hydra_s = hydra_compose_cost(grid, base[1:] + [f"train.out_dir={out_dir}"])
        if array:  # the cancelled tasks may still be writing into the directory about to be removed
            drained = lambda: array.group(1) not in subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True,
                                                                    text=True).stdout.split()
            deadline = time.monotonic() + 60
            while not drained() and time.monotonic() < deadline:
                time.sleep(0.5)
    rest = total - validated - submitted
    rows = [("midsweep pre-flight: compose, validate, run ids, run-dir states", validated),
            ("submit: pickle the launcher once", pickle_s),
            ("submit: one small pickle per job + job folders + one sbatch", submitted - pickle_s),
            ("rest: interpreter, imports, Hydra startup, manifest", rest),
            ("total, command line to return", total),
            ("not counted: Hydra's composition of every point (sample, scaled)", hydra_s),
            (f"not counted: pickling the launcher per job ({pickle_mb:.1f} MB x {n}, estimated)", pickle_s * n)]
    print(f"{n}-point grid of experiment=nano_test submitted to the local SLURM "
          f"(array {array.group(1) if array else '?'}, cancelled)")
    print(f"{'phase':72} {'seconds':>8} {'of total':>8} {'/ 60 s':>7}")
    for name, s in rows:
        print(f"{name:72} {s:8.2f} {s / total:8.0%} {s / TARGET_S:7.2f}")
    print(f"target: total < {TARGET_S:.0f} s -> {'met' if total < TARGET_S else 'MISSED'} "
          f"(total / target = {total / TARGET_S:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
