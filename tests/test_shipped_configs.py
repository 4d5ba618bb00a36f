"""Every shipped config composes and validates, every mixture kind runs tiny (every sweep previews at every
profile: test_studies.py)."""
import copy
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from runner import REPO, train_cli
from midsweep.app import CONF_DIR
from midsweep.config import to_run_config

GROUPS = ["model", "data", "mixture", "optim", "train", "eval", "posttrain", "logger", "experiment"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF_DIR / g).glob("*.yaml"))]


# options that need a matching key elsewhere (a pretrained model is trained with its own tokenizer)
NEEDS = {("model", "hf_pythia"): ["data.tokenizer=EleutherAI/pythia-160m"]}


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes_and_validates(group, option):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        run = to_run_config(compose("config", overrides=[f"{group}={option}", *NEEDS.get((group, option), [])]))
    assert run.run_id()


def _package(path: Path) -> str:
    """The package a shipped YAML file is merged at: ``_global_`` (experiments, sweeps) or its group."""
    first = path.read_text().splitlines()[:1]
    return "_global_" if first == ["# @package _global_"] else path.parent.name


def _content(path: Path) -> dict:
    """A shipped YAML's config keys, rooted at RunConfig (``defaults`` and ``hydra`` left out)."""
    from omegaconf import OmegaConf

    content = OmegaConf.to_container(OmegaConf.load(path)) or {}
    content = {k: v for k, v in content.items() if k not in ("defaults", "hydra")}
    package = _package(path)
    return {package: content} if package != "_global_" and path.name != "config.yaml" and content else content


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        out.update(_leaves(value, f"{prefix}{key}.") if isinstance(value, dict) and value
                   else {f"{prefix}{key}": value})
    return out


YAMLS = sorted([p for p in CONF_DIR.rglob("*.yaml") if "hydra" not in p.relative_to(CONF_DIR).parts
                and p.parent.name != "sweep"] + list((REPO / "sweeps").glob("*.yaml")))


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(REPO)) for p in YAMLS])
def test_shipped_yaml_states_only_what_differs_from_the_dataclass_defaults(path):
    """Defaults live in the dataclasses: a key whose removal leaves the config merged onto the defaults unchanged
    restates a default. A group option is merged onto the defaults, so that is exact. An experiment or study
    file (``_global_``) builds on other files, and may set a key back to its default: it is flagged only if no
    shipped file sets that key to anything else."""
    from omegaconf import OmegaConf

    from midsweep.config import RunConfig

    content = _content(path)
    schema = OmegaConf.structured(RunConfig)

    def merged(tree: dict) -> dict:
        return OmegaConf.to_container(OmegaConf.merge(schema, tree))

    def without(tree: dict, dotted: str) -> dict:
        tree = copy.deepcopy(tree)
        *parents, leaf = dotted.split(".")
        node = tree
        for key in parents:
            node = node[key]
        del node[leaf]
        return tree

    full = merged(content)
    restated = [k for k in _leaves(content) if merged(without(content, k)) == full]
    if _package(path) == "_global_":
        default = _leaves(content)
        elsewhere = [_leaves(_content(other)) for other in YAMLS if other != path]
        restated = [k for k in restated if all(k not in other or other[k] == default[k] for other in elsewhere)]
    assert not restated, f"{path.relative_to(REPO)} restates dataclass defaults: {restated}; delete them"


@pytest.mark.slow
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


@pytest.mark.slow
def test_one_invalid_point_runs_nothing_and_every_error_is_listed(tmp_path):
    proc = train_cli("-m", "experiment=nano_test", "mixture.weight=0.2,1.5", "optim.lr=1e-3,-1",
                     f"train.out_dir={tmp_path}", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "3 of 4 grid point(s) are invalid" in log
    assert log.count("mixture.weight: weight 1.5 is outside (0, 1]") == 2 and log.count("optim.lr: lr -1") == 2
    assert not list(Path(tmp_path).glob("*/status.json"))


@pytest.mark.slow
def test_invalid_grid_points_are_listed_without_a_traceback_and_a_typo_hides_nothing(tmp_path):
    proc = train_cli("-m", "experiment=nano_test", "mixture.wieght=0.2,0.4", "optim.lr=-1", "train.seed=-1",
                     f"train.out_dir={tmp_path}", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in log, log
    assert "2 of 2 grid point(s) are invalid" in log
    assert log.count("mixture.wieght: no such key") == 2
    assert log.count("optim.lr: lr -1") == 2 and log.count("train.seed: seed -1 is negative") == 2
    assert not list(Path(tmp_path).glob("*/status.json"))


@pytest.mark.slow
def test_a_pretrained_model_with_the_byte_tokenizer_fails_preview(tmp_path):
    proc = train_cli("-m", "model=hf_pythia", "mixture.weight=0.1,0.2", "hydra.launcher.preview=true",
                     f"train.out_dir={tmp_path}", check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in log
    assert log.count("data.tokenizer: tokenizer 'byte' does not match") == 2 and "GPU-hours" not in log


def _hub_sources(tree, where=""):
    """(where, source) for every hub dataset source (``kind: hf``) in a YAML tree."""
    if isinstance(tree, dict):
        if tree.get("kind") == "hf":
            yield where, tree
        for key, value in tree.items():
            yield from _hub_sources(value, f"{where}.{key}" if where else str(key))


def test_every_shipped_hub_dataset_is_pinned_to_a_commit():
    """A study run twice reads the same data: every hub dataset a shipped config names is pinned to a full commit
    sha (a branch or tag moves), the revision docs/data.md lists."""
    import re

    from omegaconf import OmegaConf

    docs = (REPO / "docs" / "data.md").read_text()
    found = [(path.relative_to(REPO), where, src) for path in CONF_DIR.rglob("*.yaml")
             for where, src in _hub_sources(OmegaConf.to_container(OmegaConf.load(path)))]
    assert len(found) >= 8
    for path, where, src in found:
        assert re.fullmatch(r"[0-9a-f]{40}", str(src.get("revision"))), f"{path}: {where} ({src['name']}) is not pinned"
        assert f"`{src['name']}`" in docs and f"`{src['revision'][:12]}`" in docs, f"{src['name']} not in docs/data.md"
