"""Built-in offline corpora, made on first use from the local Python install and a seeded generator.

Each corpus is written once to ``<cache>/corpora/<name>-v<VERSION>.jsonl`` (tmp file + rename, under a file
lock so concurrent processes build it once) and reused. Records are ``{"text"}`` or ``{"prompt", "response"}``;
documents are ordered by a content hash so the first N (the held-out split) are a fair sample.
"""
from __future__ import annotations

import ast
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import sysconfig
import textwrap
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

from midsweep.config.data import BUILTIN_CORPORA

VERSION = 1
"""Bump when any builder's output changes; old cache files are then ignored."""

_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "lib2to3", "ensurepip", "turtledemo", "pydoc_data"}
_SKIP_FILES = re.compile(r"^(_sysconfigdata.*|test_.*|.*_test)\.py$")  # machine-specific data, tests
_CODE_MAX_FILE = 100_000  # bytes; bigger files are mostly tables or generated code
_CODE_BUDGET = 8_000_000  # bytes of source in the code corpus
_DOC_CHARS = 2_000  # prose documents are paragraphs grouped up to about this size


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive ``fcntl`` lock on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def corpus_path(name: str, cache_dir: Path) -> Path:
    return Path(cache_dir) / "corpora" / f"{name}-v{VERSION}.jsonl"


def ensure_corpus(name: str, cache_dir: Path) -> Path:
    """Path of the built corpus ``name``, building it first if this cache does not have it yet."""
    if name not in BUILDERS:
        raise ValueError(f"unknown built-in corpus {name!r}; use one of {', '.join(BUILDERS)}")
    path = corpus_path(name, cache_dir)
    if path.exists():
        return path
    with file_lock(path.with_name(path.name + ".lock")):
        if path.exists():  # another process built it while we waited
            return path
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                for record in BUILDERS[name]():
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
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


# ------------------------------------------------------------------------------------------------- math
# Each skill draws numbers from ``rng`` and returns (question, worked steps, answer) in one of two wordings:
# style 0 for the ``math`` corpus, style 1 for ``target_math``. Every "a op b = c" in the steps is exact.
def _n(x: Fraction | int) -> str:
    """Exact decimal for integers and cents, else a reduced fraction."""
    x = Fraction(x)
    if x.denominator == 1:
        return str(x.numerator)
    if 100 % x.denominator == 0:
        return f"{float(x):.2f}".rstrip("0")
    return f"{x.numerator}/{x.denominator}"


_NAMES = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kira", "Liam", "Maya",
          "Noah", "Omar", "Priya", "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Victor", "Wen", "Yara", "Zoe"]
_ITEMS = ["apples", "pencils", "stickers", "marbles", "books", "cookies", "stamps", "cards", "shells", "tickets"]


def _arith(rng: random.Random, s: int):
    a, b, c = rng.randint(2, 99), rng.randint(2, 30), rng.randint(2, 30)
    op = rng.choice("+-")
    bc = b * c
    ans = a + bc if op == "+" else a - bc
    q = (f"Compute {a} {op} {b} * {c}.", f"What is the value of {a} {op} {b} * {c}?")[s]
    steps = ([f"Multiplication comes first: {b} * {c} = {bc}.", f"Then {a} {op} {bc} = {ans}."],
             [f"Do the product before the {'sum' if op == '+' else 'difference'}: {b} * {c} = {bc},",
              f"and {a} {op} {bc} = {ans}."])[s]
    return q, steps, ans


def _percent(rng: random.Random, s: int):
    price, r = rng.randint(8, 400), rng.choice([5, 10, 15, 20, 25, 30, 40, 50, 60, 75])
    off = Fraction(price * r, 100)
    new = price - off
    item = rng.choice(["jacket", "lamp", "bicycle", "chair", "backpack", "kettle"])
    q = (f"A {item} costs ${price}. It is on sale for {r}% off. What is the sale price?",
         f"The price of a {item} is ${price}, and a coupon takes {r}% off. How much do you pay?")[s]
    steps = ([f"The discount is {price} * {r} / 100 = {_n(off)} dollars.",
              f"The sale price is {price} - {_n(off)} = {_n(new)}."],
             [f"{r}% of {price} is {price} * {r} / 100 = {_n(off)}.",
              f"Subtracting: {price} - {_n(off)} = {_n(new)} dollars."])[s]
    return q, steps, _n(new)


