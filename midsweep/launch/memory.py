"""Peak GPU memory of one training run, per GPU, from its config alone (no torch): a model, not a measurement.

``estimate(run, gpus)`` adds up what the built-in model keeps on one GPU at the peak of a training step (the end
of a micro-batch's forward, when every activation is stored): the training state, the compute-dtype parameter
copies, the activations at ``train.micro_batch`` x ``model.seq_len`` tokens and the chunked loss head
(``midsweep/model/loss.py``), plus an allowance for the CUDA context and the allocator. The launchers refuse a grid
point that does not fit in ``hydra.launcher.gpu_memory_gb`` (``check``), naming the keys that would make it fit,
found by trying them (``fixes``). Assumptions: bf16 for ``train.precision=auto`` (GPUs with bf16), flash or
memory-efficient attention (no T x T scores kept), eager kernels (torch.compile usually keeps less), fused AdamW
(no optimizer temporaries); the ``hf`` backend is counted as the built-in model of its shape.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

from hydra.errors import CompactHydraException

from midsweep.config import RunConfig
from midsweep.config.errors import ConfigError, Problem
from midsweep.config.model import LOSS_CHUNK_ELEMENTS

GIB = 1 << 30
CONTEXT_BYTES = GIB
"""The CUDA context with cuBLAS and NCCL workspaces, per GPU (an allowance)."""
FRAGMENTATION = 0.10
"""Memory the caching allocator reserves beyond what tensors use, as a fraction of them (an allowance)."""
GPUS_PER_NODE_MAX = 8
"""The most GPUs per node that a fix names (more GPUs go on more nodes)."""
NODES_MAX = 64
"""The most nodes that a fix names."""


@dataclass(frozen=True)
class Gpus:
    """The GPUs of one job, as a launcher gives them (keys gpus_per_node, nodes, gpu_memory_gb)."""

    per_node: int = 1
    """GPUs per node of a job (hydra.launcher.gpus_per_node)."""
    nodes: int = 1
    """Nodes of a job (hydra.launcher.nodes)."""
    memory_gb: float = 80.0
    """Memory of one GPU in GiB (hydra.launcher.gpu_memory_gb)."""
    slurm: bool = True
    """A SLURM job: ``train.device=auto`` runs on its GPUs and a fix may ask for more of them. False for the local
    launcher, which runs on this machine's one GPU only the points that say ``train.device=cuda``."""

    @property
    def count(self) -> int:
        return self.per_node * self.nodes

    def shard_group(self, parallel: str) -> int:
        """GPUs that share one copy of the training state: fsdp all of the job's, hsdp those of one node."""
        return {"ddp": 1, "fsdp": self.count, "hsdp": self.per_node}[parallel]

    def runs_on_gpu(self, run: RunConfig) -> bool:
        return self.count > 0 and (run.train.device == "cuda" or (self.slurm and run.train.device == "auto"))

    def overrides(self, base: "Gpus") -> dict[str, str]:
        """The launcher keys that turn ``base`` into this layout."""
        return {f"hydra.launcher.{key}": str(getattr(self, attr)) for key, attr in
                (("gpus_per_node", "per_node"), ("nodes", "nodes")) if getattr(self, attr) != getattr(base, attr)}


@dataclass(frozen=True)
class Estimate:
    """Bytes on one GPU at the peak of a training step, by term (``total``)."""

    states: float
    """fp32 parameters, gradients and AdamW's two moments: 16 bytes a parameter, divided over the shard group (ddp
    on several GPUs: 4 more for DDP's gradient buckets)."""
    copies: float
    """Compute-dtype parameter copies: ddp under bf16, autocast's cached bf16 copy of every non-embedding parameter
    (kept from a micro-batch's forward to the end of its backward); fsdp/hsdp, the all-gathered root (embedding,
    output head) and two blocks (the one computing and the one prefetched)."""
    blocks: float
    """Activations the blocks keep for the backward at micro_batch x seq_len tokens: all of every block's, or with
    activation checkpointing only each block's input."""
    head: float
    """What the loss head keeps for the backward: the fp32 gradients in the final hidden states and in the output
    matrix (computed in the forward, chunk by chunk) and the final norm's input."""
    transient: float
    """The larger working set on top: one block's activations (two with checkpointing: the recomputed block and
    its gradients), or the head's forward: the fp32 hidden states, one chunk's fp32 logits and their
    compute-dtype gradient, the output matrix's compute-dtype copy and the chunk's addition to its gradient."""
    overhead: float
    """CUDA context and allocator: CONTEXT_BYTES plus FRAGMENTATION of the terms above (allowances, not measured)."""

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def gib(self) -> float:
        return self.total / GIB

    def terms(self) -> str:
        """'states 12.3, copies 2.0, ...' in GiB."""
        return ", ".join(f"{f.name} {getattr(self, f.name) / GIB:.1f}" for f in fields(self))


