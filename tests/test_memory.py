"""The peak GPU memory estimate (midsweep/launch/memory.py): a 7B DDP point on one 80 GB GPU is refused with fixes
that do fit, sharded 7B is accepted, the terms equal a hand count, every shipped study fits at its shipped launcher
settings, the preview shows the estimate, and a SLURM launch refuses before submitting anything."""
import dataclasses
import itertools

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser

from runner import REPO, train_cli
from midsweep.config import RunConfig, to_run_config
from midsweep.launch import memory
from midsweep.launch.memory import GIB, Gpus

STUDIES = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
ESTIMATE_READS = ("model", "data", "train.micro_batch", "train.parallel", "train.activation_checkpointing",
                  "train.precision", "train.device")
"""Grid axes that can change a point's estimate (the others are taken at their first value)."""


def run_config(*overrides: str) -> RunConfig:
    with initialize_config_module(config_module="midsweep_conf", version_base="1.3"):
        return to_run_config(compose("config", overrides=list(overrides)))


def with_train(run: RunConfig, **changes) -> RunConfig:
    return dataclasses.replace(run, train=dataclasses.replace(run.train, **changes))


def applied(run: RunConfig, gpus: Gpus, fix: dict[str, str]) -> tuple[RunConfig, Gpus]:
    """``run`` and ``gpus`` with a fix's overrides applied."""
    train = {k.split(".", 1)[1]: v for k, v in fix.items() if k.startswith("train.")}
    train = {k: (v == "true" if k == "activation_checkpointing" else int(v) if k == "micro_batch" else v)
             for k, v in train.items()}
    launcher = {"gpus_per_node": "per_node", "nodes": "nodes"}
    more = {launcher[k.rsplit(".", 1)[1]]: int(v) for k, v in fix.items() if k.startswith("hydra.launcher.")}
    return with_train(run, **train), dataclasses.replace(gpus, **more)


def test_7b_ddp_on_one_80gb_gpu_is_refused_naming_fixes_that_fit():
    run, gpus = run_config("model=llama7b"), Gpus(per_node=1, memory_gb=80)
    with pytest.raises(memory.DoesNotFit) as refused:
        memory.check({0: run}, gpus)
    message = str(refused.value)
    assert "1 of 1 point(s) need more memory per GPU than hydra.launcher.gpu_memory_gb=80" in message
    assert "point(s) #0: up to " in message and "train.parallel=ddp" in message
    fixes = memory.fixes(run, gpus)
    assert [set(f) for f in fixes] == [{"train.parallel", "train.activation_checkpointing",
                                        "hydra.launcher.gpus_per_node"}]  # nothing on one GPU is enough
    fix = fixes[0]
    assert (fix["train.parallel"], fix["train.activation_checkpointing"]) == ("fsdp", "true")
    assert f"Fix: {' '.join(f'{k}={v}' for k, v in fix.items())}" in message
    assert memory.fits(*applied(run, gpus, fix))  # computed: the fewest GPUs that fit
    fewer = int(fix["hydra.launcher.gpus_per_node"]) // 2
    assert not memory.fits(*applied(run, gpus, {**fix, "hydra.launcher.gpus_per_node": str(fewer)}))


def test_7b_fsdp_over_8_gpus_with_activation_checkpointing_is_accepted():
    run = run_config("model=llama7b", "train.parallel=fsdp", "train.activation_checkpointing=true")
    memory.check({0: run}, Gpus(per_node=8, memory_gb=80))
    assert memory.estimate(run, Gpus(per_node=8)).gib() < 80 < memory.estimate(run, Gpus(per_node=1)).gib()


def test_a_1b_point_is_told_the_largest_micro_batch_that_fits():
    run = run_config("model=llama1b", "train.global_batch=64")
    fixes = memory.fixes(run, Gpus())
    assert fixes[0] == {"train.micro_batch": "8"}  # 16 does not fit; 8 is the largest divisor of 64 that does
    assert {"train.activation_checkpointing": "true"} in fixes
    assert memory.fits(*applied(run, Gpus(), fixes[0]))


# RunConfig's defaults: 4 neox blocks, d 256, 4 heads, d_ff 1024, byte vocabulary (256), 3,290,624 parameters of
# which 3,159,552 outside the embedding and head; at micro_batch 16 x seq_len 256 = 4096 tokens
TOKENS, D, F, V, LAYERS, HEADS, EVERY, BODY = 4096, 256, 1024, 256, 4, 4, 3_290_624, 3_159_552


