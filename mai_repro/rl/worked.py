"""Worked solutions of arithmetic and algebra, written by a program (never by a language model).

Mid-training's bootstrap (notebook 08; issue 22): the report starts its RL climb from a base
"never exposed to reasoning traces", and explains that its mid-training mix leans on STEM, math
and code so that the base can climb at all. Our small corpus holds too little worked
mathematics for a 10M-token model to learn column arithmetic from, so the mid-training mix's
STEM/math share gains a *procedural* part: the problems of :mod:`mai_repro.rl.tasks` (the same
generators, on their own seed stream), each solved step by step in the plain notation of a
school textbook, ending with ``Answer: <integer>`` like the RL tasks:

- ``arithmetic``: column addition with carries, column subtraction with borrows, and long
  multiplication (digit by digit for a one-digit multiplier, partial products otherwise);
- ``expression``: order of operations, one operation per line;
- ``linear``: ``a*x + b = c`` solved line by line, then checked by substitution.

Procedural text is allowed in mid-training and RL (a program with a known answer, like the RL
environments) and never in pre-training, which stays human-written (RECIPE.md section 1).

Decontamination is by problem identity (:func:`problem_key`): an expression's operands and
operators (``Compute 7 + 5.`` and ``Evaluate 7 + 5.`` are the same problem) or an equation's
coefficients. A text is dropped when its problem, or any equation it writes on the way (a
column step ``7 + 5 = 12``, an intermediate ``3*x = 15``), is an RL held-out problem
(:func:`text_keys` reads them back from the text itself, not from the generator's notes).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from mai_repro.rl import tasks
from mai_repro.rl.climb import heldout_set
from mai_repro.rl.config import DistillConfig, GRPOStageConfig

# The identity of a problem: ("expr", the expression without spaces) or ("linear", a, b, c).
Key = tuple
WORKED_KINDS: tuple[str, ...] = tasks.KINDS  # the default mix (tasks.ALL_KINDS may be named)
PLACES = ("ones", "tens", "hundreds", "thousands", "ten thousands", "hundred thousands",
          "millions", "ten millions", "hundred millions", "billions", "ten billions")


@dataclass(frozen=True)
class Worked:
    """One worked solution: its problem, the whole text, and the integer answer."""

    kind: str
    difficulty: int
    question: str  # "Compute 347 + 589." (the RL task's wording)
    text: str  # the question, the worked lines, and "Answer: <integer>"
    answer: int


# --------------------------------------------------------------------------------------------
# Problem identity.

_EXPR = r"\(*-?\d+\)*(?:\s*[-+*]\s*\(*-?\d+\)*)+"
_QUESTION_RE = re.compile(rf"(?:Compute|Evaluate)\s+({_EXPR})\s*\.")
# a*x + b = c, ending there (not "3*x = 22 - 7", the start of a calculation)
_LINEAR_RE = re.compile(r"(-?\d+)\*x(?:\s*([-+])\s*(\d+))?\s*=\s*(-?\d+)(?=\s*[.,]?\s*$|[.,]\s)",
                        re.MULTILINE)
# an expression immediately followed by "=": the left side of an equation, or a link in a chain
_EQUATION_RE = re.compile(rf"({_EXPR})\s*=(?!=)")


def expr_key(expr: str) -> Key:
    return ("expr", re.sub(r"\s+", "", expr))


def linear_key(a: int, b: int, c: int) -> Key:
    return ("linear", int(a), int(b), int(c))


def problem_key(question: str) -> Key:
    """The identity of an RL-style question (``tasks.question`` or :attr:`Worked.question`)."""
    m = _LINEAR_RE.search(question) if question.startswith("Solve") else None
    if m:
        return _linear_match_key(m)
    m = _QUESTION_RE.search(question)
    if not m:
        raise ValueError(f"not a task question: {question!r}")
    return expr_key(m.group(1))


def _linear_match_key(m: re.Match) -> Key:
    a, sign, b, c = m.groups()
    bb = 0 if b is None else int(b) * (1 if sign == "+" else -1)
    return linear_key(int(a), bb, int(c))


def text_keys(text: str) -> set[Key]:
    """Every problem a text poses or writes out: task questions, equations ``<expr> = ...``
    (each link of a chain), and linear equations in x."""
    keys = {expr_key(m.group(1)) for m in _QUESTION_RE.finditer(text)}
    keys |= {_linear_match_key(m) for m in _LINEAR_RE.finditer(text)}
    for line in text.splitlines():
        for part in line.split("="):  # "a + b = c = d": each side on its own
            keys |= {expr_key(m.group(0)) for m in re.finditer(_EXPR, part)}
    return keys


# --------------------------------------------------------------------------------------------
# Column arithmetic.

def _digits(n: int) -> list[int]:
    """Digits of ``n >= 0``, ones first."""
    return [int(c) for c in reversed(str(n))]


def _place(i: int) -> str:
    return PLACES[i] if i < len(PLACES) else f"column {i + 1}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _column(i: int, expr: str, value: int, carry: int) -> tuple[str, int]:
    """One column of a written sum or product: ``expr`` plus the incoming carry, the digit
    written and the carry out."""
    total = value + carry
    line = f"{_cap(_place(i))}: {expr}" + (f" + {carry}" if carry else "") + f" = {total}."
    out = total // 10
    return line + (f" Write {total % 10}, carry {out}." if out else f" Write {total}."), out


def column_addition(a: int, b: int) -> list[str]:
    """``a + b`` (both >= 0) column by column with carries."""
    if a < 10 and b < 10:
        return [f"{a} + {b} = {a + b}."]
    da, db = _digits(a), _digits(b)
    lines = ["Add the digits column by column, from the right."]
    carry = 0
    for i in range(max(len(da), len(db))):
        x, y = (da[i] if i < len(da) else 0), (db[i] if i < len(db) else 0)
        line, carry = _column(i, f"{x} + {y}", x + y, carry)
        lines.append(line)
    if carry:
        lines.append(f"Write the last carry {carry}.")
    lines.append(f"So {a} + {b} = {a + b}.")
    return lines


def column_subtraction(a: int, b: int) -> list[str]:
    """``a - b`` (both >= 0) column by column with borrows; a smaller ``a`` turns it around."""
    if a < b:
        return ([f"{a} is less than {b}: subtract {a} from {b} and make the result negative."]
                + column_subtraction(b, a) + [f"So {a} - {b} = {a - b}."])
    if b < 10 and a < 10:
        return [f"{a} - {b} = {a - b}."]
    da, db = _digits(a), _digits(b)
    lines = ["Subtract the digits column by column, from the right."]
    borrow = 0
    for i in range(len(da)):
        x, y = da[i], (db[i] if i < len(db) else 0)
        head = f"{_cap(_place(i))}: "
        if borrow:
            head += f"{x} - 1 = {x - 1} after the borrow; "
            x -= 1
        if x < y:
            lines.append(head + f"{x} is less than {y}, borrow 1: {x + 10} - {y} = {x + 10 - y}.")
            borrow = 1
        else:
            lines.append(head + f"{x} - {y} = {x - y}.")
            borrow = 0
    lines.append(f"So {a} - {b} = {a - b}.")
    return lines


def _times_digit(a: int, d: int) -> list[str]:
    """``a * d`` for one digit ``d``, digit by digit with carries."""
    lines, carry = [], 0
    for i, x in enumerate(_digits(a)):
        line, carry = _column(i, f"{x} * {d}", x * d, carry)
        lines.append(line)
    if carry:
        lines.append(f"Write the last carry {carry}.")
    return lines


def long_multiplication(a: int, b: int) -> list[str]:
    """``a * b`` (both >= 0): digit by digit for a one-digit factor, else partial products."""
    if a < 10 and b < 10:
        return [f"{a} * {b} = {a * b}."]
    if b < 10 or a < 10:
        big, d = (a, b) if b < 10 else (b, a)
        return ([f"Multiply each digit of {big} by {d}, from the right."]
                + _times_digit(big, d) + [f"So {a} * {b} = {a * b}."])
    lines = [f"Multiply {a} by each digit of {b}, from the right."]
    parts = []
    for i, d in enumerate(_digits(b)):
        shift = 10 ** i
        parts.append(a * d * shift)
        lines.append(f"{a} * {d * shift} = {a * d * shift}")
    lines.append("Add the partial products: " + " + ".join(map(str, parts))
                 + f" = {sum(parts)}.")
    lines.append(f"So {a} * {b} = {a * b}.")
    return lines


def worked_arithmetic(a: int, op: str, b: int) -> list[str]:
    return {"+": column_addition, "-": column_subtraction, "*": long_multiplication}[op](a, b)


# --------------------------------------------------------------------------------------------
# Order of operations.

_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
_PREC = {"+": 1, "-": 1, "*": 2}


def _num(n: int) -> str:
    return f"({n})" if n < 0 else str(n)


def _write(node: ast.expr, first: bool = True) -> str:
    """An expression with the brackets it needs (a negative number after an operator too)."""
    if isinstance(node, ast.Constant):
        return str(node.value) if first else _num(node.value)
    assert isinstance(node, ast.BinOp)
    op = _OPS[type(node.op)]
    left, right = _write(node.left, first), _write(node.right, False)
    # inside brackets a number comes first again: "5 - (-2 + 3)", not "5 - ((-2) + 3)"
    if _bracketed(node, "left"):
        left = f"({_write(node.left)})"
    if _bracketed(node, "right"):
        right = f"({_write(node.right)})"
    return f"{left} {op} {right}"


def _bracketed(node: ast.BinOp, side: str) -> bool:
    """Whether :func:`_write` puts ``node``'s left or right operand in brackets."""
    child, prec = getattr(node, side), _PREC[_OPS[type(node.op)]]
    if not isinstance(child, ast.BinOp):
        return False
    c = _PREC[_OPS[type(child.op)]]
    return c < prec if side == "left" else c <= prec


