"""Tokenization speed of ``midsweep prepare``: tokens/s building one domain's shards with 1 process and with
N, side by side, with a BPE tokenizer (trained here on the built-in prose corpus, so no download; or
``--tokenizer`` any local or cached HF tokenizer, e.g. EleutherAI/pythia-160m). Wall and CPU time of this
process and its workers; the shards of both builds are checked to be identical.

    .venv/bin/python benchmarks/prepare_speed.py [--procs 8] [--domain code] [--tokenizer PATH]
"""
from __future__ import annotations

import argparse
import filecmp
import os
import resource
import tempfile
import time
from pathlib import Path


def cpu_s() -> float:
    """CPU seconds of this process and its finished workers (wall time on a shared machine includes waiting)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def bpe_tokenizer(cache: Path, out: Path, vocab: int = 8192) -> str:
    """A byte-level BPE tokenizer trained on the built-in ``general`` corpus, saved like a hub tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from midsweep.data import read_corpus

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    texts = (r["text"] for r in read_corpus("general", cache))
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(out)
    return str(out)


def build(domain: str, tokenizer_name: str, corpora_cache: Path, num_proc: int) -> tuple[dict, float, float, Path]:
    """(shard meta, wall s, CPU s, shard dir) of a fresh build into a temporary cache sharing the corpora."""
    from midsweep.config.data import DataConfig, SourceConfig
    from midsweep.data import prepare_domains

    cache = Path(tempfile.mkdtemp(prefix=f"prep{num_proc}_"))
    (cache / "corpora").symlink_to(corpora_cache / "corpora")
    cfg = DataConfig(domains={domain: SourceConfig(name=domain, heldout_documents=32)}, tokenizer=tokenizer_name,
                     cache_dir=str(cache))
    wall, cpu = time.perf_counter(), cpu_s()
    data = prepare_domains(cfg, num_proc=num_proc)[domain]
    return data.meta, time.perf_counter() - wall, cpu_s() - cpu, data.path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--procs", type=int, default=len(os.sched_getaffinity(0)), help="N (default: usable CPUs)")
    p.add_argument("--domain", default="code", help="built-in corpus to tokenize (default code, ~8 MB)")
    p.add_argument("--tokenizer", help="an HF tokenizer name or directory (default: a BPE trained here)")
    args = p.parse_args()

    from midsweep.config.data import DEFAULT_CACHE_DIR, resolve_cache_dir
    from midsweep.data import ensure_corpus

    corpora = resolve_cache_dir(DEFAULT_CACHE_DIR)
    ensure_corpus(args.domain, corpora)
    name = args.tokenizer or bpe_tokenizer(corpora, Path(tempfile.mkdtemp(prefix="bpe_")))
    print(f"domain {args.domain}, tokenizer {args.tokenizer or 'BPE 8192 (trained here)'}, "
          f"{len(os.sched_getaffinity(0))} usable CPU(s)")
    print(f"{'processes':>9} {'tokens':>12} {'wall s':>8} {'CPU s':>8} {'tokens/s':>10} {'tokens/CPU-s':>13}")
    results = {}
    for n in sorted({1, args.procs}):
        meta, wall, cpu, path = build(args.domain, name, corpora, n)
        tokens = meta["train"]["tokens"] + meta["heldout"]["tokens"]
        results[n] = (tokens / wall, path)
        print(f"{n:>9} {tokens:>12,} {wall:>8.2f} {cpu:>8.2f} {tokens / wall:>10.3g} {tokens / cpu:>13.3g}")
    if args.procs != 1:
        same = all(filecmp.cmp(results[1][1] / f, results[args.procs][1] / f, shallow=False)
                   for f in ("train.bin", "heldout.bin"))
        print(f"speed-up with {args.procs} processes: {results[args.procs][0] / results[1][0]:.2f}x "
              f"(shards identical: {same})")


if __name__ == "__main__":
    main()
