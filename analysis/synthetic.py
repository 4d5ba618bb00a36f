"""Synthetic sweeps in exactly the format the engine writes: every run directory is a copy of a real,
engine-written run directory (a *template*) with only its numbers changed (coordinates, losses, status).
A coordinate the template's kind does not write cannot be set, so nothing here can carry a field that real
runs lack. Tests check that the analysis recovers losses put in from known formulas; the benchmark times
10,000 of them.

:func:`engine_templates` makes the templates by running the engine (``python -m midsweep.train``, tiny
``experiment=nano_test`` runs, seconds each) in a subprocess: the analysis package itself never imports the
engine.
"""
from __future__ import annotations

import copy
import hashlib
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from . import columns as C
from .laws import reuse_law
from midsweep import rundir

# Templates made by engine_templates: name -> the overrides of its runs.
TEMPLATE_RUNS = (
    # (multirun overrides, ...): one engine process per entry.
    ("mixture=none,introduce,continued,upsample_end", "posttrain=none,target"),
    ("optim=rewarm",),  # introduce with an LR re-warm at the introduction
)
NANO = ("experiment=nano_test", "train.tokens=4096", "eval.every_tokens=1024", "posttrain.tokens=1024")
SIZE_OFFSET = {"tiny": 0.0, "small": -0.3, "base": -0.5}
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def template_name(coords: dict) -> str:
    """``<kind>``, ``+posttrain`` when post-training ran, ``+rewarm`` with an LR re-warm at the boundary."""
    name = str(coords.get(C.KIND))
    if coords.get(C.BOUNDARY) == "rewarm":
        name += "+rewarm"
    return name + ("+posttrain" if coords.get(C.POSTTRAIN) else "")