def _linear(rng: random.Random, s: int):
    x, a, b = rng.randint(-20, 30), rng.randint(2, 12), rng.choice([-1, 1]) * rng.randint(1, 50)
    c = a * x + b
    move = f"subtract {b} from both sides: {c} - {b}" if b > 0 else f"add {-b} to both sides: {c} + {-b}"
    sb = f"+ {b}" if b > 0 else f"- {-b}"
    q = (f"Solve for x: {a}x {sb} = {c}.", f"Find x if {a}x {sb} = {c}.")[s]
    steps = ([f"First {move} = {c - b}, so {a}x = {c - b}.", f"Divide by {a}: x = {c - b} / {a} = {x}."],
             [f"To isolate the x term, {move} = {c - b}.", f"Hence x = {c - b} / {a} = {x}."])[s]
    return q, steps, x


def _rate(rng: random.Random, s: int):
    speed, hours = rng.randint(3, 120), rng.randint(2, 12)
    dist = speed * hours
    if s == 0:
        q = f"A train covers {dist} km in {hours} hours at a constant speed. What is its speed in km per hour?"
        return q, [f"Speed is distance divided by time: {dist} / {hours} = {speed} km per hour."], speed
    q = f"A cyclist rides at {speed} km/h for {hours} hours. How far does she go?"
    return q, [f"Distance equals speed times time: {speed} * {hours} = {dist} km."], dist


def _fractions(rng: random.Random, s: int):
    a, b, c, d = rng.randint(1, 9), rng.randint(2, 12), rng.randint(1, 9), rng.randint(2, 12)
    total = Fraction(a, b) + Fraction(c, d)
    den = b * d
    q = (f"Add the fractions {a}/{b} and {c}/{d}.", f"What is {a}/{b} + {c}/{d} in lowest terms?")[s]
    steps = [f"Over the common denominator {b} * {d} = {den}, "
             f"the numerators are {a} * {d} = {a * d} and {c} * {b} = {c * b}.",
             f"Their sum is {a * d} + {c * b} = {a * d + c * b}, so the total is {a * d + c * b}/{den} = {total}."]
    if s == 1:
        steps = [f"Cross-multiply: {a} * {d} = {a * d} and {c} * {b} = {c * b}; the denominator is {b} * {d} = {den}.",
                 f"Add the numerators: {a * d} + {c * b} = {a * d + c * b}. In lowest terms that is {total}."]
    return q, steps, total


def _shopping(rng: random.Random, s: int):
    who, item = rng.choice(_NAMES), rng.choice(_ITEMS)
    start, packs, per, gone = rng.randint(0, 40), rng.randint(2, 9), rng.randint(2, 12), rng.randint(1, 20)
    got = packs * per
    have = start + got
    left = have - gone
    q = (f"{who} has {start} {item}, buys {packs} packs of {per} {item}, then gives away {gone}. How many are left?",
         f"{who} starts with {start} {item}. {who} gets {packs} boxes with {per} {item} each and later loses {gone}. "
         f"How many {item} does {who} have now?")[s]
    steps = [f"New {item}: {packs} * {per} = {got}.", f"Total: {start} + {got} = {have}.",
             f"Left: {have} - {gone} = {left}."]
    return q, steps, left


