"""Built-in offline corpora: deterministic, sizeable, and each one is what its name says."""
from __future__ import annotations

import ast
import multiprocessing as mp
import re
from fractions import Fraction

import pytest

from midsweep.config.data import BUILTIN_CORPORA
from midsweep.data import corpora


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """All built-in corpora, built once for the session."""
    path = tmp_path_factory.mktemp("corpora")
    for name in BUILTIN_CORPORA:
        corpora.ensure_corpus(name, path)
    return path


def records(name, cache):
    return list(corpora.read_corpus(name, cache))


def text_of(r: dict) -> str:
    return r.get("text") or r["prompt"] + "\n" + r["response"]


@pytest.mark.parametrize("name, min_mb", [("general", 1.8), ("code", 5), ("math", 3), ("target_math", 1),
                                          ("target_code", 1)])
def test_corpora_are_sizeable_and_unique(corpus_dir, name, min_mb):
    texts = [text_of(r) for r in records(name, corpus_dir)]
    assert sum(map(len, texts)) > min_mb * 1e6
    assert len(set(texts)) == len(texts)  # no duplicates: the held-out prefix never repeats in training


def test_cheap_corpora_rebuild_identically(corpus_dir, tmp_path):
    for name in ("code", "math", "target_math"):
        again = corpora.ensure_corpus(name, tmp_path)
        assert again.read_bytes() == corpora.corpus_path(name, corpus_dir).read_bytes()


@pytest.mark.slow
def test_stdlib_corpora_rebuild_identically(corpus_dir, tmp_path):
    corpora._stdlib_extracts.cache_clear()  # re-parse the stdlib from scratch
    for name in ("general", "target_code"):
        again = corpora.ensure_corpus(name, tmp_path)
        assert again.read_bytes() == corpora.corpus_path(name, corpus_dir).read_bytes()


def test_built_corpus_is_reused_not_rebuilt(corpus_dir):
    path = corpora.corpus_path("math", corpus_dir)
    before = path.stat().st_mtime_ns
    assert corpora.ensure_corpus("math", corpus_dir) == path and path.stat().st_mtime_ns == before


def _build_math(cache):
    return str(corpora.ensure_corpus("math", cache))


def test_concurrent_builds_leave_one_complete_file(tmp_path):
    with mp.get_context("fork").Pool(2) as pool:
        paths = pool.map(_build_math, [tmp_path] * 2)
    assert len(set(paths)) == 1
    assert sorted(p.name for p in (tmp_path / "corpora").iterdir()) == ["math-v1.jsonl", "math-v1.jsonl.lock"]
    assert len(records("math", tmp_path)) == 24_000


def test_unknown_corpus_lists_the_builtins(tmp_path):
    with pytest.raises(ValueError, match="target_code"):
        corpora.ensure_corpus("wiki", tmp_path)


def test_general_is_prose(corpus_dir):
    text = "\n".join(r["text"] for r in records("general", corpus_dir))
    letters = sum(c.isalpha() or c.isspace() for c in text)
    assert letters / len(text) > 0.9
    assert text.count("def ") < len(text) / 50_000 and text.count("=") < len(text) / 2_000
    assert len(re.findall(r"\b(the|of|is|to|and)\b", text)) > len(text.split()) / 10  # English function words


def test_code_is_python_source(corpus_dir):
    docs = records("code", corpus_dir)
    assert len(docs) > 300
    for r in docs[::10]:
        ast.parse(r["text"])
    assert sum("def " in r["text"] for r in docs) > 0.8 * len(docs)


def test_target_code_pairs_are_signature_docstring_then_body(corpus_dir):
    pairs = records("target_code", corpus_dir)
    for r in pairs[::50]:
        assert r["prompt"].startswith(("def ", "async def "))
        tree = ast.parse(r["prompt"] + "\n" + r["response"])  # together they are the whole function
        fn = tree.body[0]
        assert isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(fn)
        assert len(fn.body) >= 2


_NUM = r"-?\d+(?:\.\d+)?"
_STEP = re.compile(rf"(?<![\w./])(?<![-+*/] )({_NUM}(?: [-+*/] {_NUM})+) = ({_NUM})(?![\d/])")


def _check_steps(text: str) -> int:
    """Assert every arithmetic claim 'a op b [op c ...] = d' written in ``text`` is exact; return the count."""
    found = 0
    for lhs, rhs in _STEP.findall(text):
        tokens = lhs.split(" ")
        terms = [Fraction(tokens[0])]  # evaluate with * and / binding tighter than + and -
        for op, num in zip(tokens[1::2], map(Fraction, tokens[2::2])):
            if op in "*/":
                terms[-1] = terms[-1] * num if op == "*" else terms[-1] / num
            else:
                terms.append(num if op == "+" else -num)
        assert sum(terms) == Fraction(rhs), text
        found += 1
    return found


@pytest.mark.parametrize("name", ["math", "target_math"])
def test_math_worked_steps_and_answers_are_correct(corpus_dir, name):
    problems = records(name, corpus_dir)
    assert len({p["skill"] for p in problems}) >= 8
    with pytest.raises(AssertionError):
        _check_steps("so 394 * 10 / 100 = 3.94")  # the checker does catch a wrong claim
    sample = problems[::3]
    assert sum(_check_steps(text_of(p)) for p in sample) > len(sample)
    for p in problems:  # recompute the answers of two skills straight from the question
        question = p.get("text", p.get("prompt"))
        if p["skill"] == "linear":
            a, sign, b, c = re.search(r"(\d+)x ([-+]) (\d+) = (-?\d+)", question).groups()
            b = int(b) if sign == "+" else -int(b)
            assert int(a) * int(p["answer"]) + b == int(c)
        elif p["skill"] == "arith":
            a, op, b, c = re.search(r"(\d+) ([-+]) (\d+) \* (\d+)", question).groups()
            assert int(p["answer"]) == int(a) + (1 if op == "+" else -1) * int(b) * int(c)
        elif p["skill"] == "fractions":
            a, b, c, d = map(int, re.search(r"(\d+)/(\d+) (?:and|\+) (\d+)/(\d+)", question).groups())
            assert Fraction(p["answer"]) == Fraction(a, b) + Fraction(c, d)


def test_target_math_is_close_to_math_but_worded_differently(corpus_dir):
    math_q = {r["text"].split("\nSolution:")[0].removeprefix("Problem: ") for r in records("math", corpus_dir)}
    target = records("target_math", corpus_dir)
    assert {r["skill"] for r in target} == {r["skill"] for r in records("math", corpus_dir)}
    assert not {r["prompt"].removeprefix("Q: ") for r in target} & math_q
