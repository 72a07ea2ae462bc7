"""Final answers: extraction from model text and the one correctness checker.

Every stage (sampling, exploration, evaluation) grades with :func:`is_correct`, so a
rationale judged correct while sampling is judged the same way while exploring. The
reference code compared answers unnormalized during exploration ("18." != "18"); here
every comparison goes through the same normalization.
"""

from __future__ import annotations

import atexit
import json
import re
import select
import subprocess
import sys
import threading
from fractions import Fraction

TASKS = ("synthetic", "gsm8k", "math")

# Longer strings are never final answers of these tasks; they are compared as strings only,
# which keeps hostile megabyte outputs away from regexes and sympy.
MAX_ANSWER_CHARS = 300
MAX_TEXT_CHARS = 200_000

_ANSWER_IS = re.compile(r"[Tt]he answer is:?\s*")
_GSM8K_GOLD = re.compile(r"####\s*(.+)")
_EXPONENT_TOWER = re.compile(r"\^\s*\{[^{}]*\^|\^\s*\(\s*[^()]*\^|\^\s*\d+\s*\^|\*\*\s*\(?\s*\d+\s*\*\*")
# What math-verify is handed: measured worst cases (issue 15) are a quarter second of parsing
# at 250 characters and a tenth more per level of bracket nesting; MATH-500's longest gold
# answer has 53 characters and nests 2 deep. Longer or deeper answers are compared as strings.
MAX_VERIFY_CHARS = 160
MAX_VERIFY_NESTING = 4
MAX_POWERS = 12  # x^8 + x^7 + ... + x^2 + x + 1 is a MATH-500 answer
MAX_EXPONENT_DIGITS = 4  # 2^{2006} is a MATH answer; 10^{99999999} would stall sympy
_POWER = re.compile(r"\^|\*\*")
_EXPONENT_ATOM = re.compile(r"\s*(?:[-+]?\s*\d+(?:\.\d+)?|\\[A-Za-z]+|.)", re.DOTALL)
# Scientific notation: math-verify reads "1e5" as 1*e*5, so it is compared as a string.
_SCIENTIFIC = re.compile(r"\d[eE][-+]?\d")
# Python's "a**b" with its exponent: a number, a letter or command, a (...) or {...} group.
_PY_POWER = re.compile(r"\*\*\s*(-?\d+(?:\.\d+)?|[A-Za-z]|\\[A-Za-z]+|\([^()]*\)|\{([^{}]*)\})")
_NUMBER = re.compile(r"-?\$?\s*(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\$?\s*\.\d+")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def normalize_number(text: str) -> str | None:
    """Canonical decimal form of a number: '1,000' -> '1000', '18.' -> '18', '$5.50' -> '5.5'.

    Returns None when ``text`` is not a plain number (after removing $, %, commas and a
    trailing period).
    """
    s = text.strip()
    if len(s) > 64:
        return None
    s = s.rstrip(".").replace(",", "").replace("$", "").replace("%", "").replace(" ", "")
    if not re.fullmatch(r"-?(\d+(\.\d*)?|\.\d+)", s):
        return None
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    # Non-integers: shortest exact decimal; trailing zeros dropped.
    out = s.lstrip("-").rstrip("0").rstrip(".")
    if out.startswith("."):
        out = "0" + out
    return ("-" if value < 0 else "") + out


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces allowed."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def extract_answer(text: str, task: str) -> str | None:
    """The final answer a rationale commits to, normalized; None if it commits to none.

    - ``synthetic`` / ``gsm8k``: the first number after the last "The answer is" (the
      Self-Explore output format, paper Appendix), else the dataset's gold form "#### N".
      Commas, "$", "%", trailing zeros and a trailing period are removed.
    - ``math``: the last ``\\boxed{...}`` (nested braces), else the text after the last
      "The answer is:" (MetaMath format used by the paper's MATH runs).
    """
    _check_task(task)
    if not isinstance(text, str) or not text:
        return None
    text = text[-MAX_TEXT_CHARS:]
    if task == "math":
        boxed = _last_boxed(text)
        if boxed is not None:
            return boxed or None
        matches = list(_ANSWER_IS.finditer(text))
        if not matches:
            return None
        tail = text[matches[-1].end() :].strip().split("\n")[0].strip()
        tail = tail.rstrip(".").strip().strip("$").strip()
        return tail[:MAX_ANSWER_CHARS] or None
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        tail = text[matches[-1].end() :][:200]
    else:
        gold = _GSM8K_GOLD.search(text)
        if not gold:
            return None
        tail = gold.group(1)[:200]
    m = _NUMBER.search(tail.split("\n")[0])
    if not m:
        return None
    return normalize_number(m.group(0))


