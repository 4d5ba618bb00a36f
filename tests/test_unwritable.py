"""Storage and environment a user got wrong: a read-only train.out_dir or shard cache, a full disk, a hub tokenizer
without network. Each is one line naming the problem and the fix, no traceback, and the run's status says the same."""
import os
import shutil
import subprocess

import pytest

from midsweep import rundir
from runner import train_cli


@pytest.fixture
def read_only(tmp_path):
    """A directory nothing can be created in: a read-only bind mount for root (who ignores modes), else mode 555."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    if os.geteuid() != 0:
        ro.chmod(0o555)
        yield ro
        ro.chmod(0o755)
        return
    for cmd in (["mount", "--bind", str(src), str(ro)], ["mount", "-o", "remount,bind,ro", str(ro)]):
        if subprocess.run(cmd, capture_output=True).returncode:
            subprocess.run(["umount", str(ro)], capture_output=True)
            pytest.skip("cannot make a read-only bind mount here (needs CAP_SYS_ADMIN)")
    yield ro
    subprocess.run(["umount", str(ro)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MiB file system of its own (tmpfs; root only)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(disk)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root with CAP_SYS_ADMIN")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def one_line(proc) -> str:
    """The one line the run ended with: no traceback, nothing but that line from midsweep-train."""
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("midsweep-train:")]
    return line


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [[], ["-m", "mixture.weight=0.2,0.4"]])
def test_a_read_only_out_dir_is_one_line_naming_it(read_only, multirun):
    line = one_line(train_cli(*multirun, "experiment=nano_test", f"train.out_dir={read_only / 'sweep'}", check=False))
    assert f"cannot write train.out_dir={read_only / 'sweep'}" in line and "Fix: set train.out_dir" in line


@pytest.mark.slow
def test_a_read_only_shard_cache_fails_the_run_with_the_fix_not_rerun_advice(read_only, tmp_path):
    proc = train_cli("experiment=nano_test", f"train.out_dir={tmp_path / 'sweep'}", check=False,
                     env={**os.environ, "MIDSWEEP_CACHE": str(read_only / "cache")})
    line = one_line(proc)
    assert f"cannot write the shard cache {read_only / 'cache'}" in line and "Fix: point MIDSWEEP_CACHE" in line
    (run,) = rundir.run_dirs(tmp_path / "sweep")
    status = rundir.read_status(run)
    assert status["status"] == "failed" and status["reason"] == line.removeprefix("midsweep-train: ")


@pytest.mark.slow
def test_a_hub_tokenizer_without_network_fails_at_once_with_its_whole_reason(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # nothing listens: as a node without network
    env["HF_HOME"] = str(tmp_path / "hf")  # an empty HF cache
    proc = train_cli("experiment=nano_test", "data.tokenizer=EleutherAI/pythia-160m", "data.vocab_size=null",
                     f"train.out_dir={tmp_path / 'sweep'}", check=False, env=env)
    line = one_line(proc)
    assert "cannot load tokenizer 'EleutherAI/pythia-160m' (it is not in the HF cache and the hub" in line
    assert "Retrying" not in proc.stderr  # transformers' retries took ~45 s of repeated warnings
    (run,) = rundir.run_dirs(tmp_path / "sweep")
    status = rundir.read_status(run)
    assert status["status"] == "failed" and status["reason"] == line.removeprefix("midsweep-train: ")
    assert "rerunning" not in status["reason"]


@pytest.mark.slow
def test_a_full_disk_fails_the_run_saying_so_and_ends_the_sweep_in_one_line_keeping_finished_runs(small_disk):
    args = ("experiment=nano_test", "train.share_prefixes=false", f"train.out_dir={small_disk / 'sweep'}")
    train_cli(*args, "mixture.weight=0.2")
    (done,) = rundir.run_dirs(small_disk / "sweep")
    before = {p: p.read_bytes() for p in done.rglob("*") if p.is_file() and p.name != "run.lock"}
    with open(small_disk / "filler", "wb") as f:  # room for a run's records and Hydra's, not for a checkpoint
        f.truncate(0)
        f.write(b"\0" * (shutil.disk_usage(small_disk).free - (300 << 10)))
    line = one_line(train_cli("-m", *args, "mixture.weight=0.2,0.4,0.6", check=False))
    assert line.startswith("midsweep-train: the disk is full: No space left on device writing ") and "Fix:" in line
    runs = rundir.run_dirs(small_disk / "sweep")
    assert len(runs) == 2  # the sweep ended there: the third point never started
    (full,) = [r for r in runs if r != done]
    status = rundir.read_status(full)
    assert status["status"] == "failed" and status["reason"] == line.removeprefix("midsweep-train: ")
    assert not list(full.glob("checkpoints/*.tmp"))  # the torn checkpoint is gone, its space given back
    assert {p: p.read_bytes() for p in before} == before  # the finished run is intact
