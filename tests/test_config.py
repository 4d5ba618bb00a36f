"""Every invalid value fails before anything is loaded, naming its key and the fix."""
import dataclasses
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from runner import REPO
from midsweep.app import CONF_DIR
from midsweep.config import ConfigError, MixtureConfig, RunConfig, StageConfig, to_run_config
from midsweep.config.data import SourceConfig
from midsweep.config.mixture import KINDS
from midsweep.config.run import COMMON_COORDS, RUN_ID_VERSION

BAD = [
    ("mixture.weight=1.5", "mixture.weight", "(0, 1]"),
    ("mixture.weight=0", "mixture.weight", "mixture=none"),
    ("mixture.introduce_at=1.2", "mixture.introduce_at", "[0, 1)"),
    ("mixture.domain=poetry", "mixture", "unknown domain 'poetry'"),
    ("mixture.kind=sometimes", "mixture.kind", "use one of"),
    ("train.global_batch=30", "train.global_batch", "multiple of micro_batch"),
    ("train.precision=fp8", "train.precision", "auto, bf16 or fp32"),
    ("train.compile_mode=fastest", "train.compile_mode", "max-autotune-no-cudagraphs"),
    ("optim.lr=-1", "optim.lr", "positive"),
    ("optim.schedule=linear", "optim.schedule", "cosine, wsd, constant"),
    ("eval.every_tokens=1000", "eval.every_tokens", "multiple of 8192"),
    ("eval.domains=[poetry]", "eval.domains", "unknown domain"),
    ("posttrain=target posttrain.domain=poetry", "posttrain.domain", "unknown domain"),
    ("mixture.kind=upsample_end +mixture.upsample_weights.general=0.5", "mixture.upsample_weights", "sum to 1"),
    ("train.tokens=100", "train.tokens", "less than one step"),
    ("mixture.unit=tokens mixture.introduce_at=9000000", "mixture.introduce_at", "after the end of training"),
    ("model.size=huge", "model.size", "tiny"),
    ("data.domains.code.revision=v1.0", "data.domains.code.revision", "use kind=hf"),
    # a ramp or an exit cut off by the end of training: the run would record a weight it never trained with
    ("mixture.introduce_at=0.5 mixture.ramp=0.9", "mixture.ramp", "shorten the ramp"),
    ("mixture.introduce_at=0.5 mixture.ramp=0.3 mixture.until=0.7", "mixture.until", "later until"),
    ("mixture.unit=tokens mixture.introduce_at=0 mixture.until=99999999", "mixture.until", "later until"),
    ("train.seed=-1", "train.seed", "seed >= 0"),
    ("optim.eps=0", "optim.eps", "small positive value"),
    ("mixture.ramp=inf", "mixture.ramp", "finite"),
    ("mixture.ramp=nan", "mixture.ramp", "finite"),
    ("optim.lr=inf", "optim.lr", "finite"),
    ("train.init_from=/no/such/run", "train.init_from", "finished run directory"),
    # a boundary policy needs a boundary: no mixture change, or one at step 0, would train plain cosine silently
    ("mixture=none optim=rewarm", "optim.boundary", "optim.boundary=continue"),
    ("mixture.introduce_at=0 optim=cooldown", "optim.boundary", "optim.boundary=continue"),
    # a pretrained model must read the ids of its own tokenizer (known without loading anything)
    ("model=hf_pythia", "data.tokenizer", "data.tokenizer=EleutherAI/pythia-160m"),
    ("data.tokenizer=gpt2 model.backend=hf model.hf_name_or_path=EleutherAI/pythia-70m", "data.tokenizer",
     "data.tokenizer=EleutherAI/pythia-70m"),
    ("data.tokenizer=./my_tokenizer", "data.vocab_size", "len(AutoTokenizer"),
    ("data.tokenizer=gpt2 data.vocab_size=256", "data.vocab_size", "len(tokenizer)"),
    # continued pretraining from step 0 with random weights continues nothing (a rewarm grid without init_from)
    ("mixture=continued mixture.introduce_at=0", "train.init_from", "pretrained run directory"),
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


def test_a_domain_added_on_the_command_line_is_typed_and_checked(tmp_path):
    """``+data.domains.<new>={...}`` adds a domain (OmegaConf alone refuses a dict as a new typed entry); it is a
    SourceConfig like the shipped ones, a mixture can select it, and a wrong key or type names itself."""
    (tmp_path / "legal.jsonl").write_text('{"text": "The lessee shall return the premises."}\n')
    legal = f"+data.domains.legal={{kind: files, data_files: [{tmp_path}/legal.jsonl], heldout_documents: 20}}"
    run = compose_run([legal, "mixture.domain=legal"])
    source = run.data.domains["legal"]
    assert source.kind == "files" and source.heldout_documents == 20 and source.split == "train"  # defaults filled
    assert run.coords()["mixture.domain"] == "legal"
    for override, key in ((legal.replace("heldout_documents: 20", "max_tokens: many"), "data.domains.legal.max_tokens"),
                          (legal.replace("data_files", "data_file"), "data.domains.legal.data_file"),
                          (legal.replace("kind: files", "kind: ftp"), "data.domains.legal.kind")):
        with pytest.raises(ConfigError) as err:
            compose_run([override, "mixture.domain=legal"])
        assert [p.key for p in err.value.problems] == [key], str(err.value)
    with pytest.raises(Exception, match="max_token"):  # a typo in a shipped domain still fails at composition
        compose_run(["data.domains.math.max_token=5"])


def test_all_problems_are_listed_at_once():
    with pytest.raises(ConfigError) as err:
        compose_run(["mixture.weight=2", "optim.lr=0", "train.precision=fp16"])
    assert {"mixture.weight", "optim.lr", "train.precision"} <= {p.key for p in err.value.problems}


def test_an_unknown_key_does_not_hide_the_other_problems():
    with pytest.raises(ConfigError) as err:
        compose_run(["+train.epochs=3", "optim.lr=-1"])
    assert {"train.epochs", "optim.lr"} <= {p.key for p in err.value.problems}


def test_matching_tokenizers_and_vocab_sizes_are_accepted():
    assert compose_run(["model=hf_pythia", "data.tokenizer=EleutherAI/pythia-410m"]).plan()["flops"] > 0
    assert compose_run(["data.tokenizer=./my_tokenizer", "data.vocab_size=1000"]).plan()["flops"] > 0


def test_wrong_types_and_unknown_keys_fail_at_composition():
    with pytest.raises(Exception) as err:
        compose_run(["mixture.weight=lots"])
    assert "mixture.weight" in str(err.value)
    with pytest.raises(Exception) as err:
        compose_run(["+train.epochs=3"])
    assert "epochs" in str(err.value)


def test_run_id_ignores_output_paths_and_cadence_but_not_science():
    base = compose_run([])
    moved = compose_run(["train.out_dir=/elsewhere", "train.progress=false", "train.checkpoint_every=7"])
    assert moved.run_id() == base.run_id()
    assert compose_run(["mixture.weight=0.3"]).run_id() != base.run_id()
    assert compose_run(["train.seed=1"]).run_id() != base.run_id()
    assert base.run_dir().name == base.run_id() and len(base.run_id()) == 12


# ----------------------------------------------------------------------------------- run id and coordinates
# A value different from the default for every field a mixture kind may read.
CHANGED = {"unit": "tokens", "base_weights": {"general": 0.5, "math": 0.5}, "domain": "math", "introduce_at": 0.25,
           "weight": 0.4, "ramp": 0.1, "until": 0.9, "replay": 0.2, "upsample_fraction": 0.3,
           "upsample_weights": {"code": 1.0}, "stages": [StageConfig(start=0.3, weights={"code": 1.0})]}


def kind_run(kind: str, **mixture) -> RunConfig:
    run = RunConfig()
    run.mixture.kind = kind
    for key, value in mixture.items():
        setattr(run.mixture, key, value)
    return run


def test_changed_covers_every_mixture_field():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(MixtureConfig)} - {"kind"}


