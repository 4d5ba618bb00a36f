"""Models: causality, determinism, learning, preset sizes, config errors, and the transformers backend."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from midsweep.config.errors import ConfigError
from midsweep.config import RunConfig
from midsweep.config.model import ModelConfig, all_params
from midsweep.model import build_model, count_params, flops_per_token, non_embedding_params
from midsweep.model.hf_map import from_hf
from midsweep.train.trainer import _adamw

ARCHS = ["neox", "llama"]
VOCAB = 250  # not a multiple of 64: exercises the padded embedding + sliced logits


def nano(arch: str = "neox", **kw) -> ModelConfig:
    return ModelConfig(size="nano", arch=arch, seq_len=32, **kw)


def seeded(cfg: ModelConfig, seed: int = 0, vocab: int = VOCAB) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(cfg, vocab)


@pytest.mark.parametrize("arch", ARCHS)
def test_changing_a_token_only_changes_logits_at_and_after_it(arch):
    model = seeded(nano(arch))
    x = torch.randint(0, VOCAB, (2, 32))
    t = 13
    x2 = x.clone()
    x2[:, t] = (x[:, t] + 1) % VOCAB
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-6)
    assert not torch.allclose(a[:, t:], b[:, t:], atol=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_gives_identical_weights_and_logits_and_state_dict_round_trips(arch):
    cfg = nano(arch)
    a, b, other = seeded(cfg, 0), seeded(cfg, 0), seeded(cfg, 1)
    x = torch.randint(0, VOCAB, (2, 32))
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not any("cos" in k or "sin" in k for k in sa)  # rotary tables are derived, not saved
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.allclose(a(x), other(x))
        other.load_state_dict(sa)
        assert torch.equal(a(x), other(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_have_vocab_columns_and_training_learns_a_repeating_pattern(arch):
    model = seeded(nano(arch))
    pattern = torch.randint(0, VOCAB, (7,))
    tokens = pattern.repeat(2 * 33 // 7 + 1)[: 2 * 33].view(2, 33)
    x, y = tokens[:, :-1], tokens[:, 1:]
    assert model(x).shape == (2, 32, VOCAB)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[0] > 4.0  # ~ln(250) at init
    assert losses[-1] < 0.3


def test_bf16_autocast_forward_stays_close_to_fp32():
    model = seeded(nano())
    x = torch.randint(0, VOCAB, (2, 32))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert low.shape == ref.shape
    assert (low.float() - ref).abs().max() < 0.05


def test_inputs_longer_than_seq_len_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="model.seq_len"):
        seeded(nano())(torch.zeros(1, 33, dtype=torch.long))


# non-embedding parameters of the Pythia models (vocab 50304)
PYTHIA = {"70m": 18_915_328, "160m": 85_056_000, "410m": 302_311_424}


@pytest.mark.parametrize("size", list(PYTHIA))
def test_presets_have_pythia_parameter_counts(size):
    with torch.device("meta"):
        neox = build_model(ModelConfig(size=size), 50304)
        llama = build_model(ModelConfig(size=size, arch="llama"), 50304)
    assert count_params(neox) == pytest.approx(PYTHIA[size], rel=0.01)
    assert count_params(llama) == pytest.approx(PYTHIA[size], rel=0.03)
    for model, arch in ((neox, "neox"), (llama, "llama")):
        assert count_params(model) == non_embedding_params(ModelConfig(size=size, arch=arch))
        assert count_params(model, non_embedding=False) > count_params(model) + 2 * 50304 * 500


def test_llama_presets_have_the_published_parameter_counts():
    with torch.device("meta"):
        llama7b = build_model(ModelConfig(size="7b", arch="llama"), 32000)
        llama1b = build_model(ModelConfig(size="1b", arch="llama"), 32000)
    assert count_params(llama7b, non_embedding=False) == 6_738_415_616
    assert count_params(llama7b, non_embedding=False) == all_params(ModelConfig(size="7b", arch="llama"), 32000)
    # TinyLlama's 1.1B with full attention instead of its 4 key/value heads (+ 2 x 22 x 2048 x 1792)
    assert count_params(llama1b, non_embedding=False) == 1_100_048_384 + 2 * 22 * 2048 * (2048 - 256)


@pytest.mark.parametrize("decay_all", [False, True])
def test_decay_all_decays_norm_gains_and_biases_too(decay_all):
    model = build_model(nano(), VOCAB)
    run = RunConfig(model=nano())
    run.optim.decay_all = decay_all
    optimizer = _adamw(model, run, fused=False)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)  # Adam's update is 0: only the decoupled decay moves a parameter
    optimizer.step()
    shrink = 1 - run.optim.lr * run.optim.weight_decay
    for name, p in model.named_parameters():
        decayed = decay_all or p.dim() >= 2
        assert torch.allclose(p, before[name] * (shrink if decayed else 1.0)), name


def test_flops_per_token_counts_weights_head_and_attention():
    cfg = ModelConfig(size="70m", seq_len=2048)
    expected = 6 * (18_915_328 + 512 * 50304) + 12 * 6 * 512 * 2048
    assert flops_per_token(cfg, 50304) == expected


def test_explicit_dims_override_the_preset():
    shape = ModelConfig(size="tiny", n_layers=3, d_ff=100).resolved()
    assert (shape.n_layers, shape.d_model, shape.n_heads, shape.d_ff) == (3, 256, 4, 100)


@pytest.mark.parametrize("change, key", [
    ({"size": "huge"}, "model.size"),
    ({"arch": "gpt2"}, "model.arch"),
    ({"backend": "jax"}, "model.backend"),
    ({"n_heads": 3}, "model.n_heads"),  # 256 % 3 != 0
    ({"d_model": 24, "n_heads": 6}, "model.n_heads"),  # head_dim 4 -> neox rotates 1 channel: odd
    ({"n_layers": 0}, "model.n_layers"),
    ({"seq_len": -1}, "model.seq_len"),
    ({"rope_theta": 0.0}, "model.rope_theta"),
    ({"init_std": -0.1}, "model.init_std"),
    ({"hf_revision": "step1000"}, "model.hf_revision"),
    ({"hf_name_or_path": "EleutherAI/pythia-70m"}, "model.hf_name_or_path"),
])
def test_invalid_config_values_name_their_key_and_a_fix(change, key):
    cfg = replace(ModelConfig(), **change)
    problems = cfg.problems("model")
    assert key in [p.key for p in problems]
    assert all(p.fix for p in problems)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        build_model(cfg, VOCAB)


def test_default_config_is_valid():
    assert ModelConfig().problems() == []


# --- transformers backend (importing transformers takes seconds, so these are marked slow) ---

@pytest.fixture(scope="module")
def transformers():
    return pytest.importorskip("transformers")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_hf_backend_serves_the_same_interface_with_comparable_size(transformers, arch):
    hf = seeded(nano(arch, backend="hf"))
    builtin = seeded(nano(arch))
    x = torch.randint(0, VOCAB, (2, 32))
    logits = hf(x)
    assert logits.shape == (2, 32, VOCAB) and logits.dtype == torch.float32
    assert count_params(hf) == pytest.approx(count_params(builtin), rel=0.03)
    assert count_params(hf, non_embedding=False) == count_params(hf) + 2 * VOCAB * 64
    again = seeded(nano(arch, backend="hf"), seed=1)
    again.load_state_dict(hf.state_dict())
    with torch.no_grad():
        assert torch.equal(again(x), hf(x))


@pytest.mark.slow
def test_hf_from_pretrained_local_dir_reproduces_the_saved_model(transformers, tmp_path):
    saved = seeded(nano(backend="hf"))
    saved.model.save_pretrained(tmp_path / "ckpt")
    loaded = seeded(nano(backend="hf", hf_name_or_path=str(tmp_path / "ckpt")), seed=5)
    x = torch.randint(0, VOCAB, (2, 32))
    with torch.no_grad():
        assert torch.equal(loaded(x), saved(x))
    with pytest.raises(ValueError, match="tokenizer"):
        build_model(nano(backend="hf", hf_name_or_path=str(tmp_path / "ckpt")), VOCAB + 10)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_builtin_model_computes_the_same_function_as_hf_gptneox_and_llama(transformers, arch):
    """Same architecture, not just the same size: with HF's weights the built-in model gives HF's logits."""
    cfg = nano(arch)
    hf = seeded(replace(cfg, backend="hf"), vocab=250)
    builtin = seeded(cfg, vocab=250)
    builtin.load_state_dict(from_hf({k.removeprefix("model."): v for k, v in hf.state_dict().items()}, cfg))
    x = torch.randint(0, 250, (2, 32))
    with torch.no_grad():
        assert torch.allclose(builtin(x), hf(x), atol=1e-5)
