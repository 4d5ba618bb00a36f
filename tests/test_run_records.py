"""The run directory's records: one torch-free owner, one process per run, every failure recorded, readable files."""
import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from midsweep import rundir
from midsweep.launch import manifest
from runner import REPO, flip_bytes, save_checkpoint, train_cli


def status_of(sweep: Path) -> dict:
    (run,) = rundir.run_dirs(sweep)
    return rundir.read_status(run)


def wait_for(predicate, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# ---- one owner, torch-free


@pytest.mark.slow
def test_the_run_directory_module_and_midsweep_status_do_not_import_torch():
    code = ("import sys, midsweep.rundir, midsweep.launch.status, midsweep.launch.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'accelerate')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# ---- files


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        rundir.atomic_write_json(tmp_path / "a.json", {"x": 1})
        with rundir.atomic_open(tmp_path / "b.bin", binary=True) as f:
            f.write(b"\0")
        manifest.update(tmp_path, {"abc": manifest.entry([], tmp_path / "abc", "new")})
    finally:
        os.umask(old)
    for name in ("a.json", "b.bin", manifest.NAME):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []  # no temporary left


def test_a_torn_last_line_is_dropped_and_a_rewind_keeps_rows_up_to_the_checkpoint(tmp_path):
    path = tmp_path / rundir.METRICS
    rundir.append_jsonl(path, [{"step": s, "domain": "code"} for s in (0, 10, 20)])
    with open(path, "a") as f:
        f.write('{"step": 30, "dom')  # killed mid-append
    assert [r["step"] for r in rundir.read_jsonl(path)] == [0, 10, 20]
    rundir.rewind_jsonl(path, 10)
    assert [r["step"] for r in rundir.read_jsonl(path)] == [0, 10]
    assert path.read_text().endswith("}\n")
    rundir.rewind_jsonl(path, None)  # no checkpoint: the restart begins at step 0 and writes it again
    assert path.read_text() == ""
    path.write_text('{"step": 0}\n{"ste\n{"step": 5}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):  # not a torn end: a damaged file, said so
        rundir.read_jsonl(path)


def _add_entries(sweep: str, worker: int) -> None:
    for i in range(15):
        manifest.update(Path(sweep), {f"{worker:06x}{i:06x}": manifest.entry([], Path(sweep), "new")})


def test_concurrent_launches_into_one_sweep_keep_every_manifest_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_entries, args=(str(tmp_path), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(manifest.read(tmp_path)["runs"]) == 45


# ---- one process per run directory


@pytest.mark.slow
def test_a_second_process_on_a_running_run_names_the_holder_or_waits_for_it(nano, tmp_path):
    sweep = tmp_path / "sweep"
    first = subprocess.Popen([sys.executable, "-m", "midsweep.train", *nano], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(sweep.glob(f"*/{rundir.LOCK_HOLDER}")), "the first run to hold its directory")
        first.send_signal(signal.SIGSTOP)  # a stopped holder still holds: the second cannot slip in
        second = train_cli(*nano, check=False)
        assert second.returncode != 0
        assert f"pid {first.pid} on host" in second.stderr and "train.wait_for_lock=true" in second.stderr
        waiter = subprocess.Popen([sys.executable, "-m", "midsweep.train", *nano, "train.wait_for_lock=true"],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        (run,) = rundir.run_dirs(sweep)
        wait_for(lambda: "waiting for run directory" in (run / rundir.TRAIN_LOG).read_text(), "the waiter to wait")
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(300) == 0
    out = waiter.communicate(timeout=300)[0]
    assert waiter.returncode == 0 and "is done already" in out  # it waited, then found the run finished
    rows = rundir.read_jsonl(run / rundir.METRICS)
    assert len(rows) == len({(r["step"], r["domain"], r["event"]) for r in rows}) == 5 * 4  # written once
    assert not (run / rundir.LOCK_HOLDER).exists()  # released: nobody holds it


# ---- failures after validation are recorded


@pytest.mark.slow
def test_a_corrupt_init_from_checkpoint_fails_the_run_with_its_step_and_reason(nano, tmp_path):
    ckpt = rundir.checkpoint_dir(tmp_path / "donor", 40)
    ckpt.mkdir(parents=True)
    for name in (".metadata", "__0_0.distcp", "train_state.pt"):
        (ckpt / name).write_bytes(b"not a checkpoint")
    (ckpt / rundir.COMPLETE).write_text("40")
    proc = train_cli(*nano, f"train.init_from={tmp_path / 'donor'}", check=False)
    assert proc.returncode != 0
    st = status_of(tmp_path / "sweep")
    assert st["status"] == "failed" and st["step"] == 0 and st["contract"] == rundir.CONTRACT
    assert st["reason"].startswith(f"train.init_from={tmp_path / 'donor'}: checkpoint {ckpt} cannot be read (")
    assert "Fix: point it at another of that run's checkpoints" in st["reason"]
    (run,) = rundir.run_dirs(tmp_path / "sweep")
    summary = rundir.read_summary(run)
    assert summary["status"] == "failed" and summary["coords"]["train.init_from"] == str(tmp_path / "donor")


@pytest.mark.slow
def test_an_init_from_checkpoint_whose_bytes_changed_fails_the_run_naming_the_fix(nano, tmp_path):
    from midsweep.config.model import ModelConfig
    from midsweep.model import build_model

    donor = save_checkpoint(tmp_path / "donor", 40, build_model(ModelConfig(size="nano", seq_len=64), 256))
    flip_bytes(donor / "__0_0.distcp")
    proc = train_cli(*nano, f"train.init_from={tmp_path / 'donor'}", check=False)
    assert proc.returncode != 0
    st = status_of(tmp_path / "sweep")
    assert st["status"] == "failed" and st["step"] == 0
    assert st["reason"] == (f"train.init_from={tmp_path / 'donor'}: checkpoint {donor} is corrupt (checksum "
                            "mismatch in __0_0.distcp). Fix: point it at another of that run's "
                            "checkpoints (checkpoints/step_XXXXXXXX directories)")


@pytest.mark.slow
def test_a_data_failure_fails_the_run_naming_the_domain(nano, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps({"content": f"document {i} " * 20}) + "\n" for i in range(300)))
    proc = train_cli(*nano, "data.domains.math.kind=files", f"data.domains.math.data_files=[{bad}]", check=False)
    assert proc.returncode != 0
    st = status_of(tmp_path / "sweep")
    assert st["status"] == "failed" and st["step"] == 0 and "domain 'math'" in st["reason"]


@pytest.mark.slow
def test_an_interrupt_before_the_first_step_stops_the_run_at_once_instead_of_leaving_it_running(nano, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *nano], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: list(sweep.glob(f"*/{rundir.STATUS}")), "the run to start")
    proc.send_signal(signal.SIGINT)  # Ctrl-C during data preparation, model set-up or the step-0 evaluation
    assert proc.wait(300) == 130
    st = status_of(sweep)
    assert st["status"] == "interrupted" and st["step"] == 0 and st["reason"].endswith("resumes from the start")
