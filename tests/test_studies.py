"""The shipped studies: every sweep x profile previews offline (the cluster one through the SLURM GPU profile)
within its stated GPU-hour budget; controls are in the grid and shared between studies; epochs are
reported; a missing tokenizer or dataset at run time is one line naming the fix."""
import re

import pytest
from hydra import compose, initialize_config_module

from runner import REPO, train_cli
from midsweep.config import to_run_config

STUDIES = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
BUDGET_GPU_HOURS = 250  # README: every cluster study fits this (A100 at 35% MFU, without prefix sharing)
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def preview(*overrides: str) -> str:
    import os

    proc = train_cli("-m", *overrides, "hydra.launcher.preview=true", env={**os.environ, **OFFLINE})
    return proc.stdout + proc.stderr


def run_config(*overrides: str):
    return run_configs([list(overrides)])[0]


def run_configs(points: list[list[str]]) -> list:
    with initialize_config_module(config_module="midsweep_conf", version_base="1.3"):
        return [to_run_config(compose("config", overrides=o)) for o in points]


@pytest.mark.parametrize("study", STUDIES)
def test_every_study_previews_offline_at_both_scales(study, tmp_path):
    assert {p.stem for p in (REPO / "conf" / "study" / study).glob("*.yaml")} == {"tiny", "cluster"}
    tiny = preview(f"sweep={study}", f"train.out_dir={tmp_path / 'tiny'}")
    cluster = preview(f"sweep={study}", "profile=cluster", "hydra/launcher=slurm_gpu",
                      f"train.out_dir={tmp_path / 'cluster'}")
    for log in (tiny, cluster):
        assert "Traceback" not in log and "nothing was submitted" in log and "epochs of each domain" in log
    hours = float(re.search(r"estimated[^:]*: .*?, ([0-9.e+-]+) GPU-hours", cluster).group(1))
    assert 1 < hours <= BUDGET_GPU_HOURS, cluster[-2000:]
    assert "with midsweep_slurm" in cluster
    assert not list(tmp_path.glob("*/*/status.json"))  # nothing ran


def test_plasticity_grid_holds_its_controls_and_collapses_what_a_kind_ignores(tmp_path):
    log = preview("sweep=plasticity_window", f"train.out_dir={tmp_path}")
    # 3 kinds x 4 times x 4 weights: 16 introductions, a continued control per time, one baseline
    assert "48 point(s); 21 job(s) to submit" in log
    kinds = re.findall(r"^\s*\d+\s+[0-9a-f]{12}\s+new\s.*?\bmixture=(\w+)", log, re.MULTILINE)
    assert sorted(set(kinds)) == ["continued", "introduce", "none"]
    assert [kinds.count(k) for k in ("introduce", "continued", "none")] == [16, 4, 1]


@pytest.mark.slow
def test_preview_counts_duplicate_points_in_one_line_and_lists_them_on_request(tmp_path):
    short = preview("sweep=plasticity_window", f"train.out_dir={tmp_path}")
    # every weight of the baseline and of each continued control is the same run: 27 of the 48 points
    assert "27 duplicate point(s) not listed: the same run as one of 5 earlier point(s) (#16, " in short
    assert "same run as point #" not in short
    full = preview("sweep=plasticity_window", f"train.out_dir={tmp_path}", "hydra.launcher.list_duplicates=true")
    assert len(re.findall(r"^\s*\d+\s+[0-9a-f]{12}\s+duplicate\s", full, re.MULTILINE)) == 27
    # a table row and a log line each, for the summary line in the log and in the preview
    assert len(full.splitlines()) - len(short.splitlines()) == 2 * 27 - 2


def test_a_control_shared_by_two_studies_is_one_run():
    for profile in ("tiny", "cluster"):
        window = run_config("sweep=plasticity_window", f"profile={profile}", "mixture=none")
        versus = run_config("sweep=midtrain_vs_continued", f"profile={profile}", "mixture=none",
                            "mixture.domain=math")
        assert window.run_dir() == versus.run_dir()  # same id in the profile's one results directory
        assert window.posttrain.enabled and window.coords()["mixture.kind"] == "none"