@pytest.mark.parametrize("kind", list(KINDS))
def test_run_id_and_coords_follow_exactly_the_fields_a_kind_reads(kind):
    base = kind_run(kind)
    reads = KINDS[kind].reads
    for name, value in CHANGED.items():
        changed = kind_run(kind, **{name: value})
        if name in reads:
            assert changed.run_id() != base.run_id(), f"{kind} reads {name}, but its run id ignores it"
            assert changed.coords() != base.coords()
        else:
            assert changed.run_id() == base.run_id(), f"{kind} does not read {name}, but its run id changed"
            assert changed.coords() == base.coords()
    coords = base.coords()
    mixture_keys = {k for k in coords if k.startswith("mixture.")} - {"mixture.kind", "mixture.introduce_tokens"}
    assert {k.split(".")[1] for k in mixture_keys} == set(reads) and coords["mixture.kind"] == kind
    rewarm = {"optim.rewarm_lr", "optim.rewarm_warmup"}  # read only with optim.boundary=rewarm
    assert set(COMMON_COORDS) - rewarm <= set(coords) and not rewarm & set(coords)
    assert ("mixture.introduce_tokens" in coords) == ("introduce_at" in reads)


def test_coords_are_flat_dotted_keys():
    run = kind_run("upsample_end", base_weights={"general": 0.8, "code": 0.2}, upsample_weights={"code": 1.0})
    run.optim.boundary, run.optim.rewarm_lr, run.train.init_from = "rewarm", 2e-3, "runs/base/abc"
    coords = run.coords()
    assert coords["mixture.base_weights.general"] == 0.8 and coords["mixture.upsample_weights.code"] == 1.0
    assert coords["optim.rewarm_lr"] == 2e-3 and coords["optim.rewarm_warmup"] == 0.01
    assert coords["train.init_from"] == "runs/base/abc" and "mixture.weight" not in coords
    assert all(not isinstance(v, (dict, list)) for v in coords.values())
    stages = kind_run("stages", stages=[StageConfig(start=0.3, weights={"code": 1.0}, name="mid")]).coords()
    assert stages["mixture.stages.0.start"] == 0.3 and stages["mixture.stages.0.weights.code"] == 1.0


