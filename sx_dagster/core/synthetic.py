"""The built-in synthetic task: GSM8K-shaped word problems whose every step is checkable.

A problem is a chain: a start quantity, then 2-5 operations (+, -, *) told as a story in
order. The gold rationale writes one equation per line and ends with "The answer is N":

    5 + 3 = 8 apples
    8 * 2 = 16 apples
    The answer is 16

Because the chain is known, :func:`true_first_error` returns the first wrong step of any
rationale. That ground truth, which the paper never had, measures how often exploration's
first pit is the real first error.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import asdict, dataclass, field

from sx_dagster.core.answers import extract_answer
from sx_dagster.core.steps import split_steps

NAMES = ("Ava", "Ben", "Cleo", "Dan", "Eli", "Fay", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lea")
ITEMS = ("apples", "books", "coins", "marbles", "pens", "stamps", "cards", "shells")
_TEMPLATES = {
    "+": ("{n} finds {q} more {item}.", "{n} buys {q} more {item}.", "{n} gets {q} more {item}."),
    "-": ("{n} gives away {q} {item}.", "{n} loses {q} {item}.", "{n} sells {q} {item}."),
    "*": ("{n} ends up with {q} times as many {item}.", "The {item} of {n} grow {q} times."),
}
# A transfer between two people: "gives" means minus for the giver, plus for the receiver, so
# reading the sign takes telling who gives to whom (a reasoning step, not arithmetic).
_TRANSFER = {"+": "{other} gives {n} {q} {item}.", "-": "{n} gives {other} {q} {item}."}
# Wordings whose first verb suggests the other operation ("gets" and "buys" are + in the common
# templates, "gives", "sells" and "loses" are -): the sign is in the words after it. Meant as a
# rule learned late; the default's model learns them (benchmarks/results/task_probe_runs.csv).
_MISLEADING = {
    "+": (
        "{n} is given {q} {item}.",
        "{n} sells none and buys {q} {item}.",
        "{n} loses none and wins {q} {item}.",
        "Someone gives {n} {q} {item}.",
        "{n} is sold {q} {item} by a friend.",
    ),
    "-": (
        "{n} gets {q} {item} taken away.",
        "{n} finds that {q} {item} are missing.",
        "{n} buys none and sells {q} {item}.",
        "{n} gets robbed of {q} {item}.",
        "{n} wins none and loses {q} {item}.",
    ),
}
_DISTRACTOR = "{other} has {q} {item}."
_STEP = re.compile(r"^\s*(-?\d+)\s*([-+*x×])\s*(-?\d+)\s*=\s*(-?\d+)\b")
ERROR_KINDS = ("arithmetic", "operand", "operation", "skip", "invent")


@dataclass(frozen=True)
class SyntheticConfig:
    """Difficulty knobs of the synthetic task."""

    min_steps: int = 2
    max_steps: int = 4
    max_start: int = 20
    max_operand: int = 9  # for + and -
    max_factor: int = 3  # for *
    max_value: int = 999
    ops: tuple[str, ...] = ("+", "-", "*")
    distractor_prob: float = 0.0  # chance of an unused quantity in the story
    transfer_prob: float = 0.0  # chance that a + or - step is told as a transfer with someone else
    misleading_prob: float = 0.0  # chance that a + or - step (not a transfer) is told in misleading words
    # Issue 24's "choice" family: the story starts with two people and says to follow the one with
    # more (or fewer) items: step 1 must start from the picked one's number. ``choice_cue`` is the
    # share of those stories that name the picked person first, a shortcut the gold data rewards
    # that often (0.5: no shortcut; the comparison is the only rule that is always right).
    choice_prob: float = 0.0
    choice_cue: float = 0.5
    # The comparison is on a second item each person has (two hops: compare the pens, then start
    # from that person's apples); False compares the counted item itself.
    choice_by_other_item: bool = False
    names: tuple[str, ...] = NAMES
    items: tuple[str, ...] = ITEMS

    def __post_init__(self) -> None:
        if not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min_steps <= max_steps, got {self.min_steps}, {self.max_steps}")
        bad = set(self.ops) - set(_TEMPLATES)
        if bad or not self.ops:
            raise ValueError(f"ops must be a non-empty subset of {sorted(_TEMPLATES)}, got {self.ops}")
        if self.max_operand < 1 or self.max_factor < 2 or self.max_start < 1:
            raise ValueError("max_operand >= 1, max_factor >= 2 and max_start >= 1 are required")
        if self.choice_prob > 0 and self.max_start < 2:
            raise ValueError("choice_prob > 0 needs max_start >= 2 (two different starting numbers)")
        for knob in ("distractor_prob", "transfer_prob", "misleading_prob", "choice_prob", "choice_cue"):
            if not 0.0 <= getattr(self, knob) <= 1.0:
                raise ValueError(f"{knob} must be in [0, 1], got {getattr(self, knob)}")


@dataclass(frozen=True)
class SyntheticProblem:
    id: str
    name: str
    item: str
    start: int
    ops: tuple[tuple[str, int], ...]
    question: str
    distractor: int | None = None
    transfers: tuple[int, ...] = ()  # 0-based steps told as a transfer between two people
    misleading: tuple[int, ...] = ()  # 0-based steps told in misleading words
    rival: int | None = None  # choice family: the other person's number (``start`` is the picked one's)
    rival_first: bool = False  # choice family: the other person is named first (against the cue)
    states: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        states = [self.start]
        for op, q in self.ops:
            states.append(_apply(states[-1], op, q))
        object.__setattr__(self, "states", tuple(states))

    @property
    def answer(self) -> str:
        return str(self.states[-1])

    @property
    def rationale(self) -> str:
        return "\n".join(
            [step_line(self.states[i], op, q, self.item) for i, (op, q) in enumerate(self.ops)] + [f"The answer is {self.answer}"]
        )

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("states")
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> SyntheticProblem:
        d = json.loads(text)
        d["ops"] = tuple((op, int(q)) for op, q in d["ops"])
        d["transfers"] = tuple(d.get("transfers", ()))
        d["misleading"] = tuple(d.get("misleading", ()))
        return cls(**d)


def _apply(a: int, op: str, q: int) -> int:
    return a + q if op == "+" else a - q if op == "-" else a * q


def step_line(a: int, op: str, q: int, item: str, result: int | None = None) -> str:
    """One rationale line; ``result`` overrides the true value (to write a wrong step)."""
    r = _apply(a, op, q) if result is None else result
    return f"{a} {op} {q} = {r} {item}"


def generate_problem(rng: random.Random, config: SyntheticConfig, problem_id: str) -> SyntheticProblem:
    name, item = rng.choice(config.names), rng.choice(config.items)
    start = rng.randint(1, config.max_start)
    rival, rival_first = None, False
    # No draw when choice_prob is 0: problems of a config without the family stay as they were.
    if config.choice_prob > 0 and rng.random() < config.choice_prob:
        rival = rng.randint(1, config.max_start - 1)
        rival += rival >= start  # a different number, uniform over the others
        rival_first = rng.random() >= config.choice_cue
    value, ops = start, []
    for _ in range(rng.randint(config.min_steps, config.max_steps)):
        allowed = [
            op
            for op in config.ops
            if (op != "-" or value > 1) and (op != "*" or value * 2 <= config.max_value) and (op != "+" or value + 1 <= config.max_value)
        ]
        op = rng.choice(allowed)
        if op == "+":
            q = rng.randint(1, min(config.max_operand, config.max_value - value))
        elif op == "-":
            q = rng.randint(1, min(config.max_operand, value - 1))
        else:
            q = rng.randint(2, max(2, min(config.max_factor, config.max_value // value)))
        ops.append((op, q))
        value = _apply(value, op, q)
    sentences, transfers, misleading = [f"{name} has {start} {item}."], [], []
    others = [n for n in config.names if n != name] or [name]
    who = name
    if rival is not None:
        told = [f"{name} has {start} {item}", f"{rng.choice(others)} has {rival} {item}"]
        pick, key_item = ("more" if start > rival else "fewer"), item
        if config.choice_by_other_item:
            key_item = rng.choice([x for x in config.items if x != item] or [item])
            keys = rng.sample(range(1, config.max_start + 1), 2)
            pick = rng.choice(("more", "fewer"))
            mine, theirs = (max(keys), min(keys)) if pick == "more" else (min(keys), max(keys))
            told = [f"{told[0]} and {mine} {key_item}", f"{told[1]} and {theirs} {key_item}"]
        joiner = ". " if config.choice_by_other_item else " and "
        sentences = [f"{joiner.join(told[::-1] if rival_first else told)}. Follow the one with {pick} {key_item}."]
        name = "That one"  # the story never names the picked person again: the numbers decide
    for i, (op, q) in enumerate(ops):
        # No draw when transfer_prob is 0: problems of a config without transfers stay as they were.
        if op in _TRANSFER and config.transfer_prob > 0 and rng.random() < config.transfer_prob:
            sentences.append(_TRANSFER[op].format(n=name, other=rng.choice(others), q=q, item=item))
            transfers.append(i)
        elif op in _MISLEADING and config.misleading_prob > 0 and rng.random() < config.misleading_prob:
            sentences.append(rng.choice(_MISLEADING[op]).format(n=name, q=q, item=item))
            misleading.append(i)
        else:
            sentences.append(rng.choice(_TEMPLATES[op]).format(n=name, q=q, item=item))
    distractor = None
    if rng.random() < config.distractor_prob:
        distractor = rng.randint(1, config.max_operand)
        other = rng.choice(others)
        sentences.insert(rng.randint(1, len(sentences)), _DISTRACTOR.format(other=other, q=distractor, item=item))
    sentences.append(f"How many {item} does {name.lower() if rival is not None else name} have now?")
    return SyntheticProblem(
        problem_id, who, item, start, tuple(ops), " ".join(sentences), distractor, tuple(transfers), tuple(misleading), rival, rival_first
    )


def generate_problems(n: int, seed: int, config: SyntheticConfig | None = None, prefix: str = "syn") -> list[SyntheticProblem]:
    """``n`` problems, reproducible from ``seed``; ids are ``{prefix}-{seed}-{i}``."""
    rng = random.Random(seed)
    cfg = config or SyntheticConfig()
    return [generate_problem(rng, cfg, f"{prefix}-{seed}-{i}") for i in range(n)]


def true_first_error(problem: SyntheticProblem, rationale: str) -> int | None:
    """1-based first wrong step of ``rationale`` for ``problem``, or None if it is right.

    Step i (i <= number of operations) is right when it writes ``a op q = r`` with ``a`` the
    quantity after step i-1, ``op``/``q`` the story's i-th operation (operands of + and *
    may be swapped) and ``r`` the true result. The step after the last operation must be
    the final line "The answer is <answer>". Bad arithmetic, a wrong operand or operation,
    a skipped or an invented step all make the first mismatching step the error; a
    rationale that stops early errs at the first missing step.
    """
    steps = split_steps(rationale, "synthetic")
    n = len(problem.ops)
    for i, line in enumerate(steps):
        if i == n:
            ok = extract_answer(line, "synthetic") == problem.answer and i == len(steps) - 1
            return None if ok else i + 1
        m = _STEP.match(line)
        if not m:
            return i + 1
        a, op, q, r = int(m.group(1)), m.group(2).replace("x", "*").replace("×", "*"), int(m.group(3)), int(m.group(4))
        exp_op, exp_q = problem.ops[i]
        operands_ok = (a, q) == (problem.states[i], exp_q) or (op in "+*" and (q, a) == (problem.states[i], exp_q))
        if op != exp_op or not operands_ok or r != problem.states[i + 1]:
            return i + 1
    return len(steps) + 1


def first_error_kind(problem: SyntheticProblem, rationale: str) -> str | None:
    """What went wrong at :func:`true_first_error`'s step, or None if the rationale is right.

    ``arithmetic`` (right equation, wrong result), ``operation`` (+, - or * not the story's),
    ``choice`` (step 1 starts from the other person's number, choice family), ``carried`` (starts
    from a wrong quantity), ``distractor`` (uses the story's unused
    quantity), ``operand`` (another wrong operand), ``format`` (no equation where a step is
    due), ``answer`` (the final line); with ``@transfer`` when the step was told as a transfer
    between two people. Which kinds a model still makes says what a preference could fix.
    """
    step = true_first_error(problem, rationale)
    if step is None:
        return None
    i = step - 1
    if i >= len(problem.ops):
        return "answer"
    lines = split_steps(rationale, "synthetic")
    m = _STEP.match(lines[i]) if i < len(lines) else None
    if m is None:
        kind = "format"
    else:
        a, op, q = int(m.group(1)), m.group(2).replace("x", "*").replace("×", "*"), int(m.group(3))
        exp_op, exp_q = problem.ops[i]
        commutes = op in "+*"
        given = sorted((a, q)) if commutes else [a, q]
        due = sorted((problem.states[i], exp_q)) if commutes else [problem.states[i], exp_q]
        carried_ok = problem.states[i] in (a, q) if commutes else a == problem.states[i]
        if i == 0 and problem.rival is not None and problem.rival in (a, q) and problem.start not in (a, q):
            kind = "choice"
        elif op != exp_op:
            kind = "operation"
        elif given == due:
            kind = "arithmetic"
        elif not carried_ok:
            kind = "carried"
        else:
            kind = "distractor" if problem.distractor in (a, q) and problem.distractor != exp_q else "operand"
    return kind + ("@transfer" if i in problem.transfers else "@misleading" if i in problem.misleading else "")


def transfer_sign(problem: SyntheticProblem, rationale: str) -> tuple[str, bool] | None:
    """At the problem's first transfer step: (the story's sign, whether the rationale wrote it),
    or None when there is no transfer or the rationale went wrong before reaching it. The
    sign of a transfer is the one reasoning step the synthetic task adds to the arithmetic."""
    if not problem.transfers:
        return None
    i = problem.transfers[0]
    first = true_first_error(problem, rationale)
    if first is not None and first <= i:
        return None
    lines = split_steps(rationale, "synthetic")
    m = _STEP.match(lines[i]) if i < len(lines) else None
    if m is None:
        return None
    return problem.ops[i][0], m.group(2) == problem.ops[i][0]


def inject_error(problem: SyntheticProblem, step: int, kind: str, rng: random.Random) -> str:
    """A rationale that follows the gold one up to ``step`` - 1 and errs at ``step``.

    After the error it continues consistently from the wrong value, as a model would.
    ``kind`` is one of :data:`ERROR_KINDS`; ``step`` is 1..number of operations.
    """
    n = len(problem.ops)
    if not 1 <= step <= n:
        raise ValueError(f"step must be in 1..{n}, got {step}")
    if kind not in ERROR_KINDS:
        raise ValueError(f"kind must be one of {ERROR_KINDS}, got {kind!r}")
    ops = list(problem.ops)
    i = step - 1
    lines: list[str] = [step_line(problem.states[j], *ops[j], problem.item) for j in range(i)]
    value = problem.states[i]
    op, q = ops[i]
    if kind == "arithmetic":
        true = _apply(value, op, q)
        wrong = true + rng.choice([d for d in (-2, -1, 1, 2, 10) if true + d >= 0])
        lines.append(step_line(value, op, q, problem.item, result=wrong))
        value = wrong
        rest = ops[i + 1 :]
    elif kind in ("operand", "operation"):
        if kind == "operand":
            new_op, new_q = op, rng.choice([x for x in range(2, 13) if x != q])
        else:
            new_op = rng.choice([o for o in "+-*" if o != op])
            new_q = q if q >= 2 or new_op != "*" else 2
        lines.append(step_line(value, new_op, new_q, problem.item))
        value = _apply(value, new_op, new_q)
        rest = ops[i + 1 :]
    elif kind == "skip":
        rest = ops[i + 1 :]
    else:  # invent: an extra operation the story never tells
        extra = rng.choice([("+", x) for x in range(1, 10)] + [("*", x) for x in range(2, 4)])
        if extra == (op, q):
            extra = ("+", q + 1) if op == "+" else ("*", q + 1) if op == "*" else ("+", q)
        lines.append(step_line(value, *extra, problem.item))
        value = _apply(value, *extra)
        rest = ops[i:]
    for o, x in rest:
        lines.append(step_line(value, o, x, problem.item))
        value = _apply(value, o, x)
    lines.append(f"The answer is {value}")
    return "\n".join(lines)
