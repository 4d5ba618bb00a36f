"""Every invalid value fails before anything is loaded, naming its key and the fix."""
import pytest
from hydra import compose, initialize_config_dir

from midsweep.app import CONF_DIR
from midsweep.config import ConfigError, to_run_config

BAD = [
    ("mixture.weight=1.5", "mixture.weight", "(0, 1]"),
    ("mixture.weight=0", "mixture.weight", "mixture=none"),
    ("mixture.introduce_at=1.2", "mixture.introduce_at", "[0, 1)"),
    ("mixture.domain=poetry", "mixture", "unknown domain 'poetry'"),
    ("mixture.kind=sometimes", "mixture.kind", "use one of"),
    ("train.global_batch=30", "train.global_batch", "multiple of micro_batch"),
    ("train.precision=fp8", "train.precision", "auto, bf16 or fp32"),
    ("optim.lr=-1", "optim.lr", "positive"),
    ("optim.schedule=linear", "optim.schedule", "cosine, wsd, constant"),
    ("eval.every_tokens=1000", "eval.every_tokens", "multiple of 8192"),
    ("eval.domains=[poetry]", "eval.domains", "unknown domain"),
    ("posttrain=target posttrain.domain=poetry", "posttrain.domain", "unknown domain"),
    ("mixture.kind=upsample_end +mixture.upsample_weights.general=0.5", "mixture.upsample_weights", "sum to 1"),
    ("train.tokens=100", "train.tokens", "less than one step"),
    ("mixture.unit=tokens mixture.introduce_at=9000000", "mixture.introduce_at", "after the end of training"),
    ("model.size=huge", "model.size", "tiny"),
]


def compose_run(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_run_config(compose("config", overrides=overrides))


@pytest.mark.parametrize("override,key,fix", BAD)
def test_each_invalid_value_names_its_key_and_fix(override, key, fix):
    with pytest.raises(ConfigError) as err:
        compose_run(override.split())
    assert any(p.key == key for p in err.value.problems), str(err.value)
    assert fix in str(err.value)


def test_all_problems_are_listed_at_once():
    with pytest.raises(ConfigError) as err:
        compose_run(["mixture.weight=2", "optim.lr=0", "train.precision=fp16"])
    assert {"mixture.weight", "optim.lr", "train.precision"} <= {p.key for p in err.value.problems}


def test_wrong_types_and_unknown_keys_fail_at_composition():
    with pytest.raises(Exception) as err:
        compose_run(["mixture.weight=lots"])
    assert "mixture.weight" in str(err.value)
    with pytest.raises(Exception) as err:
        compose_run(["+train.epochs=3"])
    assert "epochs" in str(err.value)


def test_run_id_ignores_output_paths_and_cadence_but_not_science():
    base = compose_run([])
    assert compose_run(["train.out_dir=/elsewhere", "train.progress=false", "train.checkpoint_every=7"]).run_id() == base.run_id()
    assert compose_run(["mixture.weight=0.3"]).run_id() != base.run_id()
    assert compose_run(["train.seed=1"]).run_id() != base.run_id()
    assert base.run_dir().name == base.run_id() and len(base.run_id()) == 12