def _numeric_equal(a: str, b: str, rel_tol: float = 1e-6) -> bool | None:
    na, nb = normalize_number(a), normalize_number(b)
    if na is None or nb is None:
        return None
    fa, fb = Fraction(na), Fraction(nb)
    return abs(fa - fb) <= rel_tol * max(1, abs(fb))


def _math_fast_form(s: str) -> str:
    s = s.strip().strip("$").replace(" ", "").replace("\\!", "").replace("\\,", "")
    s = re.sub(r"\\(left|right)", "", s)
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"^\\text\{(.*)\}$", r"\1", s)
    return s.rstrip(".")


def _latex_powers(s: str) -> str:
    """``a**b`` (Python's power, which models write) as LaTeX's ``a^{b}``.

    math-verify's LaTeX parser rejects ``**``; math-verify then falls back to a number found
    inside the text, so ``3**2`` was read as 3 (or as 2 when spaced) and graded equal to 3
    (issue 15). A ``**`` this cannot rewrite stays, fails to parse, and is compared as a string.
    """
    return _PY_POWER.sub(lambda m: "^{" + (m.group(2) if m.group(2) is not None else m.group(1)) + "}", s)


def _group_end(s: str, i: int) -> int:
    """End of the bracketed group opening at ``s[i]`` (``len(s)`` when it never closes)."""
    depth = 0
    for j in range(i, len(s)):
        if s[j] in "{(":
            depth += 1
        elif s[j] in "})":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(s)


def _exponents(s: str) -> list[str]:
    """The exponent of each ``^`` or ``**``: a bracketed group, or one atom (a command takes
    the groups that follow it: ``2^\\frac{1}{2}``)."""
    out = []
    for m in _POWER.finditer(s):
        i = m.end()
        while i < len(s) and s[i].isspace():
            i += 1
        if i < len(s) and s[i] in "{(":
            end = _group_end(s, i)
        else:
            atom = _EXPONENT_ATOM.match(s, i)
            end = atom.end() if atom else i
            if atom and atom.group(0).lstrip().startswith("\\"):
                while end < len(s) and s[end] == "{":
                    end = _group_end(s, end)
        out.append(s[i:end])
    return out


def _too_hostile(s: str) -> bool:
    """Inputs no real final answer looks like, which can stall sympy: compared as strings."""
    # "\\!" is a thin space, not a factorial (MATH writes 11,\\! 111).
    if len(s) > MAX_VERIFY_CHARS or len(_POWER.findall(s)) > MAX_POWERS or s.replace("\\!", "").count("!") > 2:
        return True
    if _EXPONENT_TOWER.search(s) or _SCIENTIFIC.search(s):  # 10^{10^{10}}: sympy would try to evaluate it
        return True
    if any(sum(c.isdigit() for c in e) > MAX_EXPONENT_DIGITS or "!" in e for e in _exponents(s)):
        return True
    depth = deepest = 0
    for c in s:
        if c in "({[":
            depth += 1
            deepest = max(deepest, depth)
        elif c in ")}]":
            depth -= 1
    return deepest > MAX_VERIFY_NESTING or depth != 0


def grade(text: str, gold: str, task: str) -> tuple[str | None, bool]:
    """(extracted final answer, whether it equals ``gold``) of a model's rationale: the one
    grading rule of sampling, exploration, evaluation and the benchmarks."""
    pred = extract_answer(text, task)
    return pred, is_correct(pred, gold, task)


def is_correct(pred: str | None, gold: str, task: str, timeout_s: float = 0.75) -> bool:
    """Whether a predicted final answer equals the gold answer.

    ``synthetic`` / ``gsm8k``: numeric equality (relative tolerance 1e-6) after
    :func:`normalize_number`. ``math``: Python's ``a**b`` read as ``a^{b}``, an exact or
    numeric fast path, then ``math-verify`` (LaTeX only: unparsable text is never read as a
    number inside it) with gold first (it is not symmetric), in a worker process killed
    after ``timeout_s`` seconds of wall clock (math-verify's own SIGALRM timeout does not work
    off the main thread, and Dagster runs assets off it). Answers sympy could stall on (see
    :func:`_too_hostile`) are compared as strings. Never raises on hostile input: unparsable
    or timed-out comparisons count as wrong.
    """
    _check_task(task)
    if pred is None or not isinstance(pred, str) or not isinstance(gold, str):
        return False
    if task != "math":
        return bool(_numeric_equal(pred, gold))
    if _too_hostile(pred) or _too_hostile(gold):
        return pred.strip() == gold.strip()
    pred, gold = _latex_powers(pred), _latex_powers(gold)
    fp, fg = _math_fast_form(pred), _math_fast_form(gold)
    if fp == fg:
        return True
    numeric = _numeric_equal(fp, fg)
    if numeric is not None:
        return numeric
    return _VERIFIER.verify(gold, pred, timeout_s)