def _average(rng: random.Random, s: int):
    n = rng.randint(3, 6)
    vals = [rng.randint(10, 99) for _ in range(n)]
    vals[-1] += -sum(vals) % n  # make the mean a whole number
    total = sum(vals)
    q = (f"What is the average of {', '.join(map(str, vals))}?",
         f"{rng.choice(_NAMES)} scored {', '.join(map(str, vals))} on {n} quizzes. What is the mean score?")[s]
    partial, steps = vals[0], []
    for v in vals[1:]:
        steps.append(f"{partial} + {v} = {partial + v}.")
        partial += v
    steps.append(f"Dividing by the count: {total} / {n} = {total // n}.")
    return q, steps, total // n


def _area(rng: random.Random, s: int):
    w, h = rng.randint(2, 60), rng.randint(2, 60)
    if s == 0:
        q = f"A rectangle is {w} m wide and {h} m long. What is its area?"
        return q, [f"Area is width times length: {w} * {h} = {w * h} square meters."], w * h
    q = f"How much fence goes around a {w} m by {h} m rectangular garden?"
    return q, [f"Two widths and two lengths: {w} + {h} = {w + h}, and 2 * {w + h} = {2 * (w + h)} meters."], 2 * (w + h)


def _ratio(rng: random.Random, s: int):
    a, b, unit = rng.randint(1, 9), rng.randint(1, 9), rng.randint(2, 40)
    total = (a + b) * unit
    who1, who2 = rng.sample(_NAMES, 2)
    q = (f"{who1} and {who2} share ${total} in the ratio {a}:{b}. How much does {who1} get?",
         f"Split {total} dollars between {who1} and {who2} so their shares are in ratio {a} to {b}. "
         f"What is {who1}'s share?")[s]
    steps = [f"There are {a} + {b} = {a + b} parts.", f"One part is {total} / {a + b} = {unit}.",
             f"{who1} gets {a} * {unit} = {a * unit} dollars."]
    return q, steps, a * unit


def _convert(rng: random.Random, s: int):
    unit, small, factor = rng.choice([("hours", "minutes", 60), ("kilometers", "meters", 1000), ("days", "hours", 24),
                                      ("meters", "centimeters", 100), ("kilograms", "grams", 1000)])
    x = rng.randint(2, 48)
    q = (f"How many {small} are in {x} {unit}?", f"Convert {x} {unit} to {small}.")[s]
    return q, [f"Each of the {unit} is {factor} {small}, so {x} * {factor} = {x * factor} {small}."], x * factor


_SKILLS: list[Callable] = [_arith, _percent, _linear, _rate, _fractions, _shopping, _average, _area, _ratio, _convert]


def math_problem(rng: random.Random, style: int) -> dict:
    """One problem: ``question``, ``steps`` (worked solution), ``answer`` and ``skill``."""
    skill = rng.choice(_SKILLS)
    q, steps, ans = skill(rng, style)
    return {"question": q, "steps": " ".join(steps), "answer": str(ans), "skill": skill.__name__[1:]}


def _unique_problems(seed: int, style: int, count: int) -> Iterator[dict]:
    """``count`` distinct problems (repeats would leak held-out questions into training)."""
    rng, seen = random.Random(seed), set()
    while len(seen) < count:
        p = math_problem(rng, style)
        if p["question"] not in seen:
            seen.add(p["question"])
            yield p


def build_math(count: int = 24_000) -> Iterator[dict]:
    for p in _unique_problems(1234, 0, count):
        yield {"text": f"Problem: {p['question']}\nSolution: {p['steps']} The answer is {p['answer']}.",
               "answer": p["answer"], "skill": p["skill"]}


def build_target_math(count: int = 8_000) -> Iterator[dict]:
    for p in _unique_problems(4321, 1, count):
        yield {"prompt": f"Q: {p['question']}", "response": f"A: {p['steps']} Final answer: {p['answer']}",
               "answer": p["answer"], "skill": p["skill"]}


BUILDERS: dict[str, Callable[[], Iterator[dict]]] = {
    "general": build_general, "code": build_code, "math": build_math,
    "target_math": build_target_math, "target_code": build_target_code,
}
assert set(BUILDERS) == set(BUILTIN_CORPORA), "config.data.BUILTIN_CORPORA and BUILDERS disagree"