def _inside_brackets(node: ast.expr, target: ast.BinOp, inside: bool = False) -> bool:
    """Whether ``target`` is written inside a pair of brackets of ``node``."""
    if node is target:
        return inside
    if not isinstance(node, ast.BinOp):
        return False
    return any(_inside_brackets(getattr(node, side), target,
                                inside or _bracketed(node, side)) for side in ("left", "right"))


def _ready(node: ast.expr) -> list[ast.BinOp]:
    """Operations whose two operands are numbers, left to right."""
    if isinstance(node, ast.Constant):
        return []
    both = isinstance(node.left, ast.Constant) and isinstance(node.right, ast.Constant)
    return _ready(node.left) + ([node] if both else []) + _ready(node.right)


def _value(node: ast.BinOp) -> int:
    a, b = node.left.value, node.right.value
    return {"+": a + b, "-": a - b, "*": a * b}[_OPS[type(node.op)]]


def _replace(node: ast.expr, target: ast.BinOp, value: int) -> ast.expr:
    if node is target:
        return ast.Constant(value)
    if isinstance(node, ast.BinOp):
        return ast.BinOp(_replace(node.left, target, value), node.op,
                         _replace(node.right, target, value))
    return node


def worked_expression(expr: str) -> tuple[list[str], int]:
    """``expr`` evaluated one operation per line: brackets first, then multiplication, then
    addition and subtraction from the left."""
    node = ast.parse(expr, mode="eval").body
    lines = []
    while isinstance(node, ast.BinOp):
        ready = _ready(node)
        step = next((n for n in ready if isinstance(n.op, ast.Mult)), ready[0])
        op = _OPS[type(step.op)]
        v = _value(step)
        what = ("Brackets first" if _inside_brackets(node, step) else "Multiply" if op == "*"
                else "Add" if op == "+" else "Subtract")
        node = _replace(node, step, v)
        rest = f" Now we have {_write(node)}." if isinstance(node, ast.BinOp) else ""
        lines.append(f"{what}: {_write(step)} = {v}.{rest}")
    return lines, node.value


