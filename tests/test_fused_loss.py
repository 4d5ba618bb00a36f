"""The chunked linear + cross-entropy (midsweep.model.loss) against the plain logits path: same loss, same
gradients, same 50-step training curve, and far less memory held for backward."""
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from midsweep.config.model import ModelConfig
from midsweep.model import build_model
from midsweep.model.loss import linear_cross_entropy_sum
from midsweep.train.batches import loss_sum

VOCAB = 250  # not a multiple of 64: the padded output rows must not count


def reference_loss_sum(model, x, y, m):
    """The path the fused loss replaces: full logits, an fp32 copy, cross_entropy."""
    losses = F.cross_entropy(model(x).float().flatten(0, 1), y.flatten(), reduction="none")
    return (losses * m.flatten()).sum()


def nano(arch="neox", seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(size="nano", arch=arch, seq_len=32), VOCAB)


def batch(seed=1, b=4, t=32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB, (b, t), generator=g)
    y = torch.randint(0, VOCAB, (b, t), generator=g)
    m = (torch.rand(b, t, generator=g) > 0.3).float()  # a prompt mask: some tokens do not count
    return x, y, m


def loss_and_grads(model, fn, x, y, m, bf16):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        loss = fn(model, x, y, m)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("arch", ["neox", "llama"])
@pytest.mark.parametrize("chunk_elements", [VOCAB * 7, 1 << 25])  # 19 chunks of 7 tokens (last one short); one chunk
def test_fused_loss_and_gradients_equal_the_logits_path_in_fp32(arch, chunk_elements):
    def chunked(model, x, y, m):
        hidden, weight = model(x, hidden=True)
        return linear_cross_entropy_sum(hidden.flatten(0, 1), weight, y.flatten(), m.flatten(), chunk_elements)

    model, (x, y, m) = nano(arch), batch()
    ref, ref_grads = loss_and_grads(model, reference_loss_sum, x, y, m, bf16=False)
    out, grads = loss_and_grads(model, chunked, x, y, m, bf16=False)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), rel=1e-6)
    for name, g in ref_grads.items():
        assert torch.allclose(grads[name], g, rtol=1e-4, atol=1e-6), name
    assert torch.all(grads["lm_head.weight"][VOCAB:] == 0)  # padding rows get no gradient, as before


def test_fused_loss_and_gradients_match_the_logits_path_under_bf16_autocast():
    model, (x, y, m) = nano(), batch()
    ref, ref_grads = loss_and_grads(model, reference_loss_sum, x, y, m, bf16=True)
    out, grads = loss_and_grads(model, loss_sum, x, y, m, bf16=True)
    assert out.item() == pytest.approx(ref.item(), rel=2e-3)
    for name, g in ref_grads.items():  # bf16 rounds at 3 significant digits: compare gradients as directions
        cos = F.cosine_similarity(grads[name].flatten(), g.flatten(), dim=0)
        assert cos > 0.999, (name, cos.item())


def test_without_grad_the_fused_loss_gives_the_same_value_and_keeps_nothing():
    model, (x, y, m) = nano(), batch()
    with_grad = loss_sum(model, x, y, m)
    with torch.no_grad():
        without = loss_sum(model, x, y, m)
        ref = reference_loss_sum(model, x, y, m)
    assert without.item() == with_grad.item()
    assert without.item() == pytest.approx(ref.item(), rel=1e-6)
    assert not without.requires_grad


def test_hidden_interface_gives_the_logits_of_the_plain_forward():
    model, (x, _, _) = nano(), batch()
    with torch.no_grad():
        hidden, weight = model(x, hidden=True)
        assert weight.shape == (VOCAB, hidden.shape[-1])
        assert torch.allclose(hidden @ weight.T, model(x), atol=1e-5)


def saved_bytes(fn) -> int:
    """Bytes autograd keeps for backward while ``fn`` runs (the activation memory a loss adds)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_fused_loss_keeps_no_logits_for_backward():
    torch.manual_seed(0)
    n, d, v = 2048, 64, 4096
    hidden = torch.randn(n, d, requires_grad=True)
    weight = (torch.randn(v, d) * 0.02).requires_grad_()
    y, m = torch.randint(0, v, (n,)), torch.ones(n)

    def plain():
        return (F.cross_entropy((hidden @ weight.T).float(), y, reduction="none") * m).sum()

    def fused():
        return linear_cross_entropy_sum(hidden, weight, y, m)

    logits_bytes = n * v * 4
    assert saved_bytes(plain) >= logits_bytes  # the plain path keeps the [N, V] softmax
    assert saved_bytes(fused) <= (n * d + v * d) * 4  # the fused one its two gradients only
    assert fused().item() == pytest.approx(plain().item(), rel=1e-6)


@pytest.mark.parametrize("bf16", [False, True])
def test_fifty_training_steps_match_the_logits_path_to_1e_3(bf16):
    """The loss curve of 50 AdamW steps on a repeating-pattern corpus (the loss falls from ~5.5 to ~0)."""
    pattern = torch.randint(0, VOCAB, (11,), generator=torch.Generator().manual_seed(3))
    tokens = pattern.repeat(4 * 33 // 11 + 1)[: 4 * 33].view(4, 33)
    x, y, m = tokens[:, :-1], tokens[:, 1:], torch.ones(4, 32)
    curves = []
    for fn in (reference_loss_sum, loss_sum):
        model = nano()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        curve = []
        for _ in range(50):
            with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
                loss = fn(model, x, y, m) / m.sum()
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            curve.append(loss.item())
        curves.append(curve)
    ref, fused = curves
    assert ref[0] > 5.0 and ref[-1] < 0.5
    assert max(abs(a - b) for a, b in zip(ref, fused)) < 1e-3, list(zip(ref, fused))


@pytest.mark.slow
def test_hf_backend_serves_the_hidden_interface():
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = build_model(ModelConfig(size="nano", seq_len=32, backend="hf"), VOCAB)
    x, y, m = batch()
    with torch.no_grad():
        assert loss_sum(model, x, y, m).item() == pytest.approx(reference_loss_sum(model, x, y, m).item(), rel=1e-5)


@pytest.mark.slow  # torch.compile: seconds per graph, and its compile workers are processes
@pytest.mark.parametrize("bf16", [False, True])
def test_compiled_chunks_equal_the_eager_chunks(bf16):
    """train.compile runs each chunk through torch.compile: the same loss and gradients, last short chunk too."""
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(45, 24, generator=g, requires_grad=True)
    weight = torch.randn(VOCAB, 24, generator=g, requires_grad=True)
    y, m = torch.randint(0, VOCAB, (45,), generator=g), (torch.rand(45, generator=g) > 0.3).float()
    results = []
    for mode in (None, "default"):
        hidden.grad = weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
            loss = linear_cross_entropy_sum(hidden, weight, y, m, VOCAB * 8, compile_mode=mode)  # 8+...+8+5
            with torch.no_grad():
                value = linear_cross_entropy_sum(hidden, weight, y, m, VOCAB * 8, compile_mode=mode)
        loss.backward()
        results.append((loss.detach(), value, hidden.grad.clone(), weight.grad.clone()))
    (eager, eager_value, eager_h, eager_w), (comp, comp_value, comp_h, comp_w) = results
    assert comp.item() == pytest.approx(eager.item(), rel=1e-5) and comp_value.item() == pytest.approx(comp.item())
    assert torch.allclose(comp_h, eager_h, rtol=1e-3, atol=1e-5)
    assert torch.allclose(comp_w, eager_w, rtol=1e-3, atol=1e-5)
