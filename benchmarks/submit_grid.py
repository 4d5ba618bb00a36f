"""Validate and submit a 1,000-point grid to the local SLURM (scripts/local_slurm/start.sh), and say where
the time goes. Target: under 60 s from command line to return (``hydra.launcher.wait=false``).

    sudo scripts/local_slurm/start.sh && .venv/bin/python benchmarks/submit_grid.py [--points 1000]

The grid runs tests/slurm/stub_app.py (a trivially short job); the array is cancelled afterwards.
Phases: Hydra startup + its sweeper composing every point (BasicSweeper.validate_batch_is_legal), the
launcher's pre-flight (compose + validate + run ids + run-directory states), and submission (one
pickle per job, one sbatch for the array).
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUB = REPO / "tests" / "slurm"


def hydra_compose_cost(root: Path, overrides: list[list[str]]) -> float:
    """Seconds Hydra's own composition (load_sweep_config) takes for these points, in this process."""
    sys.path.insert(0, str(root))
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode

    loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(root / "conf")))
    master = loader.load_configuration("config", overrides=[f"hydra.searchpath=[file://{REPO}/conf]"],
                                       run_mode=RunMode.MULTIRUN)
    sample = overrides[:: max(1, len(overrides) // 20)]  # ~0.3 s a point: time a sample, scale to the grid
    tic = time.perf_counter()
    for o in sample:
        loader.load_sweep_config(master, o)
    return (time.perf_counter() - tic) * len(overrides) / len(sample)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=1000, help="grid size (40 weights x points/40 seeds)")
    ap.add_argument("--keep", action="store_true", help="let the jobs run instead of cancelling the array")
    args = ap.parse_args()
    if shutil.which("sbatch") is None:
        print("no sbatch: start the local cluster first (sudo scripts/local_slurm/start.sh)")
        return 2
    ws = [f"{0.025 * i:.3f}" for i in range(40)]
    tags = [f"s{i}" for i in range(max(1, args.points // 40))]
    n = len(ws) * len(tags)
    with tempfile.TemporaryDirectory(prefix="midsweep_bench_") as tmp:
        root = Path(tmp)
        shutil.copy(STUB / "stub_app.py", root)
        shutil.copytree(STUB / "conf", root / "conf")
        (root / "out").mkdir()
        cmd = [sys.executable, "stub_app.py", "-m", f"hydra.searchpath=[file://{REPO}/conf]", "hydra.launcher.wait=false",
               "steps=1", "step_s=0", f"w={','.join(ws)}", f"tag={','.join(tags)}"]
        tic = time.perf_counter()
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        total = time.perf_counter() - tic
        if out.returncode != 0:
            print(out.stderr[-3000:])
            return 1
        log = out.stdout + out.stderr
        validated = float(re.search(r"validated \d+ grid point\(s\) in ([\d.]+)s", log).group(1))
        submitted = float(re.search(r"submitted \d+ job\(s\) in ([\d.]+)s", log).group(1))
        job = re.search(r'"job_id": "(\d+)_', (root / "out" / "sweep_manifest.json").read_text()).group(1)
        grid = [[f"w={w}", f"tag={t}"] for w in ws for t in tags]
        hydra_s = hydra_compose_cost(root, grid)
        if not args.keep:
            subprocess.run(["scancel", job])
    rest = total - validated - submitted
    rows = [("hydra: full composition of every point (skipped by hydra/sweeper=midsweep; a sample, scaled)", hydra_s),
            ("midsweep pre-flight: compose, validate, run ids, states", validated),
            ("submit: pickle every job + one sbatch array", submitted),
            ("rest: interpreter, imports, Hydra startup, manifest", rest),
            ("total, command line to return", total)]
    print(f"{n}-point grid submitted to the local SLURM (array {job}; {'kept' if args.keep else 'cancelled'})")
    print(f"{'phase':88} {'seconds':>8} {'share':>6}")
    for name, s in rows:
        print(f"{name:88} {s:8.2f} {s / total:6.0%}")
    print(f"target: total < 60 s -> {'met' if total < 60 else 'MISSED'}; midsweep pre-flight is "
          f"{hydra_s / max(validated, 1e-9):.0f}x faster than Hydra's per-point composition (not counted in total)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
