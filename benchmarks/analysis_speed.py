"""Analysis speed: load 10,000 run directories (runs + curves tables) and draw every heatmap (in-domain loss,
forgetting, post-training target loss; PNG + PDF) — target: under 10 s in all. The run directories are copies
of tiny real runs of the engine (made first, not timed) with their numbers changed (analysis.synthetic).

    .venv/bin/python benchmarks/analysis_speed.py [--seeds 12] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from midsweep_analysis import columns as C
from midsweep_analysis import heatmaps, synthetic
from midsweep_analysis.derived import add_metrics
from midsweep_analysis.load import load_sweeps

TARGET_S = 10.0


def cpu_s() -> float:
    """CPU seconds of this process: on a shared machine wall time includes waiting for a core, CPU time
    does not."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def make_sweep(root: Path, templates: dict, seeds: int) -> int:
    """10 times x 10 weights x 2 domains x 4 sizes x ``seeds`` seeds + baselines, topped up to 10,000
    runs with upsampling runs; 1% of the grid failed, a few running."""
    written = synthetic.plasticity_sweep(root, templates, [round(0.1 * i, 1) for i in range(10)],
                                         [0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7], range(seeds),
                                         domains=("code", "math"), sizes=("tiny", "small", "base", "large"),
                                         posttrain=True)
    rest = 10_000 - len(written)
    if rest > 0:
        synthetic.upsample_sweep(root, templates, [(i + 1) / (rest + 1) for i in range(rest)], baseline=False)
    for i, path in enumerate(written["path"].iloc[::100]):
        synthetic.set_status(path, C.FAILED if i % 4 else C.RUNNING, "non-finite loss (nan) at step 57")
    return len(list(root.iterdir()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=12, help="seeds per grid cell (12 gives 10,000 runs)")
    p.add_argument("--keep", type=Path, help="write the sweep and figures here instead of a temp dir")
    p.add_argument("--templates", type=Path, help="engine template runs directory (default: made in the temp dir)")
    args = p.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="midsweep-bench-"))
    sweep_dir = root / "sweep"
    t = time.perf_counter()
    templates = synthetic.engine_templates(args.templates or root / "templates")
    print(f"ran {len(templates)} tiny engine runs as templates in {time.perf_counter() - t:.1f} s (not timed below)")
    t = time.perf_counter()
    n = make_sweep(sweep_dir, templates, args.seeds)
    print(f"generated {n} run directories in {time.perf_counter() - t:.1f} s (not timed below)")

    rows = []
    load_before = os.getloadavg()[0]
    c0 = cpu_s()
    t0 = time.perf_counter()
    sweep = load_sweeps([sweep_dir])
    runs = add_metrics(sweep.runs)
    rows.append((f"load {len(sweep.runs)} runs + {len(sweep.curves)} curve rows", time.perf_counter() - t0,
                 cpu_s() - c0))
    for metric in C.HEATMAP_METRICS:
        t, c = time.perf_counter(), cpu_s()
        table = heatmaps.heatmap_table(runs, metric, sweep.coords)
        t_table = time.perf_counter() - t
        heatmaps.draw_heatmaps(table, root / "figures")
        rows.append((f"heatmap {metric}: table {t_table:.2f} s + draw PNG+PDF ({len(table)} cells)",
                     time.perf_counter() - t, cpu_s() - c))
    total, cpu = time.perf_counter() - t0, cpu_s() - c0
    width = max(len(r[0]) for r in rows) + 2
    print(f"\n{'part':<{width}}{'wall s':>8}{'/ 10 s':>8}{'CPU s':>8}")
    for name, s, c in rows + [("total", total, cpu)]:
        print(f"{name:<{width}}{s:>8.2f}{s / TARGET_S:>8.2f}{c:>8.2f}")
    print(f"\n{'PASS' if total < TARGET_S else 'FAIL'}: {total:.2f} s wall ({cpu:.2f} s CPU) for load + every "
          f"heatmap (target {TARGET_S:.0f} s); load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after, on {os.cpu_count()} cores")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
