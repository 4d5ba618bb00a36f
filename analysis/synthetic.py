"""Synthetic sweeps written in the results contract (docs/results.md), with losses from known formulas:
the tests check that the analysis recovers what was put in, and the benchmark times 10,000 of them.
Nothing here trains; each function writes run directories and returns a table of what it wrote.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import columns as C
from analysis.laws import reuse_law

SIZE_OFFSET = {"tiny": 0.0, "small": -0.3, "base": -0.5}


def run_id_of(coords: dict) -> str:
    return hashlib.sha256(json.dumps(coords, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _nested(coords: dict) -> dict:
    out: dict = {}
    for key, value in coords.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def write_run(sweep_dir, coords: dict, final: dict, status: str = C.DONE, reason: str | None = None,
              tokens: int = 1_000_000, eval_points: int = 5, curve_scale: float = 0.8,
              with_summary: bool = True, experiment: str = "synthetic") -> Path:
    """One run directory. Curves fall from ``final + curve_scale`` to ``final`` over ``eval_points``
    evaluations; a failed or running run stops part-way (its summary holds the last evaluation)."""
    run_id = run_id_of(coords)
    run_dir = Path(sweep_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    shown = eval_points if status == C.DONE else max(1, eval_points // 2)
    intro = coords.get(C.INTRODUCE_AT)
    lines, last = [], {}
    for i in range(1, shown + 1):
        frac = i / eval_points
        phase = "pretrain" if intro is None or frac <= intro else "midtrain"
        event = "final" if (status == C.DONE and i == shown) else "every"
        for domain, loss in final.items():
            last[domain] = round(loss + curve_scale * (1 - frac) ** 2, 6)
            lines.append(json.dumps({"step": 100 * i, "tokens": int(tokens * frac), "phase": phase,
                                     "domain": domain, "loss": last[domain], "lr": 1e-3 * (1 - frac),
                                     "event": event}))
    step = 100 * shown
    _write(run_dir / "status.json", json.dumps({
        "contract": 1, "status": status, "step": step, "reason": reason, "updated": "2026-11-22T03:04:05Z",
        "host": "synthetic", "slurm_job_id": None, "log": str(run_dir / "train.log")}))
    _write(run_dir / "config.yaml", json.dumps(_nested(coords)))  # JSON is valid YAML
    if not with_summary:
        return run_dir
    _write(run_dir / "metrics.jsonl", "\n".join(lines) + "\n")
    _write(run_dir / "summary.json", json.dumps({
        "contract": 1, "run_id": run_id, "experiment": experiment, "status": status, "reason": reason,
        "coords": coords, "overrides": {k: str(v) for k, v in coords.items()}, "final": last,
        "phase_end": {}, "steps": step, "tokens": int(tokens * shown / eval_points),
        "tokens_by_domain": {}, "flops": 6.0 * 3e6 * tokens, "wall_time_s": 10.0 * shown, "params": 3_000_000}))
    return run_dir


def set_final(run_dir, **losses: float) -> None:
    """Change final losses in a run's summary.json (as a re-run with another result would)."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text())
    summary["final"].update(losses)
    _write(path, json.dumps(summary))


def set_status(run_dir, status: str, reason: str | None = None) -> None:
    """Change a run's status.json and summary.json status (e.g. make it a failed run)."""
    for name in ("status.json", "summary.json"):
        path = Path(run_dir) / name
        if path.exists():
            obj = json.loads(path.read_text())
            obj.update(status=status, reason=reason)
            _write(path, json.dumps(obj))


def best_weight(t):
    """The weight with the lowest in-domain loss at introduction time ``t`` in :func:`plasticity_sweep`."""
    return 0.1 + 0.3 * np.asarray(t)


