"""Answers, the checker and the safe calculator, including hostile input."""

import random
import time

import pytest

from sx_dagster.core.answers import extract_answer, is_correct, normalize_number, warm_up_math_verify
from sx_dagster.core.calculator import UnsafeExpression, check_annotations, equations, safe_arith


@pytest.mark.parametrize(
    ("text", "task", "expected"),
    [
        ("So she has 18.\nThe answer is 18.", "gsm8k", "18"),
        ("The answer is 1,000", "gsm8k", "1000"),
        ("The answer is $5.50.", "gsm8k", "5.5"),
        ("The answer is 25%", "gsm8k", "25"),
        ("The answer is 18.000", "gsm8k", "18"),
        ("The answer is -3", "synthetic", "-3"),
        ("The answer is 7\nThe answer is 9", "gsm8k", "9"),  # the last one counts
        ("Natalia sold 72 clips.\n#### 72", "gsm8k", "72"),
        ("The answer is unknown", "gsm8k", None),
        ("no answer here", "gsm8k", None),
        ("", "gsm8k", None),
        (r"so $\boxed{\frac{1}{2}}$.", "math", r"\frac{1}{2}"),
        (r"\boxed{1} then \boxed{\sqrt{\frac{a}{b}}}", "math", r"\sqrt{\frac{a}{b}}"),
        ("The answer is: 3\\pi.", "math", "3\\pi"),
        (r"\boxed{unclosed", "math", None),
    ],
)
def test_extract_answer(text, task, expected):
    assert extract_answer(text, task) == expected


def test_normalize_number():
    assert normalize_number("18.") == "18"
    assert normalize_number("1,000") == "1000"
    assert normalize_number("0.50") == "0.5"
    assert normalize_number(".5") == "0.5"
    assert normalize_number("-2.0") == "-2"
    assert normalize_number("abc") is None
    assert normalize_number("1e5") is None  # not a number form GSM8K writes


def test_unknown_task_is_an_error():
    with pytest.raises(ValueError, match="unknown task"):
        extract_answer("The answer is 1", "gsm9k")


@pytest.mark.parametrize(
    ("pred", "gold", "task", "ok"),
    [
        ("18.", "18", "gsm8k", True),  # the reference compared these unnormalized
        ("1,000", "1000", "gsm8k", True),
        ("18.0", "18", "synthetic", True),
        ("17", "18", "gsm8k", False),
        (None, "18", "gsm8k", False),
        ("abc", "18", "gsm8k", False),
        ("0.5", r"\frac{1}{2}", "math", True),
        (r"\dfrac{1}{2}", r"\frac{1}{2}", "math", True),
        ("x+1", "1+x", "math", True),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\left( 3, \frac{\pi}{2} \right)", "math", True),
        ("3", r"\frac{1}{2}", "math", False),
        ("x^2+y^2", "y^2+x^2", "math", True),  # powers are fine; only towers are screened out
        (r"10^{10^{10}}", r"10^{10^{10}}", "math", True),  # a tower still matches itself
    ],
)
def test_is_correct(pred, gold, task, ok):
    assert is_correct(pred, gold, task) is ok


def test_math_verify_gold_first_and_shared_checker():
    # Exploration and evaluation call the same function: extracted then checked.
    assert is_correct(extract_answer(r"thus \boxed{2\sqrt{2}}", "math"), r"\sqrt{8}", "math")


def test_safe_arith():
    assert safe_arith("48/2") == 24
    assert safe_arith("1,000*2") == 2000
    assert safe_arith("2**10") == 1024
    assert safe_arith("-(3+4)*2") == -14
    for bad in ["__import__('os')", "2**10000", "9**9**9**9", "1/0", "abs(3)", "x+1", "(" * 500 + "1" + ")" * 500]:
        with pytest.raises(UnsafeExpression):
            safe_arith(bad)


def test_check_annotations():
    ok = "Natalia sold 48/2 = <<48/2=24>>24 clips.\nIn total 48+24 = <<48+24=72>>72.\n#### 72"
    assert check_annotations(ok)
    assert not check_annotations("She has <<48/2=25>>25 clips.")
    assert check_annotations("rounding <<1/3=0.333>>0.333")  # within 1e-3, as the reference
    assert not check_annotations("<<__import__('os').system('true')=0>>")
    assert not check_annotations("broken <<48/2=24 clips")
    assert check_annotations("no annotations at all")
    assert equations(ok) == ("48/2=24", "48+24=72")
    assert equations("5 + 3 = 8 apples\n8 * 2 = 16 apples") == ("5+3=8", "8*2=16")


def _hostile_strings(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    digits = "0123456789٠١٢٣٤٥٦٧٨٩０１２３４５６７８９𝟎𝟏𝟐"
    makers = [
        lambda: "9" * rng.randint(1, 50) + "**" + "9" * rng.randint(1, 50),
        lambda: "**".join(["9"] * rng.randint(2, 30)),
        lambda: "(" * rng.randint(50, 5000) + "1" + ")" * rng.randint(0, 5000),
        lambda: "__import__('os').system('echo pwned')",
        lambda: "".join(rng.choice(digits) for _ in range(rng.randint(1, 40))),
        lambda: "1" * rng.randint(10_000, 1_000_000),
        lambda: "The answer is " + "9" * rng.randint(1000, 100_000),
        lambda: r"\boxed{" * rng.randint(1, 3000) + "x",
        lambda: r"10^{10^{10^{" + str(rng.randint(1, 99)) + "}}}",
        lambda: "<<" + "2**" * rng.randint(1, 200) + "2=4>>",
        lambda: (
            "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 200))).encode("utf-8", "replace").decode("utf-8", "replace")
        ),
        lambda: "lambda: 0" + "\n" * rng.randint(0, 100) + "#### " + "1e9999",
        lambda: r"\frac{" * rng.randint(1, 500) + "1" + "}" * rng.randint(1, 500),
        lambda: "(" + "+".join(str(rng.randint(0, 10**18)) for _ in range(rng.randint(1, 300))) + ")",
    ]
    return [makers[i % len(makers)]() for i in range(n)]


def test_hostile_input_returns_fast_and_never_raises():
    warm_up_math_verify()
    strings = _hostile_strings(1000)
    calls = [
        ("check_annotations", lambda s: check_annotations(s)),
        ("check_annotations<<>>", lambda s: check_annotations(f"<<{s}=1>>")),
        ("safe_arith", lambda s: _swallow_unsafe(s)),
        *[(f"extract+check {t}", lambda s, t=t: is_correct(extract_answer(s, t), "18", t)) for t in ("gsm8k", "synthetic", "math")],
        ("is_correct math raw", lambda s: is_correct(s[:250], r"\frac{1}{2}", "math")),
        ("is_correct math as gold", lambda s: is_correct("3", s[:250], "math")),
    ]
    slowest = (0.0, "")
    for i, s in enumerate(strings):
        for name, call in calls:
            t = time.perf_counter()
            call(s)  # any exception escaping fails the test
            elapsed = time.perf_counter() - t
            assert elapsed < 1.0, f"{name} on hostile string #{i} took {elapsed:.2f}s: {s[:80]!r}"
            slowest = max(slowest, (elapsed, name))
    print(f"slowest call: {slowest[1]} {slowest[0]:.3f}s")


def _swallow_unsafe(s: str) -> None:
    try:
        safe_arith(s)
    except UnsafeExpression:
        pass