def hand_count(sharded: bool, checkpointing: bool, shard_group: int, a: int) -> dict:
    """The terms for RunConfig's defaults, computing in ``a``-byte floats (2: bf16, 4: fp32)."""
    bf16 = a == 2
    r = 2 if sharded and bf16 else 4  # residual stream: bf16 parameters under fsdp's bf16 policy, else fp32
    block = TOKENS * (9 * a * D + 4 * HEADS + r * D + 2 * a * F)  # attention, lse; block input, GELU in and out
    chunk = TOKENS * V  # 2**27 // 256 tokens per chunk exceed the micro-batch: one chunk of all its logits
    in_head = (4 * TOKENS * D + 4 * chunk + (2 * chunk if bf16 else 0)  # fp32 hidden, fp32 logits, bf16 gradient
               + (2 * V * D if bf16 and not sharded else 0)  # ddp: the head's bf16 copy (fsdp's is bf16 already)
               + (2 * V * D + 4 * V * D if bf16 else 4 * V * D))  # the chunk's addition to the head's gradient
    terms = {
        "states": 16 * EVERY / shard_group,
        "copies": a * ((EVERY - BODY) + 2 * BODY / LAYERS) if sharded else (2 * BODY if bf16 else 0),
        "blocks": LAYERS * (TOKENS * r * D if checkpointing else block),
        "head": TOKENS * 4 * D + 4 * V * D + TOKENS * r * D,  # fp32 d hidden, fp32 d head, the final norm's input
        "transient": max(block * (2 if checkpointing else 1), in_head),
    }
    terms["overhead"] = GIB + 0.10 * sum(terms.values())
    return terms


@pytest.mark.parametrize("parallel, checkpointing, gpus, precision", [
    ("ddp", False, 1, "bf16"), ("ddp", True, 1, "fp32"), ("fsdp", True, 2, "bf16"), ("hsdp", False, 2, "fp32")])
def test_the_estimate_of_a_small_config_equals_the_hand_count_term_by_term(parallel, checkpointing, gpus, precision):
    run = with_train(RunConfig(), parallel=parallel, activation_checkpointing=checkpointing, precision=precision)
    est = memory.estimate(run, Gpus(per_node=gpus))
    group = 1 if parallel == "ddp" else gpus
    want = hand_count(parallel != "ddp", checkpointing, group, 2 if precision == "bf16" else 4)
    assert est.total > 0 and dataclasses.asdict(est) == pytest.approx(want, rel=1e-12)
    if (parallel, precision) == ("ddp", "bf16"):  # the numbers themselves, once
        assert (est.states, est.copies, est.blocks, est.head, est.transient) == \
            (52_649_984, 6_319_104, 159_645_696, 8_650_752, 39_911_424)
        assert memory.estimate(with_train(run, precision="auto"), Gpus()) == est  # auto: bf16 on a GPU


def test_fsdp_shards_over_every_gpu_of_the_job_and_hsdp_over_one_node():
    run = run_config("model=llama1b")
    states = {mode: memory.estimate(with_train(run, parallel=mode), Gpus(per_node=4, nodes=2)).states
              for mode in ("ddp", "fsdp", "hsdp")}
    every = run.plan()["all_params"]
    assert memory.estimate(run, Gpus(per_node=1)).states == 16 * every
    assert states["ddp"] == 20 * every  # and DDP's gradient buckets on more than one GPU
    assert (states["fsdp"], states["hsdp"]) == pytest.approx((16 * every / 8, 16 * every / 4))


def test_the_local_launcher_checks_only_cuda_runs_and_names_no_gpu_keys():
    local = Gpus(per_node=1, slurm=False)
    memory.check({0: run_config("model=llama7b")}, local)  # train.device=auto: the local launcher runs it on CPU
    memory.check({0: run_config("model=llama7b", "train.device=cpu")}, Gpus(per_node=8))
    with pytest.raises(memory.DoesNotFit, match="this machine's GPU") as refused:
        memory.check({0: run_config("model=llama1b", "train.device=cuda")}, local)
    assert "train.micro_batch=8" in str(refused.value)
    assert "gpus_per_node" not in str(refused.value) and "nodes=" not in str(refused.value)  # it runs on one GPU