def plasticity_sweep(sweep_dir, times, weights, seeds, domains=("code",), sizes=("tiny",), slope: float = 0.2,
                     noise: float = 0.005, seed_noise: float = 0.01, posttrain: bool = False,
                     baseline: bool = True, eval_points: int = 5) -> pd.DataFrame:
    """An introduction-time x weight grid (plus ``mixture.kind=none`` baselines) with
    in-domain loss = 2 + size + 1.5 (w - best_weight(t))^2 + slope * t + noise, so the best
    achievable loss at time t is 2 + size + slope * t: the window closes (by margin m) at
    t = times[0] + m / slope. General loss = 3 + size + 0.4 w (1 - t) (+ noise); baseline general = 3 + size."""
    rows = []
    for size in sizes:
        s = SIZE_OFFSET.get(size, 0.0)
        for seed in seeds:
            rng = np.random.default_rng([seed, len(rows)])
            seed_shift = np.random.default_rng(seed).normal(0, seed_noise)
            if baseline:
                coords = {C.KIND: C.KIND_NONE, C.DOMAIN: None, C.INTRODUCE_AT: None, C.WEIGHT: 0.0,
                          C.SEED: seed, C.SIZE: size, C.POSTTRAIN: posttrain}
                final = {C.GENERAL: 3.0 + s + seed_shift, **{d: 2.6 + s + seed_shift for d in domains}}
                if posttrain:
                    final[C.TARGET] = 2.4 + s + seed_shift
                rows.append({**coords, "path": write_run(sweep_dir, coords, final, eval_points=eval_points)})
            for domain in domains:
                for t in times:
                    for w in weights:
                        eps = rng.normal(0, noise, 2) + seed_shift
                        in_domain = 2.0 + s + 1.5 * (w - best_weight(t)) ** 2 + slope * t + eps[0]
                        final = {C.GENERAL: 3.0 + s + 0.4 * w * (1 - t) + eps[1], domain: in_domain}
                        if posttrain:
                            final[C.TARGET] = in_domain - 0.3
                        coords = {C.KIND: "introduce", C.DOMAIN: domain, C.INTRODUCE_AT: t,
                                  C.INTRODUCE_TOKENS: int(t * 1_000_000), C.WEIGHT: w, C.SEED: seed,
                                  C.SIZE: size, C.POSTTRAIN: posttrain}
                        rows.append({**coords, "path": write_run(sweep_dir, coords, final,
                                                                 eval_points=eval_points)})
    return pd.DataFrame(rows)


def continued_sweep(sweep_dir, d1_values, d2_values, params: dict, seeds=(0,), noise: float = 0.005,
                    domain: str = "code", size: str = "tiny") -> pd.DataFrame:
    """Continued-pretraining runs whose in-domain loss follows the model-reuse law with ``params``
    (A, alpha1, alpha2, alpha3, E) times log-normal noise; general loss rises with D2."""
    rows = []
    rng = np.random.default_rng(0)
    for seed in seeds:
        for d1 in d1_values:
            for d2 in d2_values:
                loss = float(reuse_law(d1, d2, **params) * np.exp(rng.normal(0, noise)))
                coords = {C.KIND: C.KIND_CONTINUED, C.DOMAIN: domain, C.INTRODUCE_AT: d1 / (d1 + d2),
                          C.INTRODUCE_TOKENS: int(d1), C.TRAIN_TOKENS: int(d1 + d2), C.WEIGHT: 1.0,
                          C.SEED: seed, C.SIZE: size}
                final = {C.GENERAL: 3.0 + 0.05 * np.log(d2), domain: loss}
                rows.append({**coords, "path": write_run(sweep_dir, coords, final, tokens=int(d1 + d2))})
    return pd.DataFrame(rows)


def upsample_sweep(sweep_dir, fractions, seeds=(0,), domain: str = "code", size: str = "tiny",
                   key: str = "mixture.upsample_fraction") -> pd.DataFrame:
    """Runs that upsample ``domain`` over the last fraction of training: targeted loss falls and general
    loss rises with the fraction."""
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for f in fractions:
            coords = {C.KIND: C.KIND_UPSAMPLE, C.DOMAIN: domain, key: f, C.SEED: seed, C.SIZE: size}
            final = {domain: 2.5 - 0.8 * f + rng.normal(0, 0.01), C.GENERAL: 3.0 + 0.3 * f ** 2}
            rows.append({**coords, "path": write_run(sweep_dir, coords, final)})
    return pd.DataFrame(rows)


def rewarm_sweep(sweep_dir, lrs, warmups, seeds=(0,), domain: str = "code", size: str = "tiny") -> pd.DataFrame:
    """Continued-pretraining runs that re-warm the learning rate: higher max LR learns the domain
    faster and forgets more of the general data."""
    rows = []
    for seed in seeds:
        for lr in lrs:
            for warmup in warmups:
                coords = {C.KIND: C.KIND_CONTINUED, C.DOMAIN: domain, C.LR: lr, C.WARMUP: warmup,
                          C.SEED: seed, C.SIZE: size, C.INTRODUCE_AT: 0.5}
                final = {domain: 2.2 - 50 * lr + 1e-4 * warmup, C.GENERAL: 3.0 + 80 * lr - 1e-4 * warmup}
                rows.append({**coords, "path": write_run(sweep_dir, coords, final, eval_points=8,
                                                         curve_scale=0.3 + 100 * lr)})
    return pd.DataFrame(rows)