# --- math-verify in a killable worker process ---------------------------------------


def _serve_stdio() -> None:  # pragma: no cover - runs in the worker subprocess
    """Worker loop: one JSON [gold, pred] per stdin line, one "1"/"0" per stdout line."""
    import gc
    import json

    from math_verify import LatexExtractionConfig, parse, verify

    # LaTeX only: with math-verify's default expression extraction as well, text whose LaTeX
    # fails to parse is read as a number found inside it ("3**2" as 3, "7//2" as 7), so a
    # malformed answer could equal a part of itself. All 500 MATH-500 gold answers parse to
    # the same expression either way (measured for issue 15).
    latex_only = [LatexExtractionConfig()]
    # The first comparison builds math-verify's parsers (a quarter second): do it before
    # "ready", so no graded call pays it. Then freeze the heap, so that garbage collections
    # during a graded call do not walk sympy's and lark's objects.
    try:
        verify(parse("$x^{2}+1$", extraction_config=latex_only), parse("$1+x^2$", extraction_config=latex_only))
    except Exception:  # noqa: BLE001 - a warm-up only; graded calls report their own failures
        pass
    gc.freeze()
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            gold, pred = json.loads(line)
            # In this process we are the main thread, so math-verify's own timeouts work too.
            # Extracted answers are bare LaTeX; math-verify only reads LaTeX inside delimiters.
            g = parse(f"${gold}$", extraction_config=latex_only, parsing_timeout=1)
            p = parse(f"${pred}$", extraction_config=latex_only, parsing_timeout=1)
            ok = bool(verify(g, p, timeout_seconds=1))
        except BaseException:  # noqa: BLE001 - hostile input may raise anything
            ok = False
        out.write("1\n" if ok else "0\n")
        out.flush()


class _Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sx_dagster.core.answers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.ready = False

    def readline(self, timeout_s: float) -> str | None:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], max(0.0, timeout_s))
        if not readable:
            return None
        return self.proc.stdout.readline().strip() or None

    def wait_ready(self, timeout_s: float) -> bool:
        if not self.ready:
            self.ready = self.readline(timeout_s) == "ready"
        return self.ready

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


class _Verifier:
    """A math-verify worker process, killed when a call overruns its timeout.

    A warm spare is kept beside it, so a killed worker is replaced without paying
    math-verify's import time again. Plain ``python -m`` subprocesses: the caller (a Dagster
    run, a pytest worker) is never forked with its threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: _Worker | None = None
        self._spare: _Worker | None = None

    def warm_up(self, timeout_s: float = 120.0) -> None:
        """Start the workers and wait for their imports (seconds, once per process)."""
        with self._lock:
            self._ensure()
            assert self._active is not None and self._spare is not None
            self._active.wait_ready(timeout_s)
            self._spare.wait_ready(timeout_s)

    def _ensure(self) -> None:
        if self._active is None or self._active.proc.poll() is not None:
            self._active, self._spare = (self._spare or _Worker()), None
        if self._spare is None or self._spare.proc.poll() is not None:
            self._spare = _Worker()

    def verify(self, gold: str, pred: str, timeout_s: float) -> bool:
        with self._lock:
            self._ensure()
            worker = self._active
            assert worker is not None and worker.proc.stdin is not None
            # Startup is not the comparison's fault: wait for it outside the timeout.
            if not worker.wait_ready(120.0):
                worker.kill()
                self._active = None
                return False
            try:
                worker.proc.stdin.write(json.dumps([gold, pred]) + "\n")
                worker.proc.stdin.flush()
                reply = worker.readline(timeout_s)
            except (OSError, ValueError):
                reply = None
            if reply in ("0", "1"):
                return reply == "1"
            worker.kill()
            self._active = None
            return False

    def close(self) -> None:
        with self._lock:
            for w in (self._active, self._spare):
                if w is not None:
                    w.kill()
            self._active = self._spare = None


_VERIFIER = _Verifier()
atexit.register(_VERIFIER.close)


def warm_up_math_verify() -> None:
    """Pay math-verify's import cost now rather than on the first MATH comparison."""
    _VERIFIER.warm_up()


if __name__ == "__main__":
    _serve_stdio()
