"""Every shipped config composes and validates, every sweep previews, every mixture kind runs tiny."""
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner import REPO, train_cli
from midsweep.app import CONF_DIR
from midsweep.config import to_run_config

GROUPS = ["model", "data", "mixture", "optim", "train", "eval", "posttrain", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]
SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_validates(group, option):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = to_run_config(compose("config", overrides=[f"{group}={option}"]))
    assert run.run_id()


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_sweep_previews_a_valid_grid(sweep, tmp_path):
    extra = [f"train.init_from={tmp_path}"] if sweep == "rewarm" else []
    proc = train_cli("-m", f"sweep={sweep}", f"train.out_dir={tmp_path}", "hydra.launcher.preview=true", *extra)
    log = proc.stdout + proc.stderr
    assert "preview" in log.lower() and "job" in log
    assert not [p for p in tmp_path.iterdir() if (p / "status.json").exists()]  # nothing ran


def test_every_mixture_kind_runs_tiny(tmp_path):
    train_cli("-m", "experiment=nano_test", "mixture=none,introduce,continued,upsample_end,stages",
              "train.tokens=4096", "eval.every_tokens=2048", f"train.out_dir={tmp_path}")
    summaries = [json.loads(p.read_text()) for p in tmp_path.glob("*/summary.json")]
    assert sorted(s["coords"]["mixture.kind"] for s in summaries) == ["continued", "introduce", "none", "stages",
                                                                      "upsample_end"]
    assert all(s["status"] == "done" for s in summaries)
    by_kind = {s["coords"]["mixture.kind"]: s for s in summaries}
    assert set(by_kind["none"]["tokens_by_domain"]) == {"general"}
    assert set(by_kind["stages"]["tokens_by_domain"]) == {"general", "code", "math"}


def test_one_invalid_point_runs_nothing_and_every_error_is_listed(tmp_path):
    proc = train_cli("-m", "experiment=nano_test", "mixture.weight=0.2,1.5", "optim.lr=1e-3,-1",
                     f"train.out_dir={tmp_path}", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "3 of 4 grid point(s) are invalid" in log
    assert log.count("mixture.weight: weight 1.5 is outside (0, 1]") == 2 and log.count("optim.lr: lr -1") == 2
    assert not list(Path(tmp_path).glob("*/status.json"))
