"""What a user watching runs sees: train.log progress lines, TensorBoard and W&B (offline) trackers, the local
launcher's sweep line, and ``midsweep status`` with coordinates, step/total, ETA and stale heartbeats."""
import json
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from midsweep import rundir
from midsweep.config import ConfigError, RunConfig
from midsweep.config.logger import LoggerConfig
from midsweep.launch import cli
from midsweep.train import tracking
from midsweep.train.results import RunRecorder
from runner import REPO, train_cli

STEPS = list(range(5, 41, 5))  # nano_test: 40 steps, a train row every 5
EVALS = [0, 10, 20, 30, 40]  # every 5120 tokens = 10 steps
DOMAINS = ("general", "code", "math", "target")


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A 2-point nano grid run through the real CLI with the local launcher and logger=tensorboard."""
    sweep = tmp_path_factory.mktemp("grid") / "sweep"
    proc = train_cli("-m", "experiment=nano_test", "mixture.weight=0.2,0.5", "logger=tensorboard",
                     f"train.out_dir={sweep}")
    return sweep, proc.stdout + proc.stderr


def test_logger_settings_are_not_part_of_the_run_id_and_are_checked():
    tracked = RunConfig(logger=LoggerConfig(backend="wandb", project="p", mode="offline", tags=["a"]))
    assert tracked.run_id() == RunConfig().run_id()
    with pytest.raises(ConfigError, match=r"logger.backend: unknown tracker 'tensorbord'.*Fix: use none or one of"):
        RunConfig(logger=LoggerConfig(backend="tensorbord")).validate()


@pytest.mark.slow
def test_local_launcher_prints_a_sweep_line_between_runs(grid):
    _, out = grid
    assert re.search(r"sweep: 1/2 run\(s\) done, 0 failed, \S+ elapsed, ETA \d+:\d\d:\d\d", out)
    assert re.search(r"sweep: 2/2 run\(s\) done, 0 failed, \S+ elapsed, ETA 0:00:00", out)


def forked_at(run: Path) -> int:
    """The step a run forked from a shared prefix at (0: trained from scratch)."""
    return ((rundir.read_summary(run) or {}).get("prefix") or {}).get("step", 0)


@pytest.mark.slow
def test_train_log_has_a_progress_line_every_log_every_steps(grid):
    sweep, _ = grid
    assert sorted(forked_at(run) for run in rundir.run_dirs(sweep)) == [0, 20]  # the grid shares its first 20 steps
    for run in rundir.run_dirs(sweep):  # a fork trains, so logs, only the steps after its prefix
        lines = re.findall(r"step (\d+)/40 \(\d+%\) \w+ loss \d+\.\d+ lr \S+ grad_norm \S+ \| [\d,]+ tok/s "
                           r"ETA \d+:\d\d:\d\d", (run / rundir.TRAIN_LOG).read_text())
        assert [int(s) for s in lines] == [s for s in STEPS if s > forked_at(run)]


@pytest.mark.slow
def test_tensorboard_lists_the_runs_by_what_they_vary(grid):
    """``tensorboard --logdir <out_dir>/tensorboard`` names each run by its coordinates, not its 12-character id."""
    from tensorboard.backend.event_processing.io_wrapper import GetLogdirSubdirectories

    sweep, _ = grid
    logdir = sweep / "tensorboard"
    found = {Path(d).relative_to(logdir).as_posix() for d in GetLogdirSubdirectories(str(logdir))}
    ids = {run.name for run in rundir.run_dirs(sweep)}
    by_weight = sorted(ids, key=lambda r: (rundir.read_summary(sweep / r) or {})["coords"]["mixture.weight"])
    names = [f"weight={w} [{rid[:6]}]" for w, rid in zip(("0.2", "0.5"), by_weight)]
    assert {f"{n}/{axis}" for n in names for axis in ("steps", "tokens")} <= found
    assert {d.split("/")[0] for d in found} == set(names)  # (accelerate writes hyperparameters one folder down)
    assert not rundir.strays(sweep)  # the folder of names is no run, and no problem


@pytest.mark.slow
@pytest.mark.parametrize("forked", [False, True])
def test_tensorboard_events_hold_every_loss_against_steps_and_tokens(grid, forked):
    """A fork's events include its prefix's rows, which another run trained."""
    sweep, _ = grid
    (run,) = [run for run in rundir.run_dirs(sweep) if bool(forked_at(run)) == forked]
    metrics = rundir.read_jsonl(run / rundir.METRICS)
    train = rundir.read_jsonl(run / rundir.TRAIN_LOG_JSONL)
    steps = EventAccumulator(str(run / "tensorboard" / "steps")).Reload()
    tokens = EventAccumulator(str(run / "tensorboard" / "tokens")).Reload()
    for name in ("loss", "lr", "grad_norm", "tok_per_s"):
        assert [e.step for e in steps.Scalars(f"train/{name}")] == STEPS
    assert [e.value for e in steps.Scalars("train/loss")] == pytest.approx([r["loss"] for r in train], rel=1e-6)
    for d in DOMAINS:
        events = steps.Scalars(f"eval/{d}/loss")
        assert [e.step for e in events] == EVALS
        assert [e.value for e in events] == pytest.approx([r["loss"] for r in metrics if r["domain"] == d], rel=1e-6)
        assert [e.step for e in tokens.Scalars(f"eval/{d}/loss")] == [s * 512 for s in EVALS]
    assert [e.value for e in steps.Scalars("tokens")][-1] == 40 * 512
    # the study's variables, as a reader compares runs: the mixture weights over training and the phase
    weight = rundir.read_summary(run)["coords"]["mixture.weight"]
    code = {e.step: e.value for e in steps.Scalars("mixture/code")}
    phase = {e.step: e.value for e in steps.Scalars("train/phase")}
    assert sorted(code) == STEPS and code[5] == 0 and code[40] == pytest.approx(weight)
    assert [phase[s] for s in STEPS] == [0 if r["phase"] == "pretrain" else 1 for r in train]


@pytest.mark.slow
def test_status_shows_varying_coordinates_step_total_and_absolute_logs(grid, capsys):
    sweep, _ = grid
    assert cli.main(["status", str(sweep)]) == 0
    out = capsys.readouterr().out
    head, *rows = out.splitlines()
    assert re.search(r"\bweight\b", head) and "step/total" in head and "tok/s" in head
    assert "heartbeat" not in head and "ETA" not in head  # nothing to say of runs that are all done
    assert "introduce_at" not in head and "experiment=" not in out  # only what varies
    runs = [line for line in rows if re.match(r"[0-9a-f]{12} ", line)]
    assert len(runs) == 2 and all(" done " in r and " 40/40 " in r for r in runs)
    assert sorted(re.search(r" (0\.[25]) ", r).group(1) for r in runs) == ["0.2", "0.5"]
    logs = re.findall(r"(/\S+/train\.log)", out)
    assert len(logs) == 2 and all(Path(p).is_absolute() and Path(p).exists() for p in logs)
    assert "2 run(s): 2 done" in out and "steps 80/80 (100%)" in out and "nothing left to run" in out
    assert cli.main(["status", str(sweep), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(r["coords"]["mixture.weight"] for r in rows) == [0.2, 0.5]
    assert all(r["progress"]["total_steps"] == 40 and r["progress"]["tok_per_s"] > 0 for r in rows)


@pytest.mark.slow
def test_a_run_ends_with_its_directory_and_losses_and_a_sweep_with_its_table(grid):
    sweep, out = grid
    for run in rundir.run_dirs(sweep):
        final = rundir.read_summary(run)["final"]
        closing = rf"run {run.name} done: 40 steps, 20,480 tokens in \S+; run directory {run}\n"
        losses = "held-out loss at step 40: " + "  ".join(f"{d} {final[d]:.4f}" for d in sorted(final))
        assert re.search(closing, out) and losses in out
        assert (run / rundir.TRAIN_LOG).read_text().rstrip().endswith(losses)
    table = out[out.index(f"sweep {sweep}:"):].splitlines()
    assert re.match(r"run_id +state +step/total .*weight +loss code", table[1])
    assert all(any(line.startswith(run.name) for line in table) for run in rundir.run_dirs(sweep))
    assert "2 run(s): 2 done" in out


@pytest.mark.slow
def test_status_fits_the_terminal_and_keeps_only_what_tells_the_runs_apart(grid, tmp_path):
    from midsweep.launch import manifest, status, status_table

    sweep, _ = grid
    copy = tmp_path / "sweep"
    for run in rundir.run_dirs(sweep):
        shutil.copytree(run, copy / run.name, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    runs = manifest.read(sweep)["runs"]
    runs["0123456789ab"] = {"overrides": ["experiment=nano_test", "mixture.weight=0.8"]}  # not started yet
    rundir.atomic_write_json(copy / "sweep_manifest.json", {"contract": 1, "runs": runs})
    rows = status.collect(copy)
    for width in (80, 120):  # the pending run made rows of ~400 characters
        narrow = status_table.table(rows, width=width).splitlines()
        assert max(map(len, narrow)) <= width, narrow
        assert re.match(r"run_id +state +step/total +weight +(loss code|reason / log)", narrow[0])
        assert "introduce_at" not in narrow[0] and any("0123456789ab  pending" in line for line in narrow)
    assert "loss target" in narrow[0]  # at 120 columns the final losses fit
    wide = status_table.table(rows, wide=True).splitlines()
    assert all(k in wide[0] for k in ("mixture.weight", "heartbeat", "ETA", "job", "fork of"))
    assert all(str(copy / r.run_id / "train.log") in "\n".join(wide) for r in rows if r.state == "done")


@pytest.mark.slow
def test_progress_bar_only_on_a_terminal_and_log_lines_never_share_its_line(tmp_path):
    import fcntl
    import os
    import pty
    import termios

    args = ["experiment=nano_test", "train.progress=true", "train.tokens=10240", "eval.every_tokens=5120"]
    redirected = train_cli(*args, f"train.out_dir={tmp_path / 'file'}")
    assert "step/s" not in redirected.stderr + redirected.stdout and "\r" not in redirected.stderr
    parent, child = pty.openpty()  # a terminal of 120 columns: the bar is drawn and the log lines print above it
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.train", *args, f"train.out_dir={tmp_path / 'tty'}"],
                            cwd=REPO, stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=120) == 0
    text = out.decode(errors="replace")
    assert "step/s" in text
    logged = [m.start() for m in re.finditer(r"\[\d{4}-\d\d-\d\d [\d:,]+\]\[", text)]
    assert logged and all(text[:i].split("\n")[-1].split("\r")[-1].strip() == "" for i in logged), text[-3000:]


def _as_running(run: Path, age_s: float, step: int = 20) -> None:
    """Rewrite a finished run's status.json as if it were running at ``step``, last heard of ``age_s`` ago."""
    st = rundir.read_status(run)
    updated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - age_s))
    rundir.atomic_write_json(run / rundir.STATUS, {**st, "status": "running", "step": step, "updated": updated,
                                                   "eta_s": 600.0, "tok_per_s": 1000.0})


