"""`midsweep prepare`: shards built ahead of training, in parallel, the same for any process count; token caps
for streamed sources; a multi-rank job with missing shards stops at once naming the command."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runner import REPO
from midsweep.config.data import DataConfig, SourceConfig
from midsweep.data import prepare_domains
from midsweep.data.shards import MissingShards

SHARED = Path(os.environ["MIDSWEEP_CACHE"])


@pytest.fixture
def fresh_cache(tmp_path):
    """An empty shard cache that shares the built corpora (so no test rebuilds them)."""
    from midsweep.data import ensure_corpus

    for name in ("general", "code", "math", "target_math"):
        ensure_corpus(name, SHARED)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "corpora").symlink_to(SHARED / "corpora")
    return cache


def midsweep(*args: str, cache: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "midsweep.launch.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, MIDSWEEP_CACHE=str(cache), **env))


@pytest.mark.slow
def test_prepare_builds_every_domain_of_the_training_config_then_finds_them_cached(fresh_cache):
    proc = midsweep("prepare", "--num-proc", "1", "experiment=nano_test", cache=fresh_cache)
    assert proc.returncode == 0, proc.stderr
    assert "4 domain(s) tokenized" in proc.stdout
    for line in ("general ", "code ", "math ", "target "):
        assert line in proc.stdout
    again = midsweep("prepare", "experiment=nano_test", cache=fresh_cache)
    assert "0 domain(s) tokenized" in again.stdout and "4 already cached" in again.stdout
    # exactly the shards a training run of that config opens: nothing left to build
    prepare_domains(DataConfig(cache_dir=str(fresh_cache)), build=False)


@pytest.mark.slow
def test_prepare_reports_a_bad_override_in_one_line(fresh_cache):
    proc = midsweep("prepare", "data.domains.general.heldout_documents=0", cache=fresh_cache)
    assert proc.returncode != 0
    assert "data.domains.general.heldout_documents" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow  # spawns tokenizer workers and imports transformers (~10 s)
def test_shards_are_identical_for_any_number_of_processes(tmp_path, fresh_cache):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["Problem Solution Q A The answer is", "def return import"],
                            trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>").save_pretrained(tmp_path / "t")
    domains = {"math": SourceConfig(name="math", heldout_documents=50, max_documents=3000),
               "target": SourceConfig(name="target_math", prompt_field="prompt", response_field="response",
                                      heldout_documents=50, max_documents=3000)}
    built = {}
    for n in (1, 2):
        cfg = DataConfig(domains=domains, tokenizer=str(tmp_path / "t"), cache_dir=str(tmp_path / f"c{n}"))
        (tmp_path / f"c{n}").mkdir()
        (tmp_path / f"c{n}" / "corpora").symlink_to(SHARED / "corpora")
        built[n] = prepare_domains(cfg, num_proc=n)
    for name in domains:
        one, two = built[1][name], built[2][name]
        assert one.fingerprint == two.fingerprint  # the process count is not part of the shards' identity
        assert one.content == two.content is not None
        for f in ("train.bin", "heldout.bin", "train.mask.bin" if name == "target" else "train.bin"):
            assert (one.path / f).read_bytes() == (two.path / f).read_bytes()


def test_max_tokens_caps_what_a_streamed_source_reads(tmp_path):
    docs = tmp_path / "web.jsonl"
    docs.write_text("".join(json.dumps({"text": f"document number {i} " * 5}) + "\n" for i in range(2000)))
    source = SourceConfig(kind="files", data_files=[str(docs)], streaming=True, max_tokens=5000, heldout_documents=10)
    assert source.problems("d") == []
    data = prepare_domains(DataConfig(domains={"web": source}, cache_dir=str(tmp_path / "cache")))["web"]
    doc_tokens = data.train.tokens.size / data.train.num_documents
    assert 5000 <= data.train.tokens.size < 5000 + doc_tokens + 1  # stops at the document crossing the cap
    assert data.heldout.num_documents == 10  # held-out documents do not count against the cap
    uncapped = SourceConfig(kind="files", data_files=[str(docs)], streaming=True)
    assert [p.key for p in uncapped.problems("d")] == ["d.max_tokens"]


@pytest.mark.slow
def test_a_multi_rank_job_with_missing_shards_fails_at_once_naming_prepare(tmp_path, fresh_cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
                   MIDSWEEP_CACHE=str(fresh_cache))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "midsweep.train", "experiment=nano_test", "train.global_batch=8",
             "train.micro_batch=4", "train.device=cpu", f"train.out_dir={tmp_path / 'runs'}",
             f"hydra.run.dir={tmp_path}/h{rank}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode != 0 for p in procs), outs
    assert all("midsweep prepare" in out and "Traceback" not in out for out in outs), outs
    assert not list((fresh_cache / "shards").glob("*/meta.json"))  # nobody tokenized behind the barrier
    (run,) = [p for p in (tmp_path / "runs").iterdir() if p.name != "_hydra"]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "midsweep prepare" in status["reason"]
    with pytest.raises(MissingShards, match="midsweep prepare"):
        prepare_domains(DataConfig(cache_dir=str(fresh_cache)), build=False)


@pytest.mark.parametrize("parts", [1, 3])
def test_a_domain_prepared_in_parts_is_byte_identical_to_one_process(parts, tmp_path, fresh_cache):
    """What `midsweep prepare --slurm` runs as an array of CPU jobs (one part each) and a merge."""
    from midsweep.data import load_tokenizer
    from midsweep.data.parts import merge_parts, parts_dir, prepare_part
    from midsweep.data.shards import prepare_domain

    docs = tmp_path / "web.jsonl"  # a copy of a held-out document in the training stretch is dropped either way
    lines = [{"text": f"document {i} " + "word " * (i % 37)} for i in range(600)]
    lines.insert(50, lines[3])
    docs.write_text("".join(json.dumps(d) + "\n" for d in lines))
    sources = {"web": SourceConfig(kind="files", data_files=[str(docs)], streaming=True, max_tokens=9000,
                                   heldout_documents=20),
               "target": SourceConfig(name="target_math", prompt_field="prompt", response_field="response",
                                      heldout_documents=30, max_tokens=20000)}
    tok = load_tokenizer("byte")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "corpora").symlink_to(SHARED / "corpora")
    for name, source in sources.items():
        one = prepare_domain(name, source, tok, tmp_path / "one")
        for part in reversed(range(parts)):  # array tasks finish in any order
            prepare_part(name, source, tok, fresh_cache, part, parts)
        merged = merge_parts(name, source, tok, fresh_cache, parts)
        assert one.meta["duplicates_dropped"] == merged.meta["duplicates_dropped"]
        assert name != "web" or merged.meta["duplicates_dropped"] == 1
        assert merged.content == one.content and merged.meta["train"] == one.meta["train"]
        for f in ("train.bin", "heldout.bin", *(("train.mask.bin", "heldout.mask.bin") if name == "target" else ())):
            assert (merged.path / f).read_bytes() == (one.path / f).read_bytes(), f
        assert not parts_dir(name, source, tok, fresh_cache).exists()  # merged parts are removed