# --------------------------------------------------------------------------------------------
# Linear equations.

def worked_linear(a: int, b: int, c: int) -> tuple[list[str], int]:
    """Solve ``a*x + b = c`` (``a`` divides ``c - b``) line by line, then check."""
    rhs = c - b
    lines = []
    if b:
        move = f"{c} - {b}" if b > 0 else f"{c} + {-b}"
        lines.append(f"Subtract {b} from both sides: {a}*x = {move}." if b > 0
                     else f"Add {-b} to both sides: {a}*x = {move}.")
        lines.append(f"{move} = {rhs}, so {a}*x = {rhs}.")
    else:
        lines.append(f"There is nothing to move: {a}*x = {rhs}.")
    x = rhs // a
    lines.append(f"Divide both sides by {_num(a)}: x = {rhs} / {_num(a)} = {x}.")
    check = f"{a}*{_num(x)}" + (f" + {b}" if b >= 0 else f" - {-b}")
    lines.append(f"Check: {check} = {a * x} " + (f"+ {b}" if b >= 0 else f"- {-b}")
                 + f" = {c}.")
    return lines, x


# --------------------------------------------------------------------------------------------
# Texts.

def solve(kind: str, difficulty: int, question: str) -> Worked:
    """The worked solution of one RL-style question."""
    if kind == "linear":
        a, b, c = problem_key(question)[1:]
        lines, answer = worked_linear(a, b, c)
    else:
        expr = _QUESTION_RE.search(question).group(1)
        m = re.fullmatch(r"(\d+) ([-+*]) (\d+)", expr)
        if kind in ("arithmetic", "addsub") and m:
            lines = worked_arithmetic(int(m.group(1)), m.group(2), int(m.group(3)))
            answer = eval(expr)  # noqa: S307 - our own digits
        else:
            lines, answer = worked_expression(expr)
    lines = [ln for ln in lines if ln]
    text = "\n".join([question, *lines, f"{tasks.ANSWER_PREFIX} {answer}"])
    return Worked(kind, difficulty, question, text, int(answer))