def engine_templates(out_dir, python: str = sys.executable, timeout: int = 900) -> dict[str, Path]:
    """Run the engine's tiny runs into ``out_dir`` (once: finished runs are skipped) and return
    {template name: run directory}: every mixture kind with and without post-training, and a re-warm run."""
    out = Path(out_dir)
    for overrides in TEMPLATE_RUNS:
        cmd = [python, "-m", "midsweep.train", "-m", *NANO, *overrides, f"train.out_dir={out}",
               f"hydra.sweep.dir={out / '_hydra'}"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    found = {}
    # Oldest first, so that in a directory reused across engine versions the newest run of a name wins.
    for run_dir in sorted((p for p in out.iterdir() if (p / rundir.SUMMARY).exists()),
                          key=lambda p: (p / rundir.SUMMARY).stat().st_mtime):
        summary = rundir.read_summary(run_dir)
        if summary["status"] == C.DONE:
            found[template_name(summary["coords"])] = run_dir
    return found


@lru_cache(maxsize=64)
def _template(template: str) -> dict:
    d = Path(template)
    return {"summary": rundir.read_summary(d), "status": rundir.read_status(d),
            "config": yaml.load((d / rundir.CONFIG).read_text(), Loader=_YAML_LOADER),
            "metrics": rundir.read_jsonl(d / rundir.METRICS)}


def run_id_of(coords: dict) -> str:
    return hashlib.sha256(json.dumps(coords, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _check_coords(template: Path, have: dict, new: dict) -> None:
    """Only coordinates the template's kind writes; a new key of a dict-valued field (a domain of
    ``mixture.base_weights``) only where the template has that field."""
    families = {k.rsplit(".", 1)[0] for k in have if k.startswith(C.WEIGHT_DICTS)}
    for key in new:
        if key not in have and key.rsplit(".", 1)[0] not in families:
            raise KeyError(f"{key} is not a coordinate the engine writes for {template.name} "
                           f"({have.get(C.KIND)}): use a template of a kind that reads it")


def _set_config(cfg: dict, key: str, value) -> None:
    node = cfg
    *parents, leaf = key.split(".")
    for p in parents:
        if not isinstance(node.get(p), dict):
            return  # not a config key (e.g. the derived mixture.introduce_tokens)
        node = node[p]
    if leaf in node or parents[-1:] in (["base_weights"], ["upsample_weights"]):
        node[leaf] = value


def clone_run(template, sweep_dir, coords: dict, final: dict, status: str = C.DONE, reason: str | None = None,
              with_summary: bool = True, run_id: str | None = None) -> Path:
    """A copy of the engine-written run directory ``template`` in ``sweep_dir`` with ``coords`` changed and
    every curve shifted so its last evaluation reads ``final`` ({domain: loss}; other domains keep the
    template's). A run that is not done stops half-way through the template's evaluations;
    ``with_summary=False`` leaves a run before its first summary (config.yaml and status.json only)."""
    template = Path(template)
    t = _template(str(template))
    summary = copy.deepcopy(t["summary"])
    _check_coords(template, summary["coords"], coords)
    summary["coords"].update(coords)
    unknown = set(final) - set(summary["final"])
    if unknown:
        raise KeyError(f"{template.name} evaluates {sorted(summary['final'])}, not {sorted(unknown)}")
    shift = {d: final.get(d, loss) - loss for d, loss in summary["final"].items()}
    rows = [dict(r, loss=r["loss"] + shift.get(r["domain"], 0.0)) for r in t["metrics"]]
    if status != C.DONE:
        steps = sorted({r["step"] for r in rows})
        last = steps[max(0, len(steps) // 2 - 1)]
        rows = [r for r in rows if r["step"] <= last]
    step = max(r["step"] for r in rows)
    run_id = run_id or run_id_of(summary["coords"])
    run_dir = Path(sweep_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(t["config"])
    for key, value in coords.items():
        _set_config(cfg, key, value)
    (run_dir / rundir.CONFIG).write_text(yaml.dump(cfg, Dumper=_YAML_DUMPER, sort_keys=False))
    status_row = {**t["status"], "status": status, "reason": reason, "step": step,
                  "log": str(run_dir / rundir.TRAIN_LOG)}
    (run_dir / rundir.STATUS).write_text(json.dumps(status_row, indent=1, sort_keys=True))
    if not with_summary:
        return run_dir
    (run_dir / rundir.METRICS).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    summary.update(run_id=run_id, status=status, reason=reason, steps=step,
                   final={r["domain"]: r["loss"] for r in rows if r["step"] == step},
                   phase_end={ph: {d: v + shift.get(d, 0.0) for d, v in losses.items()}
                              for ph, losses in summary["phase_end"].items()} if status == C.DONE else {})
    tps = t["summary"]["tokens"] // max(1, t["summary"]["steps"])
    summary["tokens"] = step * tps
    (run_dir / rundir.SUMMARY).write_text(json.dumps(summary, indent=1, sort_keys=True))
    return run_dir


def set_final(run_dir, **losses: float) -> None:
    """Change final losses in a run's summary.json (as a re-run with another result would)."""
    path = Path(run_dir) / rundir.SUMMARY
    summary = json.loads(path.read_text())
    summary["final"].update(losses)
    path.write_text(json.dumps(summary))


def set_status(run_dir, status: str, reason: str | None = None) -> None:
    """Change a run's status.json and summary.json status (e.g. make it a failed run)."""
    for name in (rundir.STATUS, rundir.SUMMARY):
        path = Path(run_dir) / name
        if path.exists():
            obj = json.loads(path.read_text())
            obj.update(status=status, reason=reason)
            path.write_text(json.dumps(obj))


# ---- studies with known truth


def best_weight(t):
    """The weight with the lowest in-domain loss at introduction time ``t`` in :func:`plasticity_sweep`."""
    return 0.1 + 0.3 * np.asarray(t)


def plasticity_losses(times, weights, seeds, slope: float = 0.2, noise: float = 0.005, seed_noise: float = 0.01,
                      rng=None, size_offset: float = 0.0) -> np.ndarray:
    """in-domain loss[time, weight, seed] = 2 + size + 1.5 (w - best_weight(t))^2 + slope * t + cell noise + a
    shift per seed: the best achievable loss at time t is about 2 + size + slope * t, so the window closes (by
    margin m) at t = times[0] + m / slope."""
    rng = rng if rng is not None else np.random.default_rng(0)
    t, w = np.meshgrid(np.asarray(times, float), np.asarray(weights, float), indexing="ij")
    mean = 2.0 + size_offset + 1.5 * (w - best_weight(t)) ** 2 + slope * t
    seed_shift = rng.normal(0, seed_noise, len(seeds))
    return mean[..., None] + seed_shift + rng.normal(0, noise, mean.shape + (len(seeds),))


def plasticity_sweep(sweep_dir, templates: dict, times, weights, seeds, domains=("code",), sizes=("tiny",),
                     slope: float = 0.2, noise: float = 0.005, seed_noise: float = 0.01, posttrain: bool = False,
                     baseline: bool = True) -> pd.DataFrame:
    """A time x weight grid of ``introduce`` runs (plus ``mixture=none`` baselines) with in-domain losses from
    :func:`plasticity_losses`; general loss = 3 + size + 0.4 w (1 - t) (+ noise), baseline general = 3 + size;
    with ``posttrain`` the target loss is the in-domain loss - 0.3 (baseline 2.4 + size)."""
    suffix = "+posttrain" if posttrain else ""
    rows = []
    rng = np.random.default_rng(0)
    for size in sizes:
        s = SIZE_OFFSET.get(size, 0.0)
        for domain in domains:
            cube = plasticity_losses(times, weights, seeds, slope, noise, seed_noise, rng, s)
            for k, seed in enumerate(seeds):
                shift = cube[..., k].mean() - (cube.mean(axis=2)).mean()
                if baseline and domain == domains[0]:
                    coords = {C.SEED: seed, C.SIZE: size}
                    final = {C.GENERAL: 3.0 + s + shift, **{d: 2.6 + s + shift for d in domains}}
                    if posttrain:
                        final[C.TARGET] = 2.4 + s + shift
                    rows.append({**coords, C.KIND: C.KIND_NONE,
                                 "path": clone_run(templates["none" + suffix], sweep_dir, coords, final)})
                for i, t in enumerate(times):
                    for j, w in enumerate(weights):
                        in_domain = float(cube[i, j, k])
                        final = {C.GENERAL: 3.0 + s + 0.4 * w * (1 - t) + shift + rng.normal(0, noise),
                                 domain: in_domain}
                        if posttrain:
                            final[C.TARGET] = in_domain - 0.3
                        coords = {C.DOMAIN: domain, C.INTRODUCE_AT: t, C.WEIGHT: w, C.SEED: seed, C.SIZE: size,
                                  C.INTRODUCE_TOKENS: int(round(t * 4096))}
                        rows.append({**coords, C.KIND: "introduce", "path": clone_run(
                            templates["introduce" + suffix], sweep_dir, coords, final)})
    return pd.DataFrame(rows)


def continued_sweep(sweep_dir, templates: dict, d1_values, d2_values, params: dict, seeds=(0,),
                    noise: float = 0.005, domain: str = "code", size: str = "tiny") -> pd.DataFrame:
    """Continued-pretraining runs whose in-domain loss follows the model-reuse law with ``params``
    (A, alpha1, alpha2, alpha3, E) times log-normal noise; general loss rises with D2."""
    rows = []
    rng = np.random.default_rng(0)
    for seed in seeds:
        for d1 in d1_values:
            for d2 in d2_values:
                loss = float(reuse_law(d1, d2, **params) * np.exp(rng.normal(0, noise)))
                coords = {C.DOMAIN: domain, C.INTRODUCE_AT: d1 / (d1 + d2), C.INTRODUCE_TOKENS: int(d1),
                          C.TRAIN_TOKENS: int(d1 + d2), C.SEED: seed, C.SIZE: size}
                final = {C.GENERAL: 3.0 + 0.05 * np.log(d2), domain: loss}
                rows.append({**coords, "path": clone_run(templates["continued"], sweep_dir, coords, final)})
    return pd.DataFrame(rows)


def upsample_sweep(sweep_dir, templates: dict, fractions, seeds=(0,), base=None, upsample=None,
                   baseline: bool = True, size: str = "tiny") -> pd.DataFrame:
    """``upsample_end`` runs over ``fractions`` (the template's base and upsample weights unless given as
    {domain: weight}); each upsampled domain's loss falls and general loss rises with the fraction. With
    ``baseline``, ``mixture=none`` runs with the same base mix (losses at fraction 0)."""
    tpl = _template(str(templates["upsample_end"]))["summary"]["coords"]
    base = base or {k.split(".")[-1]: v for k, v in tpl.items() if k.startswith(C.BASE_WEIGHTS) and v is not None}
    upsample = upsample or {k.split(".")[-1]: v for k, v in tpl.items() if k.startswith(C.UPSAMPLE_WEIGHTS)
                            and v is not None}
    weights = {**{C.BASE_WEIGHTS + d: w for d, w in base.items()},
               **{C.UPSAMPLE_WEIGHTS + d: w for d, w in upsample.items()}}
    up = [d for d, w in upsample.items() if w > base.get(d, 0.0)]
    rows = []
    for seed in seeds:
        rng = np.random.default_rng(seed)

        def losses(f, rng=rng):
            return {C.GENERAL: 3.0 + 0.3 * f ** 2, **{d: 2.5 - 0.8 * f + rng.normal(0, 0.01) for d in up}}

        if baseline:
            coords = {C.SEED: seed, C.SIZE: size, **{C.BASE_WEIGHTS + d: w for d, w in base.items()}}
            rows.append({**coords, C.KIND: C.KIND_NONE,
                         "path": clone_run(templates["none"], sweep_dir, coords, losses(0.0))})
        for f in fractions:
            coords = {C.UPSAMPLE_FRACTION: f, C.SEED: seed, C.SIZE: size, **weights}
            rows.append({**coords, C.KIND: C.KIND_UPSAMPLE,
                         "path": clone_run(templates["upsample_end"], sweep_dir, coords, losses(f))})
    return pd.DataFrame(rows)


def rewarm_sweep(sweep_dir, templates: dict, lrs, warmups, seeds=(0,), init_from=(None,), domain: str = "code",
                 size: str = "tiny") -> pd.DataFrame:
    """Runs that re-warm the learning rate to each of ``lrs`` over each of ``warmups`` at the introduction of
    ``domain``, from each starting checkpoint in ``init_from``: a higher re-warm LR learns the domain faster
    and forgets more of the general data."""
    rows = []
    for k, start in enumerate(init_from):
        for seed in seeds:
            for lr in lrs:
                for warmup in warmups:
                    coords = {C.DOMAIN: domain, C.REWARM_LR: lr, C.REWARM_WARMUP: warmup, C.SEED: seed, C.SIZE: size,
                              C.INIT_FROM: start}
                    final = {domain: 2.2 - 50 * lr + 1e-1 * warmup - 0.1 * k,
                             C.GENERAL: 3.0 + 80 * lr - 1e-1 * warmup - 0.1 * k}
                    rows.append({**coords, "path": clone_run(templates["introduce+rewarm"], sweep_dir, coords,
                                                             final)})
    return pd.DataFrame(rows)
