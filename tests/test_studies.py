"""The shipped studies: every sweep x profile previews offline (small and paper through the SLURM GPU profile)
with each run's tokens per parameter, the token cache's disk and the GPU-hours; the small profile stays in the
papers' regime within its budget; controls are in the grid and shared between studies; epochs are reported;
a missing tokenizer or dataset at run time is one line naming the fix."""
import re

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from runner import REPO, train_cli
from midsweep.config import to_run_config

STUDIES = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))
PROFILES = ("tiny", "small", "paper")
SMALL_TOKENS_PER_PARAM = 300  # the midtraining paper's 410m ratio: the least of the regime the effect lives in
SMALL_WINDOW_GPU_HOURS = 150  # plasticity_window at profile=small, with prefix sharing (A100 at 35% MFU)
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


def gpu_hours(log: str, shared: bool) -> float:
    line = "with prefix sharing" if shared else "estimated"
    return float(re.search(line + r"[^:]*: .*?, ([0-9.e+-]+) GPU-hours", log).group(1))


def tokens_per_param(log: str) -> list[float]:
    """The tok/param column of the runs to submit."""
    return [float(m) for m in re.findall(r"^\s*\d+\s+[0-9a-f]{12}\s+new\s+\S+\s+(\S+)\s", log, re.MULTILINE)]


@pytest.mark.slow
@pytest.mark.parametrize("study", STUDIES)
def test_every_study_previews_offline_at_every_profile(study, tmp_path):
    assert {p.stem for p in (REPO / "conf" / "study" / study).glob("*.yaml")} == set(PROFILES)
    logs = {profile: preview(f"sweep={study}", f"profile={profile}", f"train.out_dir={tmp_path / profile}",
                             *(["hydra/launcher=slurm_gpu"] if profile != "tiny" else []),
                             # one SFT seed and LR: the paper's 5 x 3 only multiply the points planned (minutes)
                             *(["posttrain.seed=0", "posttrain.lr=1e-4"] if profile == "paper" else []))
            for profile in PROFILES}
    for profile, log in logs.items():
        assert "Traceback" not in log and "nothing was submitted" in log and "epochs of each domain" in log, log
        assert "token cache: " in log and " GB on disk" in log and tokens_per_param(log), log[-3000:]
        assert profile == "tiny" or "with midsweep_slurm" in log
    assert min(tokens_per_param(logs["small"])) >= SMALL_TOKENS_PER_PARAM  # in the papers' regime
    assert gpu_hours(logs["paper"], shared=False) > gpu_hours(logs["small"], shared=False) > 1
    assert not list(tmp_path.glob("*/*/status.json"))  # nothing ran
    if study == "plasticity_window":  # the small profile within its budget, thanks to prefix sharing
        small = logs["small"]
        assert "84 job(s) to submit" in small  # both domains, two seeds, the controls
        assert gpu_hours(small, shared=True) <= SMALL_WINDOW_GPU_HOURS < gpu_hours(small, shared=False)


@pytest.mark.slow
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
    for profile in PROFILES:
        window = run_config("sweep=plasticity_window", f"profile={profile}", "mixture=none")
        versus = run_config("sweep=midtrain_vs_continued", f"profile={profile}", "mixture=none",
                            "mixture.domain=math")
        assert window.run_dir() == versus.run_dir()  # same id in the profile's one results directory
        assert window.posttrain.enabled and window.coords()["mixture.kind"] == "none"


def test_rewarm_grid_has_one_no_rewarm_run_per_checkpoint_and_one_scratch_run():
    # the re-warm LR and warmup change together (half the points to compose): what a kind ignores, it ignores both
    grid = [("sweep=rewarm", f"rewarm_arm={arm}", f"mixture.introduce_at={at}", f"optim.rewarm_lr={lr}",
             f"optim.rewarm_warmup={warmup}")
            for arm in ("rewarm", "no_rewarm", "scratch") for at in (0.5, 0.75) for lr, warmup in ((1e-3, 0.0),
                                                                                                  (1e-2, 0.05))]
    runs = {}
    for point, run in zip(grid, run_configs([list(p) for p in grid])):
        runs.setdefault(point[1], set()).add(run.run_id())
    assert {arm: len(ids) for arm, ids in runs.items()} == {"rewarm_arm=rewarm": 4, "rewarm_arm=no_rewarm": 2,
                                                           "rewarm_arm=scratch": 1}


