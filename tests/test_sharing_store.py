"""The prefix store on disk: an entry appears whole or not at all, checksums catch a changed file, claims and
``gc`` keep exactly what pending runs need (no training: files only)."""
import os

import pytest

from midsweep import rundir
from midsweep.sharing import store
from runner import flip_bytes

STATIC = "a" * 64


def checkpoint(tmp_path, step=10):
    ckpt = rundir.checkpoint_dir(tmp_path / "run", step)
    ckpt.mkdir(parents=True)
    for name in ("model.pt", "optim.pt", "state.pt"):
        (ckpt / name).write_bytes(os.urandom(1000))
    rundir.mark_complete(ckpt, step)
    return ckpt


def publish(root, ckpt, step=10, key="b" * 64, metrics=({"step": 0, "loss": 1.0},)):
    """The entry (None when published already)."""
    return publish_waiting(root, ckpt, step, key, metrics)[0]


def publish_waiting(root, ckpt, step=10, key="b" * 64, metrics=({"step": 0, "loss": 1.0},)):
    return store.publish(root, STATIC, step, key, ckpt, list(metrics), [{"step": 5, "loss": 2.0}],
                         {"run_id": "0123456789ab", "run_dir": str(ckpt.parents[1])})


def test_a_published_entry_links_the_checkpoint_and_verifies(tmp_path):
    root, ckpt = tmp_path / store.STORE, checkpoint(tmp_path)
    entry = publish(root, ckpt)
    assert [e.path for e in store.entries(root, STATIC)] == [entry.path]
    assert store.problem(entry) is None and entry.meta["run_id"] == "0123456789ab"
    linked = entry.path / store.CHECKPOINT / "model.pt"
    assert linked.stat().st_ino == (ckpt / "model.pt").stat().st_ino  # a hard link: no extra disk
    assert not (entry.path / store.CHECKPOINT / rundir.COMPLETE).exists()
    assert store.rows(entry, rundir.METRICS) == [{"step": 0, "loss": 1.0}]
    assert publish(root, ckpt) is None  # published already: left as it is
    dest = rundir.checkpoint_dir(tmp_path / "fork", 10)
    store.link_checkpoint(entry, dest)
    assert rundir.complete_steps(tmp_path / "fork") == [10] and (dest / "optim.pt").read_bytes() == \
        (ckpt / "optim.pt").read_bytes()


def test_a_checkpoint_whose_bytes_changed_is_not_published_and_a_forks_copy_is_checked_like_its_own(tmp_path):
    root, ckpt = tmp_path / store.STORE, checkpoint(tmp_path)
    flip_bytes(ckpt / "optim.pt")  # after it was written, before it is published
    with pytest.raises(rundir.CorruptCheckpoint, match="checksum mismatch in optim.pt"):
        publish(root, ckpt)
    assert store.entries(root, STATIC) == [] and [p.name for p in root.glob("*/.tmp-*")] == []
    entry = publish(root, checkpoint(tmp_path / "again"))
    dest = rundir.checkpoint_dir(tmp_path / "fork", 10)
    store.link_checkpoint(entry, dest)
    assert rundir.checkpoint_problem(dest) is None
    flip_bytes(entry.path / store.CHECKPOINT / "model.pt")  # the same inode as the fork's model.pt
    assert rundir.checkpoint_problem(dest) == "checksum mismatch in model.pt"


def test_a_publish_that_dies_midway_leaves_no_entry(tmp_path):
    root, ckpt = tmp_path / store.STORE, checkpoint(tmp_path)

    def rows():
        yield {"step": 0}
        raise KeyboardInterrupt  # killed while writing the rows

    with pytest.raises(KeyboardInterrupt):
        publish(root, ckpt, metrics=rows())
    assert store.entries(root, STATIC) == []
    assert [p.name for p in root.glob("*/*") if not p.name.endswith(".lock")] == []


def test_a_changed_or_missing_file_is_a_problem_and_removal_is_one_rename(tmp_path):
    root, ckpt = tmp_path / store.STORE, checkpoint(tmp_path)
    entry = publish(root, ckpt)
    model = entry.path / store.CHECKPOINT / "model.pt"
    model.unlink()
    model.write_bytes(b"garbage")  # a new file: the publisher's own checkpoint stays intact
    assert store.problem(entry) == "checksum mismatch in checkpoint/model.pt"
    (entry.path / store.CHECKPOINT / "state.pt").unlink()
    assert "missing" in store.problem(entry)
    store.remove(entry)
    assert store.entries(root, STATIC) == [] and (ckpt / "state.pt").exists()


def test_claims_and_gc_keep_what_pending_runs_need(tmp_path):
    root, ckpt = tmp_path / store.STORE, checkpoint(tmp_path)
    needed, unneeded = publish(root, ckpt, key="c" * 64), publish(root, ckpt, step=10, key="d" * 64)
    store.claim(root, STATIC, 20, "e" * 64, "0123456789ab", tmp_path / "run")
    store.claim(root, STATIC, 30, "f" * 64, "0123456789ab", tmp_path / "run")
    assert [(c.step, c.key) for c in store.claims(root, STATIC)] == [(20, "e" * 64), (30, "f" * 64)]
    listed = store.gc(root, {"c" * 64, "e" * 64}, dry_run=True)
    assert {p.name for p in listed} >= {unneeded.path.name, f"00000030-{'f' * 24}.claim"}
    assert unneeded.path.exists()
    removed = store.gc(root, {"c" * 64, "e" * 64})
    assert {p.name for p in removed} == {p.name for p in listed}
    assert [e.key for e in store.entries(root, STATIC)] == [needed.key]
    assert [c.step for c in store.claims(root, STATIC)] == [20]
    store.gc(root, set())
    assert not root.exists() or not any(root.iterdir())


def test_a_claimant_trains_while_it_holds_its_run_lock(tmp_path):
    run_dir = tmp_path / "0123456789ab"
    assert not store.trains(run_dir)
    with rundir.hold(run_dir):
        assert store.trains(run_dir)
    rundir.atomic_write_json(run_dir / rundir.LOCK_HOLDER, {"pid": 1})  # left by a killed holder
    assert not store.trains(run_dir)


def test_the_jobs_waiting_for_a_prefix_are_handed_to_its_publisher_once(tmp_path):
    """A fork's SLURM job named in the claim survives the publisher re-claiming it when it starts, comes back from
    the publish (which starts it), and a job named after the publish is told to start at once."""
    root, ckpt, key = tmp_path / store.STORE, checkpoint(tmp_path), "b" * 64
    store.claim(root, STATIC, 10, key, "0123456789ab", tmp_path / "run")  # the launcher's plan
    assert store.wait_for(root, STATIC, 10, key, "77_1") and store.wait_for(root, STATIC, 10, key, "77_0")
    store.claim(root, STATIC, 10, key, "0123456789ab", tmp_path / "run")  # the publisher, when it starts
    entry, waiting = publish_waiting(root, ckpt, key=key)
    assert entry is not None and waiting == ["77_0", "77_1"]
    assert store.claims(root, STATIC) == []
    assert publish_waiting(root, ckpt, key=key) == (None, [])  # nobody is started twice
    assert not store.wait_for(root, STATIC, 10, key, "78_0")  # published already: the launcher starts it
