"""How the ranks of a run hold its model (``train.parallel``), and the few steps of the loop that depend on it.

``ddp``: accelerate wraps the model in DistributedDataParallel (every rank holds everything). ``fsdp`` and
``hsdp``: torch's FSDP2 (``fully_shard``) shards each Transformer block, then the root, over a device mesh (1-D,
or 2-D ``replicate x shard`` = nodes x ranks per node for ``hsdp``), as torchtitan and lingua do; accelerate's FSDP
plugin is not used (on CPU it falls back to DDP, so it could not be tested without a GPU). Accelerate still owns
devices, autocast and DDP. ``train.activation_checkpointing`` recomputes each block in the backward, in every mode.

The loop's step code is the same for every mode: ``no_sync`` for all but the last micro-batch, ``clip_grad_norm_``
returning a plain tensor, and ``unwrap`` for the module whose state dicts are saved (midsweep.train.checkpoint saves
and loads a plain, DDP or sharded model alike, into any world size and mode).
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch
import torch.distributed as dist
from accelerate import Accelerator
from torch import nn
from torch.distributed._composable import checkpoint
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from midsweep.config import ConfigError, Problem
from midsweep.config.train import TrainConfig

# The root returns the output matrix as a view (its real vocabulary rows), which the loss only reads
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(\w+\) returned a view tensor")


class Parallel:
    """The parallelism of one run: ``wrap`` the model, build the optimizer on the result, then ``prepare`` both.

    ``precision``: the resolved precision (``bf16`` or ``fp32``); under fsdp/hsdp with bf16 the parameters are
    gathered in bf16 and gradients reduced in fp32 (FSDP2's MixedPrecisionPolicy; autocast stays on for the ops).
    """

    def __init__(self, train: TrainConfig, accelerator: Accelerator, precision: str):
        self.mode = train.parallel
        self.activation_checkpointing = train.activation_checkpointing
        self.accelerator = accelerator
        self.precision = precision
        # sharding over one process is no sharding: a single process (no process group) trains as ddp does
        self.sharded = self.mode != "ddp" and dist.is_available() and dist.is_initialized()

    def wrap(self, model: nn.Module, compile_mode: str | None = None) -> nn.Module:
        """Activation checkpointing per block, then under fsdp/hsdp ``fully_shard`` per block and the root (in
        place: parameter names are unchanged, the parameters become DTensors). Build the optimizer after this.

        ``compile_mode``: under fsdp/hsdp each block is compiled on its own (before sharding, as torchtitan does)
        and ``compile`` leaves the whole model alone, since FSDP2's hooks run between the blocks."""
        blocks = list(model.block_modules())
        if self.activation_checkpointing:
            for block in blocks:
                checkpoint(block)  # composable: no wrapper module, so state-dict keys stay the same
        if not self.sharded:
            return model
        mesh = device_mesh(self.mode, self.accelerator.device.type)
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if self.precision == "bf16" else MixedPrecisionPolicy())
        for i, block in enumerate(blocks):
            if compile_mode:
                block.compile(mode=compile_mode)
            # the last block's parameters are gathered again at once by the backward: keep them
            fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=i < len(blocks) - 1)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        return model

    def prepare(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        """ddp: accelerate's prepare (DDP, device placement); fsdp/hsdp: as they are (fully_shard placed them)."""
        if self.sharded:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def compile(self, model: nn.Module, compile_mode: str | None) -> nn.Module:
        """The whole model compiled (ddp), or as it is (fsdp/hsdp: its blocks were compiled by ``wrap``)."""
        if not compile_mode or self.sharded:
            return model
        return torch.compile(model, mode=compile_mode)

    def unwrap(self, model: nn.Module) -> nn.Module:
        """The user's module (its parameter names; under fsdp/hsdp the sharded module itself)."""
        return model if self.sharded else self.accelerator.unwrap_model(model)

    def no_sync(self, model: nn.Module, last: bool):
        """A context for one micro-batch's forward and backward: gradients are reduced across ranks only in the
        last micro-batch of a step (the others accumulate locally)."""
        if last:
            return contextlib.nullcontext()
        if self.sharded:
            return _gradient_sync_off(model)
        return self.accelerator.no_sync(model)

    @staticmethod
    def clip_grad_norm_(model: nn.Module, max_norm: float) -> torch.Tensor:
        """Scale the gradients to a total norm of at most ``max_norm``; return the norm before, a plain tensor
        (sharded gradients are DTensors, whose norm is reduced across ranks first)."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm)
        return norm


@contextlib.contextmanager
def _gradient_sync_off(model: FSDPModule):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def device_mesh(mode: str, device_type: str) -> DeviceMesh:
    """All ranks in one dimension (fsdp), or ``(nodes, ranks per node)`` named ``replicate, shard`` (hsdp)."""
    world = dist.get_world_size()
    if mode == "fsdp":
        return init_device_mesh(device_type, (world,), mesh_dim_names=("shard",))
    per_node = ranks_per_node(world)
    return init_device_mesh(device_type, (world // per_node, per_node), mesh_dim_names=("replicate", "shard"))


def ranks_per_node(world: int) -> int:
    """Ranks on this node: LOCAL_WORLD_SIZE (torchrun, accelerate launch, midsweep's SLURM tasks export it),
    else SLURM_NTASKS_PER_NODE, else all ranks (one node)."""
    raw = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE") or str(world)
    per_node = int(raw)
    if per_node < 1 or world % per_node:
        raise ConfigError([Problem("train.parallel", f"hsdp needs the same number of ranks on every node, but "
                                   f"{world} ranks do not split into nodes of {per_node}",
                                   "run as many tasks on every node, or use train.parallel=fsdp")])
    return per_node