@pytest.mark.parametrize("profile", ["small", "paper"])
def test_small_and_paper_profiles_train_with_the_midtraining_papers_optimizer(profile):
    run = run_config("sweep=plasticity_window", f"profile={profile}")
    o = run.optim
    assert (o.beta1, o.beta2, o.weight_decay, o.grad_clip, o.warmup, o.lr, o.schedule, o.decay_all) == \
        (0.9, 0.95, 0.1, 1.0, 0.1, 3e-4, "cosine", True)
    assert o.lr * o.min_lr_ratio == pytest.approx(1e-6)
    assert run.data.tokenizer.startswith("EleutherAI/pythia") and run.data.resolved_vocab_size() == 50277
    assert {s.kind for s in run.data.domains.values()} == {"hf"}


def test_paper_profile_is_the_papers_setting():
    run = run_config("sweep=plasticity_window", "profile=paper")
    assert (run.train.global_batch, run.model.seq_len, run.main_steps) == (1024, 2048, 61035)  # 128B tokens
    assert run.optim.horizon_tokens() == 2 * run.train.tokens  # the paper's fixed cosine outlasts the run
    assert run.data.domains["general"].name == "allenai/c4"
    p = run.posttrain  # the paper's SFT: 4 epochs of 64 padded examples with a fresh AdamW
    assert (p.epochs, p.tokens, p.global_batch, p.optimizer, p.packing) == (4, None, 64, "fresh", False)
    axes = OmegaConf.load(REPO / "conf/study/plasticity_window/paper.yaml").hydra.sweeper.params
    assert axes["posttrain.seed"] == "0,1,2,3,4" and len(axes["posttrain.lr"].split(",")) > 1
    # the plasticity curve's axis, which the study file gives as a command-line addition: SFT every 10k steps
    (curve,) = re.findall(r"posttrain\.after=([\d.,]+)", (REPO / "conf/study/plasticity_window/paper.yaml").read_text())
    after = [float(a) for a in curve.split(",")]
    assert [round(a * run.main_steps) for a in after] == [10_000, 20_000, 30_000, 40_000, 50_000, 61_035]
    reuse = run_config("sweep=model_reuse", "profile=paper", "mixture.introduce_at=8589934592")
    assert (reuse.model.size, reuse.model.arch) == ("1b", "llama")
    rewarm = run_config("sweep=rewarm", "profile=paper")
    assert rewarm.model.hf_name_or_path == "EleutherAI/pythia-410m"  # continued from the released checkpoint:
    assert (rewarm.mixture.kind, rewarm.mixture.domain, rewarm.to_step(rewarm.mixture.introduce_at)) == \
        ("continued", "slimpajama", 0)  # all new data from step 0, no random start to refuse


@pytest.mark.slow
def test_preview_warns_when_a_run_repeats_a_domain(tmp_path):
    log = preview("experiment=nano_test", "posttrain=target", "posttrain.tokens=8192000", f"train.out_dir={tmp_path}")
    assert re.search(r"WARNING: 1 \(point, domain\) pair\(s\) repeat a domain more than 4 times: #0 target", log)


@pytest.mark.slow
@pytest.mark.parametrize("missing, message", [
    ("tokenizer", "cannot load tokenizer 'EleutherAI/pythia-160m'"),
    ("dataset", "cannot load HF dataset"),
])
def test_a_missing_tokenizer_or_dataset_is_one_line_naming_the_fix(missing, message, tmp_path):
    import os

    extra = ["data.tokenizer=byte", "data.vocab_size=null"] if missing == "dataset" else []
    proc = train_cli("sweep=plasticity_window", "profile=small", "train.device=cpu", *extra,
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


@pytest.mark.slow
def test_the_target_loss_is_the_loss_on_the_domain_each_run_was_post_trained_on(tmp_path):
    """plasticity_window at small and paper post-trains code runs on target_code and math runs on target."""
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


def test_the_token_cache_plan_counts_two_bytes_a_token_a_mask_byte_and_splits_what_exceeds_a_day(tmp_path):
    from midsweep.launch.cache_plan import domain_bytes, parts

    run = run_config("sweep=plasticity_window", "profile=paper", f"data.cache_dir={tmp_path}")  # nothing prepared
    disk = domain_bytes(run)
    assert disk["general"] == 2 * 130_000_000_000  # 130B tokens of a 50k vocabulary: 260 GB
    assert disk["target_code"] == 3 * run.data.domains["target_code"].max_tokens  # + a byte of loss mask
    assert disk["target"] is None  # GSM8K has no cap: unknown until prepared
    day = 2.5e5 * 86400
    assert (parts(130_000_000_000, 8), parts(130_000_000_000, 4)) == (1, 2)  # 8 cores tokenize it in a day
    assert (parts(int(day) + 1, 1), parts(None, 1)) == (2, 1)
