"""midsweep export RUN_DIR OUT_DIR [--step N]: a run's checkpoint as a transformers model directory.

OUT_DIR gets what AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained read: config.json and
model.safetensors (GPTNeoXForCausalLM for model.arch=neox, LlamaForCausalLM for llama; float32), the tokenizer,
and midsweep.json (run id, step, tokens: where the weights come from). An HF tokenizer is saved as it is; the
built-in byte tokenizer (ids = UTF-8 bytes, id 0 ends a document) becomes a byte-level tokenizer with the same
ids, whose id 0 is the special token <|endoftext|> (eos and pad). config.json names the tokenizer's pad id,
and the tokenizer pads on the left, so a batch of prompts generates as each prompt alone. Files follow the umask.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from midsweep import rundir
from midsweep.config import ConfigError, RunConfig, to_run_config
from midsweep.data.tokenizers import ByteTokenizer, load_tokenizer

PROVENANCE = "midsweep.json"
BYTE_EOS = "<|endoftext|>"


class ExportError(ValueError):
    """A run directory that cannot be exported; the message says why and what to do."""


@dataclass(frozen=True)
class Exported:
    out_dir: Path
    step: int
    tokens: int


def load_run(run_dir: Path) -> RunConfig:
    """The validated config a run directory was trained with."""
    path = Path(run_dir) / rundir.CONFIG
    if not path.is_file():
        raise ExportError(f"{run_dir} has no {rundir.CONFIG}: not a run directory. Fix: give a run directory "
                          "(train.out_dir/<run_id>)")
    try:
        return to_run_config(OmegaConf.load(path))
    except ConfigError as err:
        raise ExportError(f"{path} does not validate with this midsweep version: {err}") from err


def checkpoint_steps(run_dir: Path, steps: Optional[list[int]] = None) -> list[int]:
    """``steps`` (all complete checkpoints when None), checked to exist."""
    have = rundir.complete_steps(run_dir)
    if not have:
        raise ExportError(f"{run_dir} has no complete checkpoint. Fix: train the run (its checkpoints/ holds "
                          "step_XXXXXXXX directories with a COMPLETE marker)")
    missing = sorted(set(steps or []) - set(have))
    if missing:
        raise ExportError(f"{run_dir}: no complete checkpoint at step(s) {missing}; available: {have}. Fix: pick "
                          "one of those (train.keep_last and train.pin_steps decide which are kept)")
    return sorted(steps) if steps else have


def export(run_dir: Path, out_dir: Path, step: Optional[int] = None) -> Exported:
    """Write the checkpoint at ``step`` (default: the newest) of ``run_dir`` into ``out_dir``."""
    try:
        import transformers  # noqa: F401  (the hf extra; the model and tokenizer are written with it)
    except ImportError as err:
        raise ExportError(f"exporting needs transformers ({err}). Fix: pip install 'midsweep[hf]'") from None
    from midsweep.model import build_model  # here: importing torch and transformers takes seconds
    from midsweep.train import checkpoint

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    run = load_run(run_dir)
    step = checkpoint_steps(run_dir, [step] if step is not None else None)[-1]
    try:
        state = checkpoint.model_weights(rundir.checkpoint_dir(run_dir, step))
    except checkpoint.OldCheckpoint as err:
        raise ExportError(str(err)) from None
    except rundir.CorruptCheckpoint as err:  # its bytes differ from what training wrote: never exported
        others = [s for s in rundir.complete_steps(run_dir) if s != step]
        fix = f"pick another step (complete checkpoints: {others})" if others else "retrain the run"
        raise ExportError(f"{err}: not exported. Fix: {fix}") from None
    tokenizer = load_tokenizer(run.data.tokenizer)
    if run.model.backend == "hf":
        wrapper = build_model(run.model, tokenizer.vocab_size)
        wrapper.load_state_dict(state)
        model = wrapper.model
    else:
        from transformers import AutoModelForCausalLM

        from midsweep.model.hf import hf_config
        from midsweep.model.hf_map import to_hf

        config = hf_config(run.model, tokenizer.vocab_size)
        # the built-in model's rotary tables end at seq_len: tell downstream tools (lm-eval truncates to it)
        config.max_position_embeddings = run.model.seq_len
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(to_hf(state, run.model, tokenizer.vocab_size), strict=True)
    hf_tok = hf_tokenizer(tokenizer, run.model.seq_len)
    model.config.use_cache = True
    for config in (model.config, model.generation_config):  # generate() reads the latter
        config.bos_token_id = config.eos_token_id = tokenizer.eos_id
        config.pad_token_id = hf_tok.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    hf_tok.save_pretrained(out_dir)
    tokens = run.tokens_at(step)
    rundir.atomic_write_json(out_dir / PROVENANCE, {"run_id": run.run_id(), "run_dir": str(run_dir.resolve()),
                                                    "step": step, "tokens": tokens, "arch": run.model.arch})
    _follow_umask(out_dir)
    return Exported(out_dir, step, tokens)


def _follow_umask(out_dir: Path) -> None:
    """Give every exported file the mode a new file gets under the umask: the weights are written through a
    private temporary file (0600), which colleagues sharing the model directory could not read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in out_dir.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)


def hf_tokenizer(tokenizer, max_length: int):
    """A transformers tokenizer encoding text to the ids the run was trained on."""
    from transformers import PreTrainedTokenizerFast

    # a causal LM generates after the prompt: a batch of prompts is padded on the left, with eos when the
    # tokenizer has no pad token of its own
    if not isinstance(tokenizer, ByteTokenizer):
        tokenizer.tok.model_max_length = max_length
        tokenizer.tok.padding_side = "left"
        if tokenizer.tok.pad_token is None:
            tokenizer.tok.pad_token = tokenizer.tok.convert_ids_to_tokens(tokenizer.eos_id)
        return tokenizer.tok
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # ByteLevel spells each byte as one printable character; a merge-free BPE maps that character to the byte.
    # Byte 0 never occurs in training text (it is stripped), so its id is the end-of-document token.
    vocab = {char: byte for byte, char in bytes_to_unicode().items() if byte != ByteTokenizer.eos_id}
    vocab[BYTE_EOS] = ByteTokenizer.eos_id
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([BYTE_EOS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=BYTE_EOS, pad_token=BYTE_EOS,
                                   model_max_length=max_length, padding_side="left")