def test_rewarm_grid_has_one_no_rewarm_run_per_checkpoint_and_one_scratch_run():
    grid = [("sweep=rewarm", f"rewarm_arm={arm}", f"mixture.introduce_at={at}", f"optim.rewarm_lr={lr}",
             f"optim.rewarm_warmup={warmup}")
            for arm in ("rewarm", "no_rewarm", "scratch") for at in (0.5, 0.75) for lr in (1e-3, 1e-2)
            for warmup in (0.0, 0.05)]
    runs = {}
    for point, run in zip(grid, run_configs([list(p) for p in grid])):
        runs.setdefault(point[1], set()).add(run.run_id())
    assert {arm: len(ids) for arm, ids in runs.items()} == {"rewarm_arm=rewarm": 8, "rewarm_arm=no_rewarm": 2,
                                                           "rewarm_arm=scratch": 1}


def test_cluster_profile_is_the_papers_small_scale():
    run = run_config("sweep=plasticity_window", "profile=cluster")
    o = run.optim
    assert (o.beta1, o.beta2, o.weight_decay, o.warmup, o.lr, o.schedule) == (0.9, 0.95, 0.1, 0.1, 3e-4, "cosine")
    assert run.model.size == "160m" and run.data.tokenizer.startswith("EleutherAI/pythia")
    assert run.data.resolved_vocab_size() == 50277  # known without a download
    assert run_config("sweep=rewarm", "profile=cluster").model.size == "410m"
    assert {s.kind for s in run.data.domains.values()} == {"hf"}


def test_preview_warns_when_a_run_repeats_a_domain(tmp_path):
    log = preview("experiment=nano_test", "posttrain=target", "posttrain.tokens=8192000", f"train.out_dir={tmp_path}")
    assert re.search(r"WARNING: 1 \(point, domain\) pair\(s\) repeat a domain more than 4 times: #0 target", log)


@pytest.mark.parametrize("missing, message", [
    ("tokenizer", "cannot load tokenizer 'EleutherAI/pythia-160m'"),
    ("dataset", "cannot load HF dataset"),
])
def test_a_missing_tokenizer_or_dataset_is_one_line_naming_the_fix(missing, message, tmp_path):
    import os

    extra = ["data.tokenizer=byte", "data.vocab_size=null"] if missing == "dataset" else []
    proc = train_cli("sweep=plasticity_window", "profile=cluster", "train.device=cpu", *extra,
                     f"train.out_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}", check=False,
                     env={**os.environ, **OFFLINE})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.startswith("midsweep-train:")]
    assert message in line and "Fix:" in line


def test_the_configuration_reference_is_generated_from_the_dataclasses():
    from midsweep.config_reference import DOC, main, render

    text = render()
    assert "| `data.domains.<name>.max_tokens` |" in text and "| `mixture.weight` | `float` | `0.2` |" in text
    assert main(["--check"]) == 0, f"{DOC} is out of date: run python -m midsweep.config_reference"


def test_the_target_loss_is_the_loss_on_the_domain_each_run_was_post_trained_on(tmp_path):
    """plasticity_window on the cluster post-trains code runs on target_code and math runs on target."""
    import pandas as pd

    from midsweep_analysis.derived import add_metrics
    from midsweep_analysis.load import load_sweeps

    conf = tmp_path / "my_conf" / "data"
    conf.mkdir(parents=True)  # a domain added the README's way: a data option of one's own
    (conf / "with_code_target.yaml").write_text(
        "domains:\n  target_code: {kind: builtin, name: target_code, prompt_field: prompt, response_field: response,"
        " heldout_documents: 50}\n")
    common = ["--config-dir", str(conf.parent), "data=with_code_target", "experiment=nano_test", "posttrain=target",
              "posttrain.tokens=2048", "train.tokens=4096", "eval.every_tokens=2048",
              f"train.out_dir={tmp_path / 'runs'}"]
    train_cli(*common, "mixture.domain=math", "posttrain.domain=target")
    train_cli(*common, "mixture.domain=code", "posttrain.domain=target_code")
    runs = add_metrics(load_sweeps([tmp_path / "runs"]).runs).set_index("mixture.domain")
    assert runs.loc["code", "target_loss"] == pytest.approx(runs.loc["code", "final.target_code"])
    assert runs.loc["math", "target_loss"] == pytest.approx(runs.loc["math", "final.target"])
    assert not pd.isna(runs.loc["code", "final.target"])  # every domain is evaluated: the right one is picked