@pytest.mark.slow
def test_status_flags_a_running_run_whose_heartbeat_is_stale(grid, tmp_path, capsys):
    sweep, _ = grid
    old, fresh = rundir.run_dirs(sweep)
    copy = tmp_path / "sweep"
    for run in (old, fresh):
        shutil.copytree(run, copy / run.name, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    _as_running(copy / old.name, age_s=rundir.STALE_AFTER_S + 60)
    _as_running(copy / fresh.name, age_s=5)
    assert cli.main(["status", str(copy)]) == 0
    out = capsys.readouterr().out
    line = {run: next(x for x in out.splitlines() if x.startswith(run.name)) for run in (old, fresh)}
    assert re.search(r"1\dm ago STALE", line[old]) and " 20/40 " in line[old]
    assert "STALE" not in line[fresh] and re.search(r" 0:09:5\d ", line[fresh])  # 600 s less the 5 s since
    assert "STALE: running, but no heartbeat for over 15 min" in out
    assert "sweep ETA 0:19:5" in out  # both runs' time left (the stale one's last estimate), one running


@pytest.mark.slow
def test_watch_refreshes_until_every_run_has_ended(grid, tmp_path):
    sweep, _ = grid
    run = rundir.run_dirs(sweep)[0]
    copy = tmp_path / "sweep"
    shutil.copytree(run, copy / run.name, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    done = (copy / run.name / rundir.STATUS).read_text()
    _as_running(copy / run.name, age_s=1)
    proc = subprocess.Popen([sys.executable, "-m", "midsweep.launch.cli", "status", str(copy), "--watch", "0.2"],
                            cwd=REPO, stdout=subprocess.PIPE, text=True)
    out = ""
    while "refreshing every" not in out:  # the first table is out (the CLI's start can take seconds on CI)
        line = proc.stdout.readline()
        assert line, f"status --watch ended before its first refresh:\n{out}"
        out += line
    (copy / run.name / rundir.STATUS).write_text(done)
    out += proc.communicate(timeout=60)[0]
    assert proc.returncode == 0
    assert out.count("step/total") >= 2 and "refreshing every 0.2s" in out
    assert out.rstrip().endswith("nothing left to run")


# ---- W&B, offline


def wandb_records(path: Path):
    """The records of a W&B transaction log (.wandb: a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, chunk = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST fragment
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def wandb_attempt(path: Path) -> dict:
    """Run id, group and history rows ({step: {key: value}}) of one offline W&B run file."""
    out = {"history": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["group"], out["name"] = r.run.run_id, r.run.run_group, r.run.display_name
        elif kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            assert row["_step"] not in out["history"], "a step logged twice within one attempt"
            out["history"][row["_step"]] = row
    return out


@pytest.mark.slow
def test_wandb_offline_run_is_the_midsweep_run_and_a_requeue_continues_it_without_repeats(nano, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    sweep = tmp_path / "sweep"
    nano = [*nano, "mixture.introduce_at=0.5"]
    first = subprocess.Popen([sys.executable, "-m", "midsweep.train", *nano, "logger=wandb"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(sweep.glob("*/checkpoints/step_00000020/COMPLETE")):
        time.sleep(0.05)
    first.send_signal(signal.SIGUSR2)  # as SLURM before a time limit: checkpoint, mark requeued, exit
    assert first.wait(timeout=300) == 75
    (run,) = rundir.run_dirs(sweep)
    stopped = rundir.read_status(run)
    assert stopped["status"] == "requeued"
    train_cli(*nano, "logger=wandb")
    attempts = [wandb_attempt(p) for p in sorted(run.glob("wandb/offline-run-*/run-*.wandb"))]
    assert len(attempts) == 2
    assert all(a["id"] == tracking.wandb_id(run, run.name) and a["group"] == sweep.name for a in attempts)
    assert attempts[0]["name"] == f"introduce_at=0.5 [{run.name[:6]}]"  # not the 12-character id
    before, after = (sorted(a["history"]) for a in attempts)
    assert before[-1] == stopped["step"] and after[0] > stopped["step"]  # no step sent twice
    assert before + after == sorted(set(STEPS) | set(EVALS))
    final = {r["domain"]: r["loss"] for r in rundir.read_jsonl(run / rundir.METRICS) if r["step"] == 40}
    last = attempts[1]["history"][40]
    assert {d: last[f"eval/{d}/loss"] for d in DOMAINS} == pytest.approx(final)
    assert last["tokens"] == 40 * 512 and last["train/loss"] > 0


def test_a_runs_readable_name_is_the_coordinates_its_command_line_sets():
    from midsweep.naming import run_label

    coords = {"mixture.kind": "introduce", "mixture.introduce_at": 0.3, "mixture.weight": 0.25, "train.seed": 1,
              "optim.weight_decay": 0.1}
    overrides = {"mixture": "introduce", "mixture.introduce_at": "0.3", "mixture.weight": "0.25", "train.out_dir": "x"}
    assert run_label(coords, overrides, "b18a28cacaea") == "introduce_at=0.3 kind=introduce weight=0.25 [b18a28]"
    assert run_label(coords, {"train.out_dir": "x"}, "b18a28cacaea") == "b18a28cacaea"


def test_the_wandb_run_is_the_run_directorys_so_the_same_config_elsewhere_or_anew_does_not_resume_it(tmp_path,
                                                                                                   monkeypatch):
    from accelerate import PartialState

    monkeypatch.setenv("WANDB_MODE", "offline")
    PartialState(cpu=True)  # accelerate's trackers log through its state, as in a run

    def wandb_run(out_dir: Path, resumed=None) -> str:
        run = RunConfig(logger=LoggerConfig(backend="wandb", project="p"))
        run.train.out_dir = str(out_dir)
        track = tracking.Tracking(run, RunRecorder(run.run_dir(), True), resumed, run.total_steps)
        wb_id = track.trackers[0][0].tracker.id
        track.close()
        return wb_id

    first = wandb_run(tmp_path / "a")
    assert first.startswith(RunConfig().run_id())
    assert wandb_run(tmp_path / "a", resumed=0) == first  # a requeue or a resume continues its W&B run
    assert wandb_run(tmp_path / "b") != first  # the same config in another train.out_dir
    shutil.rmtree(tmp_path / "a")
    assert wandb_run(tmp_path / "a") != first  # trained again after its run directory was deleted
