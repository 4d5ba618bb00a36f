"""Built-in offline corpora, made on first use from the local Python install and a seeded generator.

Each corpus is written once to ``<cache>/corpora/<name>-v<VERSION>.jsonl`` (tmp file + rename, under a
``filelock`` lock so concurrent processes build it once) and reused. Records are ``{"text"}`` or
``{"prompt", "response"}``; documents are ordered by a content hash so the first N (the held-out split) are a
fair sample.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import re
import sysconfig
import textwrap
from pathlib import Path
from typing import Callable, Iterator

from filelock import FileLock

from midsweep import rundir
from midsweep.config.data import BUILTIN_CORPORA
from midsweep.data.mathgen import unique_problems

VERSION = 1
"""Bump when any builder's output changes; old cache files are then ignored."""

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "lib2to3", "ensurepip", "turtledemo", "pydoc_data"}
_SKIP_FILES = re.compile(r"^(_sysconfigdata.*|test_.*|.*_test)\.py$")  # machine-specific data, tests
_CODE_MAX_FILE = 100_000  # bytes; bigger files are mostly tables or generated code
_CODE_BUDGET = 8_000_000  # bytes of source in the code corpus
_DOC_CHARS = 2_000  # prose documents are paragraphs grouped up to about this size


def corpus_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / "corpora" / f"{name}-v{VERSION}.jsonl"


