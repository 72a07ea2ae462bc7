"""Answers, the checker and the safe calculator (hostile input: tests/test_core_hostile.py)."""

import pytest

from sx_dagster.core.answers import extract_answer, is_correct, normalize_number
from sx_dagster.core.calculator import UnsafeExpression, check_annotations, check_plain_equations, equations, safe_arith


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


@pytest.mark.parametrize(
    ("pred", "gold", "ok"),
    [
        # issue 15: math-verify failed to parse "**" and read a number inside the text instead.
        ("10**10", "10", False),
        ("3**2", "3", False),
        ("3 ** 2", "2", False),  # spaced, it was read as its exponent
        ("7**100", "7", False),
        ("2**3", "2", False),
        ("3**x", "3", False),
        ("-1**2", "1", False),  # -(1**2) = -1
        # a**b is its value: equal to a exactly when it is.
        ("1**5", "1", True),
        ("7**1", "7", True),
        ("0**1", "0", True),
        ("2**3", "8", True),
        ("3 ** 2", "9", True),
        ("2**{10}", "1024", True),
        ("2**-1", r"\frac{1}{2}", True),
        ("(-1)**2", "1", True),
        ("x**2", "x^2", True),
        ("(x+1)**2", "(x+1)^2", True),
        ("4", "2**2", True),  # on the gold side too
        # other malformed operators are not read as a number inside them either
        ("7//2", "7", False),
        ("3**", "3", False),
        ("3*", "3", False),
        ("3@2", "3", False),
    ],
)
def test_math_powers_graded_by_value(pred, gold, ok):
    assert is_correct(pred, gold, "math") is ok


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("<<7//2=3>>3", True),  # floor division, as the reference's eval() read it
        ("<<7//2=3.5>>3.5", False),  # 3.5 is true division
        ("<<-7//2=-4>>-4", True),  # Python floors toward minus infinity
        ("<<10//0=1>>1", False),  # division by zero: wrong, not an exception
        ("<<10/0=1>>1", False),
        ("<<2//3*3=0>>0", True),
        ("<<10/3=3.333>>3.333", True),  # |3.33333 - 3.333| = 0.00033 <= 1e-3
        ("<<10/3=3.33>>3.33", False),  # 0.0033 > 1e-3
        ("<<1000+0.0009=1000>>1000", True),  # 0.0009 <= 1e-3
        ("<<1000+0.002=1000>>1000", False),  # 0.002 > 1e-3
    ],
)
def test_check_annotations_floor_division_and_tolerance(text, ok):
    assert check_annotations(text) is ok
    assert check_plain_equations(text.replace("<<", " ").replace(">>", " ")) is ok  # one evaluator for both


def test_floor_division_goes_through_the_safe_evaluator():
    assert safe_arith("7//2") == 3
    assert safe_arith("-7//2") == -4
    assert equations("so 7 // 2 = 3 boxes") == ("7//2=3",)
    for bad in ["10//0", "(1//0)+1", "9**99//1", "__import__('os')//1"]:
        with pytest.raises(UnsafeExpression):
            safe_arith(bad)


def test_grade_is_extract_then_compare():
    from sx_dagster.core.answers import grade

    assert grade("5 + 3 = 8 pens\nThe answer is 8", "8", "synthetic") == ("8", True)
    assert grade("5 + 3 = 9 pens\nThe answer is 9", "8", "synthetic") == ("9", False)
    assert grade("no answer here", "8", "gsm8k") == (None, False)
