"""Forked runs of the real engine equal the same runs trained from scratch, bit for bit on CPU; a corrupt
prefix is retrained, a fork waits for the run that is publishing its prefix and fails with its parent's
reason; the local launcher runs trunks first and ``midsweep status`` / ``gc`` know the forks."""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midsweep import rundir
from midsweep.launch import cli
from midsweep.sharing import store
from midsweep.train.sharing import POLL_S
from runner import REPO, flip_bytes, train_cli

# 20 steps of 8 x 64 tokens, evaluated every 5 steps
BASE = ("experiment=nano_test", "train.tokens=10240", "eval.every_tokens=2560")
INTRO = ("mixture.introduce_at=0.5",)  # forks at step 10
REWARM = ("mixture=continued", "mixture.introduce_at=0.75", "optim=rewarm", "optim.rewarm_lr=2e-3")  # at 15
UPSAMPLE = ("mixture=upsample_end", "mixture.upsample_fraction=0.25", "~mixture.base_weights.code",
            "~mixture.base_weights.math", "mixture.base_weights.general=1.0")  # at 15
TRUNK = ("mixture=none", "train.publish_steps=[10,15]")
pytestmark = pytest.mark.slow  # whole training processes; the in-process fork test is in test_train_state.py


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def train_many(*runs: tuple) -> list[subprocess.CompletedProcess]:
    """Train several runs at once (separate processes), each ``(out_dir, *overrides)``; all must succeed."""
    procs = [subprocess.Popen([sys.executable, "-m", "midsweep.train", *BASE, *over, f"train.out_dir={out}"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for out, *over in runs]
    done = []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        assert p.returncode == 0, out[-3000:]
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
    return done


def the_run(sweep: Path, *overrides: str) -> Path:
    from hydra import compose, initialize_config_dir

    from midsweep.config import to_run_config

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*BASE, *overrides, f"train.out_dir={sweep}"])
    return Path(to_run_config(cfg).run_dir())


def same_records(forked: Path, scratch: Path) -> None:
    """Every evaluation bit for bit, every training row but its throughput, the summary's losses and counts."""
    assert rows(forked / rundir.METRICS) == rows(scratch / rundir.METRICS)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "tok_per_s"} for r in rs]
    assert strip(rows(forked / rundir.TRAIN_LOG_JSONL)) == strip(rows(scratch / rundir.TRAIN_LOG_JSONL))
    a, b = rundir.read_summary(forked), rundir.read_summary(scratch)
    for key in ("final", "phase_end", "steps", "tokens", "tokens_by_domain", "flops", "status", "run_id"):
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def trunk(tmp_path_factory) -> Path:
    """A sweep directory whose general-only baseline published its state at steps 10 and 15."""
    sweep = tmp_path_factory.mktemp("shared")
    train_cli(*BASE, *TRUNK, f"train.out_dir={sweep}")
    return sweep


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> dict:
    """The forks' configs trained from scratch (sharing off), in one go."""
    out = tmp_path_factory.mktemp("scratch")
    kinds = {"intro": INTRO, "rewarm": REWARM, "upsample": UPSAMPLE}
    train_many(*[(out, "train.share_prefixes=false", *over) for over in kinds.values()])
    return {name: the_run(out, *over) for name, over in kinds.items()}


@pytest.mark.slow
@pytest.mark.parametrize("kind,overrides,step", [("intro", INTRO, 10), ("rewarm", REWARM, 15),
                                                 ("upsample", UPSAMPLE, 15)])
def test_a_fork_equals_the_run_trained_from_scratch_bitwise(trunk, scratch, kind, overrides, step):
    (proc,) = train_many((trunk, *overrides))
    forked = the_run(trunk, *overrides)
    assert "forking from prefix" in proc.stdout and f"from step {step}" in proc.stdout
    same_records(forked, scratch[kind])
    prefix = rundir.read_summary(forked)["prefix"]
    assert prefix["step"] == step and prefix["parent"] == the_run(trunk, *TRUNK).name
    assert json.loads((forked / store.META).read_text()) == prefix
    # the fork holds its own checkpoint at the fork step (linked, not copied) and trained only what follows
    assert (rundir.checkpoint_dir(forked, step) / rundir.COMPLETE).exists()
    assert min(r["step"] for r in rows(forked / rundir.TRAIN_LOG_JSONL) if r["step"] > step) == step + 5