def ensure_corpus(name: str, cache_dir: Path) -> Path:
    """Path of the built corpus ``name``, building it first if this cache does not have it yet."""
    if name not in BUILDERS:
        raise ValueError(f"unknown built-in corpus {name!r}; use one of {', '.join(BUILDERS)}")
    path = corpus_path(name, cache_dir)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(path.name + ".lock"))):
        if path.exists():  # another process built it while we waited
            return path
        with rundir.atomic_open(path) as fh:
            for record in BUILDERS[name]():
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def read_corpus(name: str, cache_dir: Path) -> Iterator[dict]:
    """Records of built-in corpus ``name`` (built on first use)."""
    with open(ensure_corpus(name, cache_dir), encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _by_hash(docs: list[dict]) -> list[dict]:
    return sorted(docs, key=lambda d: hashlib.sha1(json.dumps(d, sort_keys=True).encode()).digest())


# ----------------------------------------------------------------------------------------------- stdlib
def _stdlib_files(suffixes: tuple[str, ...] = (".py",)) -> list[Path]:
    """Standard-library files with these suffixes, tests and installed packages excluded, in sorted order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _SKIP_DIRS and not x.startswith(("test", "idle_test", "config-")))
        out += [Path(d) / f for f in sorted(files) if f.endswith(suffixes) and not _SKIP_FILES.match(f)]
    return out


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _definitions(body: list[ast.stmt]) -> Iterator[ast.AST]:
    """Classes and functions in a statement list, nested ones included (no walk into expressions)."""
    for node in body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
            yield from _definitions(node.body)
        elif isinstance(node, (ast.If, ast.Try)):
            yield from _definitions(node.body + node.orelse)


_CODE_CHARS = re.compile(r"[={}\[\]<>#|\\@$`~^]")
_PROSE_WORD = re.compile(r"[A-Za-z][a-z]+")


def _prose(paragraph: str) -> str | None:
    """The paragraph reflowed onto one line if it reads as English prose, else None."""
    lines = paragraph.strip("\n").splitlines()
    if not lines or any(ln.lstrip().startswith((">>>", "..", "$ ", "-", "*", "+", ":")) for ln in lines):
        return None
    indent = len(lines[0]) - len(lines[0].lstrip())
    if any(len(ln) - len(ln.lstrip()) > indent for ln in lines[1:]):  # indented blocks are code or tables
        return None
    text = " ".join(ln.strip() for ln in lines)
    words = text.split()
    if len(words) < 6 or not text[0].isalpha():
        return None
    if len(_CODE_CHARS.findall(text)) > len(text) / 80 or len(_PROSE_WORD.findall(text)) < 0.75 * len(words):
        return None
    return text


def _comment_blocks(source: str) -> Iterator[str]:
    """Runs of full-line ``#`` comments, each as one paragraph."""
    block: list[str] = []
    for line in source.splitlines() + [""]:
        s = line.strip()
        if s.startswith("# ") or s == "#":
            block.append(s[1:].strip())
        elif block:
            yield "\n".join(block)
            block = []


def _group(paragraphs: list[str]) -> Iterator[str]:
    """Paragraphs joined with blank lines into documents of about ``_DOC_CHARS`` characters."""
    doc: list[str] = []
    for para in paragraphs:
        doc.append(para)
        if sum(map(len, doc)) >= _DOC_CHARS:
            yield "\n\n".join(doc)
            doc = []
    if doc and sum(map(len, doc)) >= 200:
        yield "\n\n".join(doc)


@functools.lru_cache(maxsize=1)
def _stdlib_extracts() -> tuple[list[list[str]], list[dict]]:
    """One parse of the stdlib: per module its docstrings and comment blocks, and all documented functions
    as prompt/response pairs. Cached, so building ``general`` and ``target_code`` in one process parses once."""
    texts, pairs = [], []
    for path in _stdlib_files():
        source = _read(path)
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines, defs = source.splitlines(), list(_definitions(tree.body))
        texts.append([d for d in map(ast.get_docstring, [tree, *defs]) if d] + list(_comment_blocks(source)))
        pairs += filter(None, (_function_pair(node, lines) for node in defs))
    return texts, pairs


def _function_pair(node: ast.AST, lines: list[str]) -> dict | None:
    """Prompt = signature + docstring, response = the rest of the body; None for classes and odd sizes."""
    if isinstance(node, ast.ClassDef) or len(node.body) < 2 or ast.get_docstring(node) is None:
        return None
    indent = len(lines[node.lineno - 1]) - len(lines[node.lineno - 1].lstrip())
    head = _dedent(lines[node.lineno - 1: node.body[0].end_lineno], indent)
    body = _dedent(lines[node.body[0].end_lineno: node.end_lineno], indent)
    return {"prompt": head, "response": body} if 40 <= len(body) <= 3_000 and body.count("\n") < 80 else None


def build_general() -> Iterator[dict]:
    """Prose paragraphs of stdlib docstrings, comments, text files and help topics, de-duplicated."""
    from pydoc_data.topics import topics  # the language reference's help() pages: a dict of text

    seen: set[str] = set()
    docs = []

    def add(texts: list[str]) -> None:
        paras = []
        for raw in texts:
            for para in re.split(r"\n\s*\n", raw):
                text = _prose(para)
                if text and text not in seen:
                    seen.add(text)
                    paras.append(text)
        docs.extend({"text": d} for d in _group(paras))

    for module_texts in _stdlib_extracts()[0]:
        add(module_texts)
    for key in sorted(topics):
        add([textwrap.dedent(topics[key])])
    for path in _stdlib_files((".txt", ".rst")):
        add([_read(path)])
    return iter(_by_hash(docs))


def build_code() -> Iterator[dict]:
    """Whole stdlib source files (tests, tables and files over 100 kB skipped), about 8 MB in all."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(_stdlib_files(), key=lambda p: hashlib.sha1(str(p.relative_to(root)).encode()).digest())
    total = 0
    for path in files:
        text = _read(path)
        if not 200 <= len(text) <= _CODE_MAX_FILE:
            continue
        if total + len(text) > _CODE_BUDGET:
            break
        total += len(text)
        yield {"text": text}


def build_target_code() -> Iterator[dict]:
    """Prompt = a stdlib function's signature and docstring, response = the rest of its body (de-duplicated)."""
    unique = {(p["prompt"], p["response"]): p for p in _stdlib_extracts()[1]}
    return iter(_by_hash(list(unique.values())))


def _dedent(lines: list[str], indent: int) -> str:
    return "\n".join(ln[indent:] if not ln[:indent].strip() else ln.lstrip() for ln in lines)


def build_math(count: int = 24_000) -> Iterator[dict]:
    for p in unique_problems(1234, 0, count):
        yield {"text": f"Problem: {p['question']}\nSolution: {p['steps']} The answer is {p['answer']}.",
               "answer": p["answer"], "skill": p["skill"]}


def build_target_math(count: int = 8_000) -> Iterator[dict]:
    for p in unique_problems(4321, 1, count):
        yield {"prompt": f"Q: {p['question']}", "response": f"A: {p['steps']} Final answer: {p['answer']}",
               "answer": p["answer"], "skill": p["skill"]}


BUILDERS: dict[str, Callable[[], Iterator[dict]]] = {
    "general": build_general, "code": build_code, "math": build_math,
    "target_math": build_target_math, "target_code": build_target_code,
}
assert set(BUILDERS) == set(BUILTIN_CORPORA), "config.data.BUILTIN_CORPORA and BUILDERS disagree"