def grid(study: str, profile: str) -> tuple[list[list[str]], Gpus]:
    """The points of a shipped study x profile that can differ in memory, and its shipped launcher's GPUs."""
    base = [f"sweep={study}", f"profile={profile}"] + (["hydra/launcher=slurm_gpu"] if profile != "tiny" else [])
    cfg = compose("config", overrides=base, return_hydra_config=True)
    parser = OverridesParser.create()
    axes = {key: list(parser.parse_overrides([f"{key}={value}"])[0].sweep_string_iterator())
            for key, value in (cfg.hydra.sweeper.params or {}).items()}
    axes = {k: v if k.startswith(ESTIMATE_READS) else v[:1] for k, v in axes.items()}
    points = [base + [f"{k}={v}" for k, v in zip(axes, values)] for values in itertools.product(*axes.values())]
    launcher = cfg.hydra.launcher
    if profile == "tiny":  # the local launcher
        return points, Gpus(1, 1, launcher.gpu_memory_gb, slurm=False)
    return points, Gpus(launcher.gpus_per_node, launcher.nodes, launcher.gpu_memory_gb)


@pytest.mark.parametrize("study", STUDIES)
def test_every_shipped_study_fits_at_its_shipped_launcher_settings(study):
    with initialize_config_module(config_module="midsweep_conf", version_base="1.3"):
        for profile in ("tiny", "small", "paper"):
            points, gpus = grid(study, profile)
            assert gpus.memory_gb == 80 and (profile == "tiny" or gpus.count == 1)
            runs = {i: to_run_config(compose("config", overrides=o)) for i, o in enumerate(points)}
            memory.check(runs, gpus)  # raises DoesNotFit naming the point otherwise
            assert profile == "tiny" or all(gpus.runs_on_gpu(r) for r in runs.values())


def test_the_preview_shows_the_peak_per_gpu_and_marks_points_that_do_not_fit(tmp_path):
    from midsweep.launch.preview import Throughput, preview
    from midsweep.launch.sweep import preflight

    points = [[f"model={m}", f"train.out_dir={tmp_path}"] for m in ("llama1b", "tiny")]
    with initialize_config_module(config_module="midsweep_conf", version_base="1.3"):
        planned = preflight(points, lambda o: compose("config", overrides=o), to_run_config, preview=True)
    shown = preview(planned, Throughput(), Gpus(per_node=2, memory_gb=80))
    header, big, small = shown.splitlines()[:3]
    assert "GiB/GPU" in header and max(len(line.split("  model=")[0]) for line in (big, small)) <= 90
    peaks = [memory.estimate(p.run, Gpus(per_node=2)).gib() for p in planned]
    assert f" {peaks[0]:.1f}! " in big and f" {peaks[1]:.1f} " in small and peaks[0] > 80 > peaks[1]
    assert f"up to {peaks[0]:.1f} GiB (#0) of 80 (hydra.launcher.gpu_memory_gb); 1 point(s) marked ! do not fit" \
        in shown
    assert "GiB/GPU" in preview(planned, Throughput(), Gpus(per_node=0))  # no GPU: a column of '-'
    assert "peak memory per GPU" not in preview(planned, Throughput(), Gpus(per_node=0))


@pytest.mark.slow
def test_a_slurm_launch_refuses_a_point_that_cannot_fit_before_submitting_anything(tmp_path):
    common = ["-m", "model=llama7b,tiny", "hydra/launcher=slurm_gpu", f"train.out_dir={tmp_path / 'runs'}",
              f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    (fix,) = memory.fixes(run_config("model=llama7b"), Gpus())
    for extra in (["hydra.launcher.preview=true"], []):
        proc = train_cli(*common, *extra, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "1 of 2 point(s) need more memory per GPU than hydra.launcher.gpu_memory_gb=80" in proc.stderr
        assert f"Fix: {' '.join(f'{k}={v}' for k, v in fix.items())}" in proc.stderr
        assert ("GiB/GPU" in proc.stdout) == bool(extra)  # the preview's table is printed first
    assert not (tmp_path / "sweep" / ".submitit").exists() and not (tmp_path / "runs").exists()
    ok = train_cli(*common, *(f"{k}={v}" for k, v in fix.items()), "hydra.launcher.preview=true")
    assert "every point fits" in ok.stdout and f"{fix['hydra.launcher.gpus_per_node']} GPU(s) per job" in ok.stdout
