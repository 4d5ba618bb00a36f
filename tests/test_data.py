"""Data layer: config checks, tokenizers, sources, and cached token shards with a held-out split."""
from __future__ import annotations

import json
import multiprocessing as mp
import os

import numpy as np
import pytest

from midsweep.config.data import DataConfig, SourceConfig, resolve_cache_dir
from midsweep.data import (ByteTokenizer, DataSourceError, load_tokenizer, prepare_domain, prepare_domains)
from midsweep.data.shards import fingerprint

BYTE = ByteTokenizer()


def docs_of(split) -> list[str]:
    """Decode a byte-tokenized split back into its documents (EOS = 0 ends each)."""
    raw = bytes(np.asarray(split.tokens).tolist())
    assert raw.endswith(b"\0")
    return [d.decode() for d in raw[:-1].split(b"\0")]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def files_source(path, **kw) -> SourceConfig:
    return SourceConfig(kind="files", data_files=[str(path)], **kw)


DOCS = [f"document number {i}: " + "lorem ipsum " * (i % 5 + 1) for i in range(40)]


# ------------------------------------------------------------------------------------------------- config
def _keys(cfg) -> dict[str, str]:
    return {p.key: p.fix for p in cfg.problems("d")}


@pytest.mark.parametrize("kwargs, key", [
    (dict(kind="web"), "d.kind"),
    (dict(name="wikipedia"), "d.name"),
    (dict(kind="hf", name=""), "d.name"),
    (dict(kind="files"), "d.data_files"),
    (dict(kind="files", data_files=["/nonexistent/x.jsonl"]), "d.data_files"),
    (dict(kind="files", data_files=["notes.csv"]), "d.data_files"),
    (dict(kind="hf", name="x", prompt_field="q"), "d.prompt_field"),
    (dict(kind="hf", name="x", streaming=True), "d.max_tokens"),
    (dict(kind="hf", name="x", max_tokens=0), "d.max_tokens"),
    (dict(kind="hf", name="x", heldout_documents=0), "d.heldout_documents"),
    (dict(kind="hf", name="x", max_documents=10, heldout_documents=10), "d.max_documents"),
    (dict(name="target_math"), "d.prompt_field"),
    (dict(name="math", prompt_field="prompt", response_field="response"), "d.text_field"),
])
def test_source_problems_name_key_and_fix(kwargs, key):
    fixes = _keys(SourceConfig(**kwargs))
    assert key in fixes and fixes[key]


def test_unknown_builtin_fix_lists_the_builtins():
    (problem,) = SourceConfig(name="wiki").problems("d")
    assert all(n in problem.fix for n in ("general", "code", "math", "target_math", "target_code"))


def test_default_data_config_is_valid_and_omegaconf_friendly():
    from omegaconf import OmegaConf

    assert DataConfig().problems() == []
    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig),
                          {"domains": {"web": {"kind": "hf", "name": "x", "streaming": True}}})
    data = OmegaConf.to_object(cfg)
    assert set(data.domains) == {"general", "code", "math", "target", "web"}
    assert [p.key for p in data.problems()] == ["data.domains.web.max_tokens"]


def test_bad_domain_name_and_cache_dir_reported():
    cfg = DataConfig(domains={"a/b": SourceConfig(name="math")}, cache_dir="")
    keys = {p.key for p in cfg.problems()}
    assert {"data.domains.a/b", "data.cache_dir"} <= keys


def test_default_cache_dir_resolves_with_and_without_home(monkeypatch):
    monkeypatch.delenv("MIDSWEEP_CACHE", raising=False)
    monkeypatch.setenv("HOME", "/home/someone")
    assert resolve_cache_dir(DataConfig().cache_dir) == resolve_cache_dir("/home/someone/.cache/midsweep")
    monkeypatch.delenv("HOME")
    assert str(resolve_cache_dir(DataConfig().cache_dir)) == "/tmp/.cache/midsweep"
    monkeypatch.setenv("MIDSWEEP_CACHE", "/scratch/c")
    assert str(resolve_cache_dir(DataConfig().cache_dir)) == "/scratch/c"