@pytest.mark.slow
def test_a_corrupt_prefix_is_detected_retrained_and_published_again(trunk, scratch, tmp_path):
    shutil.copytree(trunk / store.STORE, tmp_path / store.STORE)  # copies: the trunk's own files stay intact
    entry = _entry(tmp_path, 10)
    model = entry.path / store.CHECKPOINT / "__0_0.distcp"
    model.write_bytes(model.read_bytes()[:-100] + b"x" * 100)
    (proc,) = train_many((tmp_path, *INTRO))
    assert "is corrupt (checksum mismatch in checkpoint/__0_0.distcp)" in proc.stdout
    assert "forking from prefix" not in proc.stdout
    forked = the_run(tmp_path, *INTRO)
    same_records(forked, scratch["intro"])
    assert rundir.read_summary(forked)["prefix"] is None
    again = _entry(tmp_path, 10)
    assert store.problem(again) is None and again.meta["run_id"] == forked.name  # republished by the fork


@pytest.mark.slow
def test_a_fork_never_resumes_from_bytes_that_differ_from_what_was_written(trunk, scratch, tmp_path):
    shutil.copytree(trunk / store.STORE, tmp_path / store.STORE)
    train_many((tmp_path, *INTRO))
    forked = the_run(tmp_path, *INTRO)
    fork_step = rundir.checkpoint_dir(forked, 10)

    def killed_after_its_fork_step() -> None:  # only the checkpoint of the fork step is left
        for step in rundir.complete_steps(forked):
            if step > 10:
                shutil.rmtree(rundir.checkpoint_dir(forked, step))
        for name in (rundir.SUMMARY, rundir.STATUS):
            (forked / name).unlink()

    # the entry's bytes change: the fork's own step_10 holds the same inodes, so it retrains the prefix
    killed_after_its_fork_step()
    model = _entry(tmp_path, 10).path / store.CHECKPOINT / "__0_0.distcp"
    assert model.stat().st_ino == (fork_step / "__0_0.distcp").stat().st_ino
    flip_bytes(model)
    (proc,) = train_many((tmp_path, *INTRO))
    assert f"checkpoint {fork_step} is corrupt (checksum mismatch in __0_0.distcp)" in proc.stdout
    assert "resuming" not in proc.stdout and "forking from prefix" not in proc.stdout
    assert "is corrupt (checksum mismatch in checkpoint/__0_0.distcp)" in proc.stdout  # the entry is retrained
    same_records(forked, scratch["intro"])
    assert rundir.read_summary(forked)["prefix"] is None and not (forked / store.META).exists()
    # only the fork's own copy changes: it takes the prefix (republished by itself above) from the store again
    killed_after_its_fork_step()
    for f in list(fork_step.iterdir()):  # copies: inodes of its own
        Path(shutil.copy(f, f.with_name(f.name + ".copy"))).replace(f)
    flip_bytes(fork_step / "__0_0.distcp")
    (proc,) = train_many((tmp_path, *INTRO))
    assert f"checkpoint {fork_step} is corrupt (checksum mismatch in __0_0.distcp)" in proc.stdout
    assert "forking from prefix" in proc.stdout and "resuming" in proc.stdout and "from step 10" in proc.stdout
    same_records(forked, scratch["intro"])


def _entry(sweep: Path, step: int) -> store.Entry:
    """The sweep's published prefix at ``step`` (there is one)."""
    (meta,) = [rundir.read_json(p) for p in (sweep / store.STORE).glob(f"*/{step:08d}-*/{store.META}")]
    return next(e for e in store.entries(sweep / store.STORE, meta["static"]) if e.step == step)


