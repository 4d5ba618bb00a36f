"""Generated arithmetic and algebra word problems with worked, exact answers (the ``math`` corpora)."""
from __future__ import annotations

import random
from fractions import Fraction
from typing import Callable, Iterator

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


def unique_problems(seed: int, style: int, count: int) -> Iterator[dict]:
    """``count`` distinct problems (repeats would leak held-out questions into training)."""
    rng, seen = random.Random(seed), set()
    while len(seen) < count:
        p = math_problem(rng, style)
        if p["question"] not in seen:
            seen.add(p["question"])
            yield p


