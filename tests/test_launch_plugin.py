"""The midsweep launchers on a small stand-in app: pre-flight validation, skipping finished runs,
growing a grid, preview, failures that do not sink other points, fast composition == Hydra's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

FAKE_APP = '''
import hashlib, json
from pathlib import Path
import hydra
from omegaconf import OmegaConf
from midsweep.config.errors import ConfigError, Problem


class Run:
    def __init__(self, d):
        self.d = d
    def run_id(self):
        return hashlib.sha256(json.dumps([self.d["w"], self.d["t"]]).encode()).hexdigest()[:12]
    def run_dir(self):
        return Path(self.d["out_dir"]) / self.run_id()
    def plan(self):
        return {"steps": 10, "tokens": 1000 * (1 + self.d["t"]), "flops": 6e12, "params": 100}


def to_run_config(cfg):
    d = OmegaConf.to_container(cfg, resolve=True)
    problems = []
    if not 0 <= d["w"] <= 1:
        problems.append(Problem("w", f"weight {d['w']} is outside [0, 1]", "use a weight in [0, 1]"))
    if d["t"] < 0:
        problems.append(Problem("t", f"time {d['t']} is negative", "use t >= 0"))
    if problems:
        raise ConfigError(problems)
    return Run(d)


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg):
    run = to_run_config(cfg)
    with open(Path(cfg.out_dir) / "calls.txt", "a") as f:
        f.write(run.run_id() + "\\n")
    if cfg.w == cfg.fail_w:
        raise RuntimeError("boom")
    if cfg.w == cfg.slow_w:
        import time
        time.sleep(60)
    d = run.run_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "summary.json").write_text(json.dumps({"final": {"general": cfg.w + cfg.t}}))
    (d / "status.json").write_text(json.dumps({"status": "done", "step": 10}))
    return cfg.w


if __name__ == "__main__":
    main()
'''

CONFIG = '''
defaults:
  - model: small
  - override hydra/launcher: midsweep_local
  - override hydra/sweeper: midsweep
  - _self_
w: 0.1
t: 0
fail_w: -1.0
slow_w: -1.0
out_dir: out
hydra:
  launcher:
    run_config: fake_app.to_run_config
  sweep:
    dir: multirun
'''


@pytest.fixture
def app(tmp_path: Path) -> Path:
    (tmp_path / "fake_app.py").write_text(FAKE_APP)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "config.yaml").write_text(CONFIG)
    (tmp_path / "conf" / "model" / "small.yaml").write_text("width: 8\n")
    (tmp_path / "conf" / "model" / "big.yaml").write_text("width: 64\n")
    (tmp_path / "out").mkdir()
    return tmp_path


def multirun(app: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "fake_app.py", "-m", *overrides], cwd=app, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def calls(app: Path) -> list[str]:
    f = app / "out" / "calls.txt"
    return f.read_text().split() if f.exists() else []


@pytest.mark.slow
def test_relaunch_skips_done_runs_and_a_grown_grid_runs_only_new_points(app):
    first = multirun(app, "w=0.1,0.2", "t=0,1")
    assert first.returncode == 0, first.stderr
    assert len(calls(app)) == 4
    run_dirs = sorted(p.name for p in (app / "out").iterdir() if p.is_dir())
    again = multirun(app, "w=0.1,0.2", "t=0,1")
    assert again.returncode == 0, again.stderr
    assert len(calls(app)) == 4, "finished runs were launched again"
    assert "done, skipped: final general=1.1" in again.stderr + again.stdout
    grown = multirun(app, "w=0.1,0.2,0.3", "t=0,1")
    assert grown.returncode == 0, grown.stderr
    assert len(calls(app)) == 6
    assert set(run_dirs) <= {p.name for p in (app / "out").iterdir() if p.is_dir()}
    manifest = (app / "out" / "sweep_manifest.json").read_text()
    assert all(r in manifest for r in run_dirs)


@pytest.mark.slow
def test_one_invalid_point_submits_nothing_and_every_error_is_listed(app):
    out = multirun(app, "w=0.5,2,3", "t=-1,0")
    assert out.returncode != 0
    text = out.stderr + out.stdout
    assert "5 of 6 grid point(s) are invalid; nothing was submitted" in text
    assert "w=2 t=-1" in text and "w=3 t=0" in text and "w=0.5 t=-1" in text
    assert "weight 2 is outside [0, 1]" in text and "time -1 is negative" in text
    assert calls(app) == []


@pytest.mark.slow
def test_preview_prints_the_plan_and_runs_nothing(app):
    assert multirun(app, "w=0.1", "t=0").returncode == 0
    out = multirun(app, "w=0.1,0.2", "t=0,1", "hydra.launcher.preview=true")
    assert out.returncode == 0, out.stderr
    assert "4 point(s); 3 job(s) to submit" in out.stdout and "1 skipped" in out.stdout
    assert "GPU-hours" in out.stdout and "done" in out.stdout
    assert len(calls(app)) == 1


@pytest.mark.slow
def test_a_failing_point_does_not_stop_the_others(app):
    out = multirun(app, "w=0.1,0.2,0.3", "fail_w=0.2")
    assert out.returncode != 0  # Hydra reports the failure after every point ran
    assert len(calls(app)) == 3
    done = [p for p in (app / "out").iterdir() if (p / "status.json").exists()]
    assert len(done) == 2


def test_fast_composition_equals_hydra_composition(app):
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from midsweep.launch.compose import PointComposer

    sys.path.insert(0, str(app))
    try:
        loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(app / "conf")))
        master = loader.load_configuration("config", overrides=[], run_mode=RunMode.MULTIRUN)
        composer = PointComposer(loader, master)
        for overrides in (["w=0.3", "t=2"], ["model=big", "w=0.7"], ["+extra=1", "t=3"], ["model.width=5"]):
            want = loader.load_sweep_config(master, overrides)
            with open_dict(want):
                del want["hydra"]
            assert OmegaConf.to_container(composer.task_config(overrides)) == OmegaConf.to_container(want)
        assert len(composer._bases) == 3  # value overrides share one composition
    finally:
        sys.path.remove(str(app))


@pytest.mark.slow
@pytest.mark.parametrize("override", ["hydra.launcher.partition='debug\nhostile'",
                                      "+hydra.launcher.additional_parameters.mail_user='a@b\r#SBATCH --x=1'"])
def test_a_control_character_in_a_launcher_field_is_refused_before_the_preview(app, override):
    out = multirun(app, "w=0.1", "hydra/launcher=midsweep_slurm", "hydra.launcher.preview=true", override)
    text = out.stderr + out.stdout
    assert out.returncode != 0 and "Traceback" not in text
    key = override.split("=")[0].lstrip("+")
    assert f"{key}: " in text and "control character" in text and "Fix:" in text
    assert "job(s) to submit" not in text and calls(app) == []


@pytest.mark.slow
def test_ctrl_c_outside_a_run_stops_the_local_sweep_in_one_line(app):
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "fake_app.py", "-m", "w=0.1,0.2,0.3", "slow_w=0.2"], cwd=app, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(calls(app)) < 2:  # the second point is sleeping (a stand-in app: no handler)
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == ("midsweep: sweep stopped by Ctrl-C; rerunning the same command skips the "
                                            "finished runs and resumes the others")
    assert len(calls(app)) == 2  # the third point never started