@pytest.mark.slow
def test_a_fork_waits_for_the_run_publishing_its_prefix_then_uses_it(trunk, scratch, tmp_path):
    entry = _entry(trunk, 10)
    parent = tmp_path / "0123456789ab"
    parent.mkdir()
    store.claim(tmp_path / store.STORE, entry.meta["static"], 10, entry.key, parent.name, parent)
    with rundir.hold(parent):  # the parent is training
        proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *BASE, *INTRO, f"train.out_dir={tmp_path}"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        log = the_run(tmp_path, *INTRO) / rundir.TRAIN_LOG
        deadline = time.time() + 300
        while not (log.exists() and "waiting for run 0123456789ab" in log.read_text()):
            assert time.time() < deadline and proc.poll() is None, "the fork did not wait"
            time.sleep(0.5)
        time.sleep(POLL_S + 1.0)  # past its next look at the store: still waiting, it trains nothing meanwhile
        assert proc.poll() is None and not rundir.complete_steps(log.parent)
        shutil.copytree(entry.path, tmp_path / ".incoming")  # the parent publishes (one rename), then ends
        (tmp_path / ".incoming").rename(store.entry_path(tmp_path / store.STORE, entry.meta["static"], 10, entry.key))
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0 and "forking from prefix" in out, out[-3000:]
    same_records(log.parent, scratch["intro"])


@pytest.mark.slow
def test_a_fork_whose_parent_failed_fails_with_the_parents_reason(tmp_path):
    diverge = ("optim.lr=1e30", "optim.warmup=0", "optim.grad_clip=0")
    bad = train_cli(*BASE, *TRUNK, *diverge, f"train.out_dir={tmp_path}", check=False)
    assert bad.returncode != 0
    proc = train_cli(*BASE, *INTRO, *diverge, f"train.out_dir={tmp_path}", check=False)
    assert proc.returncode != 0
    status = rundir.read_status(the_run(tmp_path, *INTRO, *diverge))
    assert status["status"] == "failed" and "ParentFailed" in status["reason"]
    assert "non-finite loss" in status["reason"] and the_run(tmp_path, *TRUNK, *diverge).name in status["reason"]


@pytest.mark.slow
def test_the_local_launcher_trains_the_trunk_first_and_status_and_gc_know_the_forks(scratch, tmp_path, capsys):
    grid = ("mixture=none,introduce", "mixture.introduce_at=0.5,0.75")
    preview = subprocess.run([sys.executable, "-m", "midsweep.train", "-m", *BASE, *grid, f"train.out_dir={tmp_path}",
                              "hydra.launcher.preview=true"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert "with prefix sharing" in preview.stdout and "@10" in preview.stdout and "@15" in preview.stdout
    assert "(58% of the above)" in preview.stdout  # the baseline's 20 steps, then 10 and 5: 35 of 60
    done = subprocess.run([sys.executable, "-m", "midsweep.train", "-m", *BASE, *grid, f"train.out_dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    base, early, late = (the_run(tmp_path, "mixture=none"), the_run(tmp_path, *INTRO),
                         the_run(tmp_path, "mixture.introduce_at=0.75"))
    assert rundir.read_summary(early)["prefix"]["parent"] == base.name
    assert rundir.read_summary(late)["prefix"] == {**rundir.read_summary(late)["prefix"], "step": 15,
                                                   "parent": base.name}
    assert (base / rundir.SUMMARY).stat().st_mtime < (early / rundir.CONFIG).stat().st_mtime  # trunk first
    same_records(early, scratch["intro"])
    entries = json.loads((tmp_path / "sweep_manifest.json").read_text())["runs"]
    assert entries[early.name]["prefix"]["step"] == 10 and entries[base.name]["prefix"] is None
    assert cli.main(["status", str(tmp_path)]) == 0  # the commands as midsweep runs them, in this process
    table = capsys.readouterr().out
    assert "fork of" in table and f"{base.name}@10" in table and f"{base.name}@15" in table
    assert cli.main(["gc", str(tmp_path)]) == 0 and "removed" in capsys.readouterr().out
    assert not list((tmp_path / store.STORE).glob("*/0*"))  # every run is done: no prefix is needed any more
    assert (early / rundir.CHECKPOINTS).is_dir() and rundir.read_status(early)["status"] == "done"