def estimate(run: RunConfig, gpus: Gpus) -> Estimate:
    """The peak memory of one GPU training ``run`` on ``gpus`` (see the module docstring for what is assumed)."""
    plan = run.plan()
    every, body = plan["all_params"], plan["params"]  # all parameters; those outside the embedding and head
    shape, vocab = run.model.resolved(), run.data.resolved_vocab_size()
    d, f, layers = shape.d_model, shape.d_ff, shape.n_layers
    tokens = run.train.micro_batch * run.model.seq_len
    a = 4 if run.train.precision == "fp32" else 2  # bytes of the compute dtype
    sharded = run.train.parallel != "ddp"
    r = a if sharded else 4  # the residual stream has the parameters' dtype: bf16 ones under fsdp's bf16 policy
    states = 16 * every / gpus.shard_group(run.train.parallel)
    if not sharded and gpus.count > 1:  # DDP's gradient buckets (accelerate's default: not views of the grads)
        states += 4 * every
    if sharded:
        copies = a * ((every - body) + 2 * body / layers)
    else:
        copies = 2 * body if a == 2 else 0
    # per token and block: attention keeps the norm's output (as the qkv input), qkv (v is a view of it), the
    # rotated q and k, SDPA's output and fp32 log-sum-exp, the output projection's input, and the MLP's input
    per_token = 9 * a * d + 4 * shape.n_heads
    if run.model.arch == "neox":  # the block input (both norms read it), the GELU's input and output
        per_token += r * d + 2 * a * f
    else:  # the block input and the mid-block residual; SwiGLU's gate|up, silu(gate) and their product
        per_token += 2 * r * d + 4 * a * f
    block = tokens * per_token
    checkpointing = run.train.activation_checkpointing
    blocks = layers * (tokens * r * d if checkpointing else block)
    head = tokens * 4 * d + 4 * vocab * d + tokens * r * d
    chunk = min(tokens, max(1, LOSS_CHUNK_ELEMENTS // vocab)) * vocab  # logits of one chunk
    bf16 = a != 4
    in_head = (4 * tokens * d  # the fp32 hidden states
               + chunk * (4 + (a if bf16 else 0))  # the chunk's fp32 logits; their gradient's bf16 cast
               + (a * vocab * d if bf16 and not sharded else 0)  # the head's bf16 copy (fsdp's is bf16 already)
               + vocab * d * (a + (4 if bf16 else 0)))  # the chunk's addition to the head's gradient, its fp32 cast
    transient = max(block * (2 if checkpointing else 1), in_head)
    used = states + copies + blocks + head + transient
    return Estimate(states, copies, blocks, head, transient, CONTEXT_BYTES + FRAGMENTATION * used)


def fits(run: RunConfig, gpus: Gpus) -> bool:
    return estimate(run, gpus).gib() <= gpus.memory_gb


def _splits(run: RunConfig, micro: int, ranks: int) -> bool:
    """The global batches split into ``ranks`` x micro-batches of ``micro`` (as the training loop requires)."""
    batches = [run.train.global_batch] + ([run.posttrain_batch] if run.posttrain.enabled else [])
    return all(b % (micro * ranks) == 0 for b in batches)


def _with_train(run: RunConfig, **changes) -> RunConfig:
    changed = replace(run, train=replace(run.train, **changes))
    changed.posttrain_items = run.posttrain_items
    return changed


def _layouts(gpus: Gpus) -> list[Gpus]:
    """More GPUs for one job, fewest first: more per node up to GPUS_PER_NODE_MAX, then more nodes."""
    out, per_node = [], gpus.per_node * 2
    while per_node <= GPUS_PER_NODE_MAX:
        out.append(replace(gpus, per_node=per_node))
        per_node *= 2
    per_node, nodes = max(gpus.per_node, GPUS_PER_NODE_MAX), gpus.nodes * 2
    while nodes <= NODES_MAX:
        out.append(replace(gpus, per_node=per_node, nodes=nodes))
        nodes *= 2
    return out


def _one_fix(run: RunConfig, gpus: Gpus) -> Optional[dict[str, str]]:
    """Overrides that make ``run`` fit: none, a smaller micro-batch (the largest that fits), or, sharded on SLURM,
    more GPUs (the fewest that fit); None when neither does."""
    if fits(run, gpus):
        return {}
    for micro in range(run.train.micro_batch - 1, 0, -1):
        if _splits(run, micro, gpus.count) and fits(_with_train(run, micro_batch=micro), gpus):
            return {"train.micro_batch": str(micro)}
    if gpus.slurm and run.train.parallel != "ddp":
        for more in _layouts(gpus):
            if _splits(run, run.train.micro_batch, more.count) and fits(run, more):
                return more.overrides(gpus)
    return None


def fixes(run: RunConfig, gpus: Gpus) -> list[dict[str, str]]:
    """Sets of overrides that each make ``run`` fit: the largest micro-batch that fits (or, sharded, the fewest GPUs),
    then activation checkpointing, fsdp (for a ddp run) and both, each with the largest micro-batch or the fewest
    GPUs that fit if needed. A set that holds another is left out."""
    found: list[dict[str, str]] = []
    parallel, checkpointing = run.train.parallel, run.train.activation_checkpointing
    for mode in dict.fromkeys([parallel, "fsdp" if parallel == "ddp" else parallel]):
        for ac in dict.fromkeys([checkpointing, True]):
            fix = _one_fix(_with_train(run, parallel=mode, activation_checkpointing=ac), gpus)
            if fix is None:
                continue
            fix = {**({"train.parallel": mode} if mode != parallel else {}),
                   **({"train.activation_checkpointing": "true"} if ac != checkpointing else {}), **fix}
            if fix and not any(f.items() <= fix.items() for f in found):
                found.append(fix)
    return found


class DoesNotFit(ConfigError, CompactHydraException):
    """Grid points whose estimated peak memory exceeds their GPUs'; each group of points is one Problem whose key
    names the points and whose fix names the overrides that would fit (Hydra prints it without a traceback)."""

    def __init__(self, problems: list[Problem], header: str):
        super().__init__(problems)
        self.args = ("\n".join([header, *(f"  - {p}" for p in problems)]),)


def check(runs: dict[int, RunConfig], gpus: Gpus) -> None:
    """Raise DoesNotFit naming every point (index: run) on the GPUs that cannot fit, grouped by their fixes."""
    over = {i: run for i, run in runs.items() if gpus.runs_on_gpu(run) and not fits(run, gpus)}
    if not over:
        return
    groups: dict[tuple, list[int]] = {}
    for i, run in over.items():
        groups.setdefault(tuple(tuple(f.items()) for f in fixes(run, gpus)), []).append(i)
    problems = []
    for group, indices in groups.items():
        worst = max(indices, key=lambda i: estimate(over[i], gpus).total)
        est, train = estimate(over[worst], gpus), over[worst].train
        shown = ", ".join(f"#{i}" for i in indices[:8]) + (", ..." if len(indices) > 8 else "")
        options = [" ".join(f"{k}={v}" for k, v in fix) for fix in group]
        fix = (" | ".join(options) + (" (any one)" if len(options) > 1 else "") if options else
               "no combination of activation checkpointing, fsdp, a smaller micro_batch and more GPUs fits: lower "
               "model.seq_len or use a smaller model")
        problems.append(Problem(
            f"point(s) {shown}",
            f"up to {est.gib():.1f} GiB per GPU ({est.terms()}) with train.parallel={train.parallel} "
            f"activation_checkpointing={str(train.activation_checkpointing).lower()} micro_batch={train.micro_batch}",
            f"{fix}; or hydra.launcher.gpu_memory_gb={int(-(-est.gib() // 1))} for GPUs that large"))
    where = f"{gpus.count} GPU(s) per job" if gpus.slurm else "this machine's GPU"
    raise DoesNotFit(problems, f"{len(over)} of {len(runs)} point(s) need more memory per GPU than "
                     f"hydra.launcher.gpu_memory_gb={gpus.memory_gb:g} on {where} (an estimate: "
                     "docs/slurm.md#gpu-memory); nothing was launched:")