def generate(n: int, *, difficulties: Sequence[int] = (0, 1, 2, 3, 4),
             kinds: Sequence[str] = WORKED_KINDS, seed: int = 0,
             exclude: Iterable[Key] = ()) -> list[Worked]:
    """``n`` distinct worked solutions, kinds and difficulties taken in turn, none of whose
    texts poses or writes out a problem in ``exclude`` (see :func:`heldout_keys`)."""
    return generate_counted(n, difficulties=difficulties, kinds=kinds, seed=seed,
                            exclude=exclude)[0]


def generate_counted(n: int, *, difficulties: Sequence[int] = (0, 1, 2, 3, 4),
                     kinds: Sequence[str] = WORKED_KINDS, seed: int = 0,
                     exclude: Iterable[Key] = ()) -> tuple[list[Worked], int]:
    """:func:`generate`, and how many texts it dropped because they touch ``exclude``."""
    unknown = set(kinds) - set(tasks.ALL_KINDS)
    if unknown or not kinds or not difficulties or min(difficulties) < 0:
        raise ValueError(f"kinds must be among {tasks.ALL_KINDS}, difficulties >= 0 and "
                         f"non-empty; got {list(kinds)}, {list(difficulties)}")
    banned = set(exclude)
    # Our own stream: "worked:" never collides with the tasks' "train:" / "eval:" seeds.
    rngs = {d: random.Random(f"worked:{seed}:{d}") for d in difficulties}
    out: list[Worked] = []
    seen: set[str] = set()
    attempts = removed = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot write {n} distinct worked solutions; ask for fewer")
        i = attempts - 1
        d = difficulties[i % len(difficulties)]
        kind = kinds[(i // len(difficulties)) % len(kinds)]
        q, _ = tasks.GENERATORS[kind](rngs[d], d)
        if q in seen:
            continue
        seen.add(q)
        w = solve(kind, d, q)
        if banned and text_keys(w.text) & banned:
            removed += 1
            continue
        out.append(w)
    return out, removed


def heldout_keys(questions: Iterable[str]) -> set[Key]:
    """The identities of held-out questions (``tasks.question`` of each held-out task)."""
    return {problem_key(q) for q in questions}


def heldout_questions(grpo: GRPOStageConfig, distill: DistillConfig | None,
                      seeds: Iterable[int]) -> list[str]:
    """Every problem the RL stages hold out, per seed: the climb's held-out set (notebook 09)
    and each specialist's (notebook 10; specialists by operation, ``add`` and ``sub``, hold
    out parts of the climb's set, nothing more). (The evaluation split at the other
    difficulties is never drawn; banning it too would remove nearly every one-digit fact at
    the gpu preset.)"""
    kinds = [k for k in (distill.specialists if distill else []) if k not in tasks.OPERATIONS]
    configs = [grpo] + [replace(grpo, kinds=[k]) for k in kinds]
    return [tasks.question(t) for seed in seeds for c in configs for t in heldout_set(c, seed)]


def contaminated(texts: Iterable[str], keys: set[Key]) -> list[int]:
    """Indices of the texts that pose or write out a problem in ``keys``."""
    return [i for i, t in enumerate(texts) if text_keys(t) & keys]


def pack_windows(docs: Sequence[Sequence[int]], context: int, eot: int, n: int) -> np.ndarray:
    """Up to ``n`` rows of ``context + 1`` tokens, each starting at a document: documents in
    order, each after an ``eot``; the document that overflows a row is cut there and the next
    row starts with the document after it (so no text is trained on twice)."""
    rows: list[list[int]] = []
    row: list[int] = []
    for doc in docs:
        row += [eot, *doc]
        if len(row) >= context + 1:
            rows.append(row[:context + 1])
            row = []
            if len(rows) == n:
                break
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), context + 1)
