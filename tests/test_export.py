"""midsweep export: a trained run's checkpoints load in transformers and compute the built-in model's logits;
the weight map between the two is one table, exact in both directions."""
import json
import shutil

import pytest
import torch

from runner import flip_bytes, train_cli
from midsweep import rundir
from midsweep.config.model import ModelConfig
from midsweep.launch.cli import main as midsweep
from midsweep.model import build_model
from midsweep.model.hf_map import from_hf, to_hf

ARCHS = ["neox", "llama"]


@pytest.mark.parametrize("arch", ARCHS)
def test_weight_map_round_trips_and_cuts_the_padded_vocab_rows(arch):
    cfg = ModelConfig(size="nano", arch=arch, seq_len=32)
    state = build_model(cfg, 250).state_dict()  # 250 rows padded to 256 inside the built-in model
    hf = to_hf(state, cfg, 250)
    assert hf["lm_head.weight"].shape[0] == 250
    back = from_hf(hf, cfg)
    assert back.keys() == state.keys()
    for k, v in state.items():
        rows = 250 if k in ("embed.weight", "lm_head.weight") else None
        assert torch.equal(back[k][:rows], v[:rows]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained nano run per architecture (10 steps, checkpoints at 5 and 10), by arch."""
    out = tmp_path_factory.mktemp("export") / "sweep"
    train_cli("-m", "experiment=nano_test", "model.arch=neox,llama", "train.tokens=5120", "eval.every_tokens=2560",
              "train.checkpoint_every=5", f"train.out_dir={out}")
    by_arch = {rundir.read_summary(d)["coords"]["model.arch"]: d for d in rundir.run_dirs(out)}
    assert sorted(by_arch) == sorted(ARCHS)
    return by_arch


def builtin_at(run_dir, step):
    from midsweep.export import load_run
    from midsweep.train import checkpoint

    run = load_run(run_dir)
    model = build_model(run.model, 256)
    model.load_state_dict(checkpoint.model_weights(rundir.checkpoint_dir(run_dir, step)))
    return model.eval()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("step", [None, 5])
def test_exported_checkpoint_loads_in_transformers_with_the_same_logits(runs, arch, step, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    args = ["export", str(runs[arch]), str(tmp_path / "hf")] + (["--step", str(step)] if step else [])
    assert midsweep(args) == 0
    assert "exported step" in capsys.readouterr().out
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(model).__name__ == {"neox": "GPTNeoXForCausalLM", "llama": "LlamaForCausalLM"}[arch]
    expected_step = step or 10
    assert json.loads((tmp_path / "hf" / "midsweep.json").read_text())["step"] == expected_step
    x = torch.randint(1, 256, (2, 64))  # the full context of model=nano
    with torch.no_grad():
        ours, theirs = builtin_at(runs[arch], expected_step)(x), model(x).logits
    assert theirs.shape == ours.shape
    assert torch.allclose(theirs, ours, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_exported_byte_tokenizer_gives_the_training_ids(runs, tmp_path):
    transformers = pytest.importorskip("transformers")
    from midsweep.data.tokenizers import ByteTokenizer

    midsweep(["export", str(runs["neox"]), str(tmp_path)])
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    text = "def f(x):\n    return x ** 2  # héllo ∑ 😀"
    ids = tok(text)["input_ids"]
    assert ids == ByteTokenizer().encode(text).tolist()
    assert tok.decode(ids) == text
    assert tok.eos_token_id == tok.pad_token_id == ByteTokenizer.eos_id
    assert tok.model_max_length == 64


@pytest.mark.slow
def test_export_errors_name_the_fix(runs, tmp_path):
    with pytest.raises(SystemExit, match=r"no complete checkpoint at step\(s\) \[7\]; available: \[5, 10\]"):
        midsweep(["export", str(runs["neox"]), str(tmp_path / "a"), "--step", "7"])
    with pytest.raises(SystemExit, match="not a run directory"):
        midsweep(["export", str(tmp_path), str(tmp_path / "b")])


@pytest.mark.slow
def test_export_refuses_a_checkpoint_whose_bytes_changed(runs, tmp_path):
    run = shutil.copytree(runs["neox"], tmp_path / runs["neox"].name)  # copies: the fixture's files stay intact
    flip_bytes(rundir.checkpoint_dir(run, 5) / "__0_0.distcp")
    with pytest.raises(SystemExit, match=r"step_00000005 is corrupt \(checksum mismatch in __0_0.distcp\): "
                                         r"not exported\. Fix: pick another step \(complete checkpoints: \[10\]\)"):
        midsweep(["export", str(run), str(tmp_path / "hf"), "--step", "5"])
    assert not (tmp_path / "hf").exists()


@pytest.mark.slow
def test_exported_model_generates_a_padded_batch_as_each_prompt_alone_and_is_readable_as_the_umask_says(
        runs, tmp_path, recwarn):
    import os
    import stat

    transformers = pytest.importorskip("transformers")
    old = os.umask(0o022)
    try:
        midsweep(["export", str(runs["neox"]), str(tmp_path)])
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert set(modes.values()) == {0o644}, modes  # model.safetensors was 0600
    config = json.loads((tmp_path / "config.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert config["pad_token_id"] == tok.pad_token_id == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    prompts = ["def f(x):\n    return", "x"]
    recwarn.clear()
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False)
    assert not [w for w in recwarn if "padding" in str(w.message)], [str(w.message) for w in recwarn]
    for i, prompt in enumerate(prompts):
        alone = model.generate(**tok([prompt], return_tensors="pt"), max_new_tokens=8, do_sample=False)
        assert out[i, -8:].tolist() == alone[0, -8:].tolist()