def test_a_pinned_config_keeps_its_run_id():
    """Changing this id relaunches every grid: only on purpose, with RUN_ID_VERSION bumped (README)."""
    run = RunConfig()
    run.mixture.introduce_at, run.mixture.weight, run.train.seed = 0.3, 0.1, 1
    assert RUN_ID_VERSION == "midsweep-run-id-2"
    assert run.run_id() == "cbc146644de0"


def test_a_new_field_at_its_default_keeps_every_run_id():
    @dataclasses.dataclass
    class Upgraded(RunConfig):
        new_knob: int = 3

    run = Upgraded()
    run.mixture.introduce_at, run.mixture.weight, run.train.seed = 0.3, 0.1, 1
    assert run.run_id() == "cbc146644de0"
    run.new_knob = 4
    assert run.run_id() != "cbc146644de0"


def test_a_new_source_field_at_its_default_keeps_the_ids_of_runs_with_a_domain_of_their_own(monkeypatch):
    """A domain the defaults lack is compared field by field with SourceConfig's defaults, not counted whole."""
    from midsweep.config import run as run_module

    @dataclasses.dataclass
    class UpgradedSource(SourceConfig):
        new_knob: int = 3

    def with_legal(source_cls, **extra):
        run = RunConfig()
        run.mixture.domain = "legal"
        run.data.domains["legal"] = source_cls(kind="files", data_files=["legal.jsonl"], **extra)
        return run.run_id()

    before = with_legal(SourceConfig)
    assert before == "3aaff3a5b025"  # pinned, like cbc146644de0 above
    monkeypatch.setattr(run_module, "SourceConfig", UpgradedSource)
    run_module._source_defaults.cache_clear()
    try:
        assert with_legal(UpgradedSource) == before
        assert with_legal(UpgradedSource, new_knob=4) != before
    finally:
        run_module._source_defaults.cache_clear()


def test_removing_a_default_entry_changes_the_run_id():
    run = RunConfig()
    del run.data.domains["math"]
    assert run.run_id() != RunConfig().run_id()


@pytest.mark.slow
def test_plan_imports_neither_torch_nor_a_tokenizer():
    """Previewing a grid is config arithmetic: composing, validating and planning every point loads no torch."""
    code = """
import sys
from hydra import compose, initialize_config_dir
from midsweep.app import CONF_DIR
from midsweep.config import to_run_config
from midsweep.launch.preview import Throughput, preview
from midsweep.launch.sweep import preflight
grid = [[f"mixture.introduce_at={t}", f"mixture.weight={w}", "data=cluster", "model=hf_pythia"]
        for t in (0.1, 0.5) for w in (0.1, 0.3)]
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    points = preflight(grid, lambda o: compose("config", overrides=o), to_run_config)
    print(preview(points, Throughput()))
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "tokenizers")))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "4 job(s) to submit" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"
