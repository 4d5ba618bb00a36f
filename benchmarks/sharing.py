"""Prefix sharing: what a plasticity grid trains with and without it, measured side by side in one run.

1. Tokens: the standard plasticity grid of a GPU-scale study (``experiment=pythia160m_code``: introduction at
   0.1, 0.2, ..., 0.8 of training x weights 0.05, 0.1, 0.2, 0.4, 0.8, plus the no-introduction baseline), as
   the launcher plans it. Target: at most 0.57x the tokens without sharing (theory: 23 of 41 run-lengths).
2. Wall time: a tiny version of that grid (the nano model, introduction at 0.25, 0.5, 0.75 x weights 0.2, 0.6,
   plus the baseline) trained on this machine by the local launcher, once with ``train.share_prefixes=false``
   and once with sharing, from empty sweep directories.

    .venv/bin/python benchmarks/sharing.py [--steps 20]

Prints a table; the last line is ``ratio=X``, the tokens ratio of the standard grid.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.57
TIMES = [round(0.1 * i, 1) for i in range(1, 9)]
WEIGHTS = [0.05, 0.1, 0.2, 0.4, 0.8]


def grid(*base: str, times: list[float], weights: list[float]) -> list:
    """The validated RunConfigs of the baseline and every (time, weight) point, composed from conf/ once per
    mixture and varied like the launcher's value overrides."""
    from hydra import compose, initialize_config_dir

    from midsweep.config import to_run_config

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        baseline = to_run_config(compose("config", overrides=[*base, "mixture=none"]))
        introduce = to_run_config(compose("config", overrides=list(base)))
    runs = [baseline]
    for t in times:
        for w in weights:
            run = copy.deepcopy(introduce)
            run.mixture.introduce_at, run.mixture.weight = t, w
            runs.append(run.validate())
    return runs


def planned_tokens(runs: list) -> tuple[int, int, int]:
    """(tokens without sharing, tokens with sharing, runs that fork) of ``runs`` as the launcher plans them."""
    from midsweep.sharing.keys import Signature
    from midsweep.sharing.plan import Job, plan

    p = plan([Job(Signature.of(r)) for r in runs])
    tps = [r.tokens_per_step for r in runs]
    return (sum(p.steps(i, False) * tps[i] for i in range(len(runs))),
            sum(p.steps(i) * tps[i] for i in range(len(runs))), len(p.forks))


def train_grid(out: Path, steps: int, share: bool) -> float:
    """Seconds the local launcher takes to train the tiny grid into ``out`` (a fresh sweep directory)."""
    tokens = steps * 8 * 64
    cmd = [sys.executable, "-m", "midsweep.train", "-m", "experiment=nano_test", f"train.tokens={tokens}",
           f"eval.every_tokens={tokens // 4}", "mixture=none,introduce", "mixture.introduce_at=0.25,0.5,0.75",
           "mixture.weight=0.2,0.6", f"train.share_prefixes={str(share).lower()}", f"train.out_dir={out}",
           f"hydra.sweep.dir={out}/_hydra"]
    tic = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "MIDSWEEP_CACHE": os.environ.get("MIDSWEEP_CACHE",
                                                                              str(REPO / ".cache" / "midsweep"))})
    took = time.perf_counter() - tic
    if proc.returncode != 0:
        raise SystemExit(f"the tiny grid failed (share={share}):\n{proc.stderr[-3000:]}")
    return took


def cpu() -> str:
    model, flags = platform.processor() or "?", ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next(line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name"))
        flags = " ".join(f for f in ("avx512_bf16", "amx_bf16") if f in info) or "no native bf16"
    except (OSError, StopIteration):
        pass
    return f"{model}; {os.cpu_count()} cores; {flags}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="steps of each run of the tiny grid (a multiple of 4)")
    args = ap.parse_args()

    standard = grid("experiment=pythia160m_code", times=TIMES, weights=WEIGHTS)
    full, shared, forks = planned_tokens(standard)
    ratio = shared / full
    tiny = grid("experiment=nano_test", f"train.tokens={args.steps * 512}", times=[0.25, 0.5, 0.75],
                weights=[0.2, 0.6])
    tiny_full, tiny_shared, tiny_forks = planned_tokens(tiny)
    with tempfile.TemporaryDirectory(prefix="midsweep_prefix_") as tmp:
        alone = train_grid(Path(tmp) / "off", args.steps, share=False)
        together = train_grid(Path(tmp) / "on", args.steps, share=True)

    print(f"machine: {cpu()}; torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')}")
    print(f"{'grid':72} {'without':>12} {'with sharing':>13} {'ratio':>7}")
    print(f"{f'standard plasticity grid, pythia160m_code ({len(standard)} runs, {forks} forks): tokens':72} "
          f"{full:12.4g} {shared:13.4g} {ratio:7.3f}")
    print(f"{f'tiny grid, nano_test ({len(tiny)} runs x {args.steps} steps, {tiny_forks} forks): tokens':72} "
          f"{tiny_full:12.4g} {tiny_shared:13.4g} {tiny_shared / tiny_full:7.3f}")
    print(f"{'tiny grid: wall time of the local launcher, s':72} {alone:12.1f} {together:13.1f} "
          f"{together / alone:7.3f}")
    verdict = "met" if ratio <= TARGET else "MISSED"
    print(f"target: tokens ratio <= {TARGET} (theory 23/41 = {23 / 41:.3f}) -> {verdict}")
    print(f"ratio={ratio:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
