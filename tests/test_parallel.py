"""train.parallel and train.activation_checkpointing in one process: what they change is how, never what.

Sharding runs here over a one-rank gloo group (the DTensor, gradient-sync and state-dict paths of FSDP2 with no
second process); across ranks it is tested by tests/test_fsdp.py."""
import contextlib
import types

import numpy as np
import pytest
import torch
import torch.distributed as dist

from midsweep.config import ConfigError
from midsweep.config.model import ModelConfig
from midsweep.config.train import TrainConfig
from midsweep.model import build_model
from midsweep.train import checkpoint
from midsweep.train.batches import loss_sum
from midsweep.train.evaluate import heldout_loss
from midsweep.train.parallel import Parallel, ranks_per_node
from runner import save_checkpoint

VOCAB = 256
CPU = types.SimpleNamespace(device=torch.device("cpu"))  # all a sharded Parallel asks of the accelerator


def nano():
    torch.manual_seed(0)
    return build_model(ModelConfig(size="nano"), VOCAB)


def batches(n: int = 2):
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (2, 33), generator=g) for _ in range(n)]


def accumulate(model, parallel: Parallel | None, parts) -> float:
    """Loss of ``parts`` as micro-batches of one step, gradients accumulated as the loop does."""
    total = 0.0
    for i, x in enumerate(parts):
        sync = parallel.no_sync(model, i == len(parts) - 1) if parallel else contextlib.nullcontext()
        with sync:
            loss = loss_sum(model, x[:, :-1], x[:, 1:], torch.ones(2, 32)) / (len(parts) * 64)
            loss.backward()
        total += float(loss.detach())
    return total


def full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def test_activation_checkpointing_keeps_loss_gradients_and_names():
    plain, checkpointed = nano(), nano()
    parallel = Parallel(TrainConfig(activation_checkpointing=True), CPU, "fp32")
    checkpointed = parallel.wrap(checkpointed)
    assert list(checkpointed.state_dict()) == list(plain.state_dict())  # checkpoints stay interchangeable
    calls = []
    checkpointed.blocks[0].attn.register_forward_hook(lambda *_: calls.append(1))
    parts = batches()
    assert accumulate(checkpointed, None, parts) == pytest.approx(accumulate(plain, None, parts), abs=1e-6)
    for (name, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert len(calls) == 2 * len(parts)  # each block's forward ran again in the backward: it was recomputed


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["fsdp", "hsdp"])
def test_sharded_step_equals_plain(one_rank_group, mode, monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    plain = nano()
    parallel = Parallel(TrainConfig(parallel=mode, activation_checkpointing=True), CPU, "fp32")
    sharded = parallel.wrap(nano())
    assert parallel.sharded and all(hasattr(p, "full_tensor") for p in sharded.parameters())
    parts = batches()
    assert accumulate(sharded, parallel, parts) == pytest.approx(accumulate(plain, None, parts), abs=1e-6)
    norm = parallel.clip_grad_norm_(sharded, 0.5)
    expected = torch.nn.utils.clip_grad_norm_(plain.parameters(), 0.5)
    assert type(norm) is torch.Tensor and float(norm) == pytest.approx(float(expected), rel=1e-6)
    for (name, a), b in zip(plain.named_parameters(), sharded.parameters()):
        torch.testing.assert_close(full(b.grad), a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_a_sharded_checkpoint_holds_the_full_model_and_loads_sharded(one_rank_group, tmp_path):
    parallel = Parallel(TrainConfig(parallel="fsdp"), CPU, "fp32")
    model = parallel.wrap(nano())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    accumulate(model, parallel, batches())
    optimizer.step()
    path = save_checkpoint(tmp_path / "run", 1, model, optimizer)
    weights = checkpoint.model_weights(path)  # what train.init_from and midsweep export read: no process group
    assert list(weights) == list(nano().state_dict())
    for name, p in model.named_parameters():
        torch.testing.assert_close(weights[name], full(p), rtol=0, atol=0, msg=name)

    again = parallel.wrap(nano())
    again_opt = torch.optim.AdamW(again.parameters(), lr=1e-2)
    checkpoint.Checkpointer(tmp_path / "run", 0, 1, {1}, None, main=True).load(1, again, again_opt)
    for (name, a), b in zip(model.named_parameters(), again.parameters()):
        assert hasattr(b, "full_tensor")  # still sharded, each rank holding its own rows
        torch.testing.assert_close(full(b), full(a), rtol=0, atol=0, msg=name)
        moments_a, moments_b = optimizer.state[a]["exp_avg_sq"], again_opt.state[b]["exp_avg_sq"]
        torch.testing.assert_close(full(moments_b), full(moments_a), rtol=0, atol=0, msg=name)


def test_hsdp_refuses_uneven_nodes(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="train.parallel.*Fix: run as many tasks on every node"):
        ranks_per_node(4)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert ranks_per_node(4) == 2


class _Split:
    """Held-out sequences of a fake domain: ``n`` sequences of random tokens."""

    loss_mask = None

    def __init__(self, n: int):
        self.n = n

    def num_sequences(self, seq_len: int) -> int:
        return self.n

    def sequence(self, i: int, seq_len: int):
        return np.random.default_rng(i).integers(0, VOCAB, seq_len + 1), None


@pytest.mark.parametrize("n,passes", [(33, 2), (1, 1)])  # 17 and 16 sequences in batches of 16; 1 and none
def test_every_rank_evaluates_in_as_many_forward_passes(n, passes):
    """A sharded model gathers each block with all ranks: a rank with fewer held-out sequences still joins."""
    model, calls = nano(), []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    for rank in range(2):
        calls.clear()
        ranks = types.SimpleNamespace(process_index=rank, num_processes=2, device=torch.device("cpu"),
                                      autocast=contextlib.nullcontext, reduce=lambda t, reduction: t)
        heldout_loss(model, _Split(n), 32, n * 32, 16, ranks)
        assert len(calls) == passes, rank