# --------------------------------------------------------------------------------------------- tokenizers
def test_byte_tokenizer_roundtrip_and_strips_nul():
    ids = BYTE.encode("héllo\0 wörld")
    assert BYTE.vocab_size == 256 and BYTE.eos_id == 0 and 0 not in ids
    assert BYTE.decode(ids) == "héllo wörld"
    assert load_tokenizer("byte").name == "byte"


@pytest.fixture(scope="module")
def local_hf_tokenizer(tmp_path_factory):
    """A tiny word-level tokenizer trained here and saved like a hub tokenizer (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(DOCS + ["Q A"], trainers.WordLevelTrainer(special_tokens=["<unk>", "<eos>"]))
    path = tmp_path_factory.mktemp("tok")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>").save_pretrained(path)
    return str(path)


@pytest.mark.slow  # importing transformers takes ~5 s
def test_hf_tokenizer_loaded_by_path_tokenizes_shards(local_hf_tokenizer, tmp_path):
    tok = load_tokenizer(local_hf_tokenizer)
    assert tok.eos_id == 1 and tok.vocab_size > 10
    assert tok.decode(tok.encode("lorem ipsum")) == "lorem ipsum"
    src = files_source(write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS]), heldout_documents=5)
    data = prepare_domain("web", src, tok, tmp_path / "cache")
    train = np.asarray(data.train.tokens)
    assert train.dtype == np.uint16 and (train == tok.eos_id).sum() == len(DOCS) - 5
    first_doc = train[: int(np.argmax(train == tok.eos_id))]
    assert tok.decode(first_doc) == tok.decode(tok.encode(DOCS[5]))


def test_missing_hf_tokenizer_names_the_fix(tmp_path):
    with pytest.raises(ValueError, match="data.tokenizer"):
        load_tokenizer(str(tmp_path / "no-such-tokenizer"))


# ------------------------------------------------------------------------------------------------ sources
@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "txt"])
def test_local_files_give_expected_tokens(tmp_path, fmt):
    path = tmp_path / f"docs.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, [{"text": d} for d in DOCS])
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": DOCS}), path)
    else:
        path.write_text("\n".join(DOCS) + "\n")  # one line = one document
    data = prepare_domain("d", files_source(path, heldout_documents=3), BYTE, tmp_path / "cache")
    assert docs_of(data.heldout) == DOCS[:3]
    assert docs_of(data.train) == DOCS[3:]
    assert data.train.loss_mask is None and data.train.num_documents == len(DOCS) - 3


def test_hf_local_dataset_dirs(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_dict({"body": DOCS}).save_to_disk(str(tmp_path / "single"))
    DatasetDict({"validation": Dataset.from_dict({"body": DOCS[:12]})}).save_to_disk(str(tmp_path / "multi"))
    src = SourceConfig(kind="hf", name=str(tmp_path / "single"), text_field="body", heldout_documents=2)
    assert docs_of(prepare_domain("a", src, BYTE, tmp_path / "c").train) == DOCS[2:]
    src = SourceConfig(kind="hf", name=str(tmp_path / "multi"), split="validation", text_field="body",
                       heldout_documents=2)
    assert docs_of(prepare_domain("b", src, BYTE, tmp_path / "c").train) == DOCS[2:12]
    src.revision = "v1"
    with pytest.raises(DataSourceError, match=r"domain 'b'.*saved to disk.*remove data.domains.b.revision"):
        prepare_domain("b", src, BYTE, tmp_path / "c")
    # a packaged builder by name with data_files, streamed
    write_jsonl(tmp_path / "s.jsonl", [{"text": d} for d in DOCS])
    src = SourceConfig(kind="hf", name="json", data_files=[str(tmp_path / "s.jsonl")], streaming=True,
                       max_documents=10, heldout_documents=2)
    assert docs_of(prepare_domain("c", src, BYTE, tmp_path / "c").train) == DOCS[2:10]


def test_missing_file_field_and_empty_data_errors_name_the_fix(tmp_path):
    with pytest.raises(DataSourceError, match=r"domain 'web'.*no file matches.*data.domains.web.data_files"):
        prepare_domain("web", files_source(tmp_path / "gone.jsonl"), BYTE, tmp_path / "c")
    path = write_jsonl(tmp_path / "d.jsonl", [{"content": d} for d in DOCS])
    with pytest.raises(DataSourceError, match=r"no field\(s\) \['text'\].*content.*text_field"):
        prepare_domain("web", files_source(path), BYTE, tmp_path / "c")
    empty = write_jsonl(tmp_path / "e.jsonl", [{"text": ""}])
    with pytest.raises(DataSourceError, match="no non-empty documents"):
        prepare_domain("web", files_source(empty), BYTE, tmp_path / "c")
    with pytest.raises(DataSourceError, match="heldout_documents"):
        prepare_domain("web", files_source(path, text_field="content", heldout_documents=100), BYTE, tmp_path / "c")

    script = tmp_path / "scripted"  # a hub-style dataset whose data comes from a loading script
    script.mkdir()
    (script / "scripted.py").write_text("import datasets\n")
    with pytest.raises(DataSourceError, match=r"domain 'web'.*loading script.*data.domains.web.name.*parquet/json"):
        prepare_domain("web", SourceConfig(kind="hf", name=str(script)), BYTE, tmp_path / "c")

# ------------------------------------------------------------------------------------------------- shards
def test_second_prepare_is_a_cache_hit_with_identical_tokens(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS])
    first = prepare_domain("d", files_source(path, heldout_documents=4), BYTE, tmp_path / "c")
    second = prepare_domain("d", files_source(path, heldout_documents=4), BYTE, tmp_path / "c")
    assert not first.cache_hit and second.cache_hit and first.path == second.path
    assert np.array_equal(first.train.tokens, second.train.tokens)
    assert np.array_equal(first.heldout.tokens, second.heldout.tokens)
    assert json.loads((second.path / "meta.json").read_text())["train"]["documents"] == len(DOCS) - 4


def test_fingerprint_follows_the_source(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS])
    base = prepare_domain("d", files_source(path, heldout_documents=1), BYTE, tmp_path / "c").fingerprint
    capped = files_source(path, max_documents=30, heldout_documents=1)
    assert prepare_domain("d", capped, BYTE, tmp_path / "c").fingerprint != base
    other = write_jsonl(tmp_path / "other.jsonl", [{"text": d} for d in reversed(DOCS)])
    assert prepare_domain("d", files_source(other, heldout_documents=1), BYTE, tmp_path / "c").fingerprint != base
    write_jsonl(path, [{"text": d.upper()} for d in DOCS])  # same path, edited content
    os.utime(path, ns=(1, 1))
    edited = prepare_domain("d", files_source(path, heldout_documents=1), BYTE, tmp_path / "c")
    assert edited.fingerprint != base and not edited.cache_hit and docs_of(edited.train)[0] == DOCS[1].upper()
    hub = SourceConfig(kind="hf", name="org/corpus")  # a pinned hub revision is other data
    assert fingerprint("d", hub, BYTE)[0] != fingerprint("d", SourceConfig(kind="hf", name="org/corpus",
                                                                          revision="3f96885"), BYTE)[0]


def test_the_content_digest_follows_the_tokens_and_masks_not_the_files(tmp_path):
    def content(name, records, **kw):
        source = files_source(write_jsonl(tmp_path / f"{name}.jsonl", records), heldout_documents=4, **kw)
        return prepare_domain("d", source, BYTE, tmp_path / "c")

    records = [{"text": d} for d in DOCS]
    base = content("base", records)
    copy = content("copy", records)  # the same documents in another file: other shards, the same data
    assert copy.fingerprint != base.fingerprint and copy.content == base.content is not None
    assert content("train_edit", records[:-1] + [{"text": DOCS[-1] + "!"}]).content != base.content
    assert content("heldout_edit", [{"text": DOCS[0] + "!"}] + records[1:]).content != base.content
    # the same tokens as prompt/response pairs: only the loss mask differs
    qa = content("qa", [{"q": d[:10], "a": d[10:]} for d in DOCS], prompt_field="q", response_field="a")
    plain = content("plain", [{"text": d[:10] + "\n" + d[10:]} for d in DOCS])
    assert np.array_equal(qa.train.tokens, plain.train.tokens) and qa.content != plain.content


def test_heldout_disjoint_from_train_and_stable(tmp_path):
    records = [{"text": d} for d in DOCS] + [{"text": DOCS[2]}]  # a later copy of a held-out document
    path = write_jsonl(tmp_path / "d.jsonl", records)
    data = prepare_domain("d", files_source(path, heldout_documents=8), BYTE, tmp_path / "c")
    heldout, train = docs_of(data.heldout), docs_of(data.train)
    assert len(heldout) == 8 and not set(heldout) & set(train)
    assert data.meta["duplicates_dropped"] == 1
    capped = prepare_domain("d", files_source(path, heldout_documents=8, max_documents=20), BYTE, tmp_path / "c")
    assert docs_of(capped.heldout) == heldout and len(docs_of(capped.train)) == 12


def test_prompt_response_mask(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": f"What is {i}+{i}?", "a": f"It is {2 * i}."} for i in range(6)])
    src = files_source(path, prompt_field="q", response_field="a", heldout_documents=1)
    split = prepare_domain("qa", src, BYTE, tmp_path / "c").train
    text = bytes(np.asarray(split.tokens).tolist())
    first = b"What is 1+1?\nIt is 2.\0"
    assert text.startswith(first)
    mask = np.asarray(split.loss_mask)[: len(first)]
    prompt_len = len(b"What is 1+1?\n")
    assert mask[:prompt_len].sum() == 0 and mask[prompt_len:].all()  # response and its EOS are trained on
    x, m = split.sequence(0, 16)
    assert x.dtype == np.int64 and len(x) == len(m) == 17 and list(m) == list(np.asarray(split.loss_mask)[:17])


def test_sequences_are_non_overlapping_windows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS])
    split = prepare_domain("d", files_source(path, heldout_documents=1), BYTE, tmp_path / "c").train
    L, n = 32, split.num_sequences(32)
    assert n == (len(split.tokens) - 1) // L
    x0, m0 = split.sequence(0, L)
    x1, _ = split.sequence(1, L)
    assert x0[-1] == x1[0] and m0.dtype == np.uint8 and m0.all()
    assert np.array_equal(np.concatenate([split.sequence(i, L)[0][:-1] for i in range(n)]),
                          np.asarray(split.tokens[: n * L], dtype=np.int64))
    with pytest.raises(IndexError):
        split.sequence(n, L)


def _prepare_in_child(args):
    path, cache = args
    return prepare_domain("d", files_source(path, heldout_documents=2), BYTE, cache).cache_hit


def test_concurrent_processes_build_once(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in DOCS * 50])
    with mp.get_context("fork").Pool(3) as pool:
        hits = pool.map(_prepare_in_child, [(path, tmp_path / "c")] * 3)
    assert sorted(hits) == [False, True, True]
    assert len(list((tmp_path / "c" / "shards").iterdir())) == 2  # the shard dir and its lock file


def test_prepare_domains_builtin_target(tmp_path):
    cfg = DataConfig(cache_dir=str(tmp_path))
    out = prepare_domains(cfg, ["target"])
    assert list(out) == ["target"]
    target = out["target"]
    assert target.train.loss_mask is not None and target.heldout.num_documents == 400
    assert all(d.startswith("Q: ") and "\nA: " in d for d in docs_of(target.heldout))
    with pytest.raises(ValueError, match="unknown domain"):
        prepare_domains(cfg, ["nope"])
