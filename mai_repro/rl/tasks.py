"""Verifiable math tasks, generated procedurally, with exact answer checking.

The report allows synthetic RL *environments* (it forbids synthetic pre-training text): a
problem generator with a known answer. Four kinds (the first three are the default draw),
each with a difficulty knob:

- ``arithmetic``: one operation on numbers of ``difficulty + 1`` digits;
- ``expression``: ``difficulty + 2`` integers combined with +, -, * and brackets;
- ``linear``: solve ``a*x + b = c`` for an integer x, coefficients growing with difficulty;
- ``addsub`` (not in the default :data:`KINDS`): ``arithmetic`` without multiplication, an
  addition or a subtraction of two ``difficulty + 1``-digit numbers. At difficulty 1 and up
  its column steps are one-digit facts that training text may hold while the held-out
  problems themselves stay unseen (issue 22: a task the model can infer, not recall).

Answers are integers written on a final line ``Answer: <integer>``. A task has one of two
response formats (``Task.fmt``, ``grpo.answer_format``):

- ``answer_line``: the prompt ends with ``Answer:`` (:func:`rl_prompt`), so the completion's
  first line completes the answer line (:func:`grade`): a base model that has never seen the
  format can stumble into it; a completion is a few tokens;
- ``worked``: the prompt ends after the question's line, and the completion may write worked
  lines (``2 + 1 = 3.``) before its ``Answer: <integer>`` line, as the procedural texts of
  mid-training do (:mod:`mai_repro.rl.worked`). Response length then matters, so the length
  curriculum and the length penalty act. The completion ends at the newline after its answer
  line or at the document boundary; an answer line cut off by the length cap is not an answer.

The train and evaluation splits are drawn from disjoint seed streams and de-duplicated against
each other, and their prompts feed the curation stage's decontamination list.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

Kind = Literal["arithmetic", "expression", "linear", "addsub"]
KINDS: tuple[Kind, ...] = ("arithmetic", "expression", "linear")  # the default draw
Format = Literal["answer_line", "worked"]
FORMATS: tuple[Format, ...] = ("answer_line", "worked")
# The integer as it is written: no leading zeros, no "-0" (a policy must not pass "0000" off
# as 0; the laptop climb found that one). ASCII digits only (``\d`` would take "1٣" for 13),
# and at most MAX_ANSWER_DIGITS of them: every task's answer is far shorter, and int() refuses
# strings over 4300 digits with a ValueError that a sampled completion must never raise.
MAX_ANSWER_DIGITS = 18
ANSWER_RE = re.compile(rf"Answer:\s*(0|-?[1-9][0-9]{{0,{MAX_ANSWER_DIGITS - 1}}})\s*$")
INSTRUCTION = "Give the final answer on its own last line as 'Answer: <integer>'."


@dataclass(frozen=True)
class Task:
    id: str
    kind: str
    difficulty: int
    prompt: str
    answer: int
    fmt: Format = "answer_line"  # the response format (module docstring)


def _two_numbers(rng: random.Random, d: int, ops: str) -> tuple[str, int]:
    hi = 10 ** (d + 1) - 1
    a, b = rng.randint(0, hi), rng.randint(0, hi)
    op = rng.choice(ops)
    return f"Compute {a} {op} {b}.", eval(f"{a} {op} {b}")  # noqa: S307 - our own digits


def _arithmetic(rng: random.Random, d: int) -> tuple[str, int]:
    return _two_numbers(rng, d, "+-*")


def _addsub(rng: random.Random, d: int) -> tuple[str, int]:
    return _two_numbers(rng, d, "+-")


def _expression(rng: random.Random, d: int) -> tuple[str, int]:
    expr = str(rng.randint(1, 9 + d))
    for _ in range(d + 1):
        op, n = rng.choice("+-*"), rng.randint(1, 9 + d)
        expr = f"({expr} {op} {n})" if rng.random() < 0.5 else f"{n} {op} {expr}"
    expr = expr[1:-1] if expr.startswith("(") and expr.endswith(")") else expr
    return f"Evaluate {expr}.", eval(expr)  # noqa: S307 - built from our own digits


def _linear(rng: random.Random, d: int) -> tuple[str, int]:
    span = 5 * (d + 1)
    x = rng.randint(-span, span)
    a = rng.choice([k for k in range(-span, span + 1) if k not in (0,)])
    b = rng.randint(-span * 3, span * 3)
    c = a * x + b
    lhs = f"{a}*x" + (f" + {b}" if b >= 0 else f" - {-b}")
    return f"Solve for x: {lhs} = {c}.", x


# The two halves of an ``addsub`` task set, by operation: the specialists of notebook 10 on
# the worked task (distill.specialists [add, sub]) split grpo's own training pool and
# held-out set, which mid-training's bootstrap was decontaminated against, rather than draw
# problems of their own that the bootstrap's worked solutions may hold.
OPERATIONS = {"add": "+", "sub": "-"}
_OPERATION_RE = re.compile(r"^Compute -?\d+ ([-+*]) -?\d+\.")


def of_operation(items: list[Task], name: str) -> list[Task]:
    """The tasks of ``items`` whose one operation is :data:`OPERATIONS` ``[name]``."""
    op = OPERATIONS[name]
    return [t for t in items if (m := _OPERATION_RE.match(question(t))) and m.group(1) == op]


GENERATORS = {"arithmetic": _arithmetic, "expression": _expression, "linear": _linear,
              "addsub": _addsub}
ALL_KINDS: tuple[Kind, ...] = tuple(GENERATORS)  # every kind a config may name


def generate(n: int, *, kinds: tuple[str, ...] = KINDS, difficulty: int = 1, seed: int = 0,
             split: Literal["train", "eval"] = "train", fmt: Format = "answer_line"
             ) -> list[Task]:
    """``n`` distinct tasks; the eval split never shares a prompt with the train split. The
    format changes how a task is prompted and graded, never which problems are drawn."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown answer format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if difficulty < 0:
        raise ValueError(f"difficulty must be >= 0, got {difficulty}")
    unknown = set(kinds) - set(GENERATORS)
    if unknown:
        raise ValueError(f"unknown task kinds {sorted(unknown)}; allowed: {', '.join(ALL_KINDS)}")
    # Disjoint streams: eval prompts are drawn with another seed and are removed from train.
    rng = random.Random(f"{split}:{seed}:{difficulty}")
    banned = set()
    if split == "train":
        banned = {t.prompt for t in generate(n, kinds=kinds, difficulty=difficulty, seed=seed,
                                             split="eval")}
    tasks: list[Task] = []
    seen: set[str] = set()
    attempts = 0
    while len(tasks) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct {split} tasks at difficulty "
                             f"{difficulty}; ask for fewer or raise the difficulty")
        kind = kinds[len(tasks) % len(kinds)]
        question, answer = GENERATORS[kind](rng, difficulty)
        prompt = f"{question} {INSTRUCTION}"
        if prompt in seen or prompt in banned:
            continue
        seen.add(prompt)
        tasks.append(Task(f"{split}-{kind}-{difficulty}-{len(tasks)}", kind, difficulty, prompt,
                          int(answer), fmt))
    return tasks


def extract_answer(completion: str) -> int | None:
    """The integer on the completion's last non-empty line, if it has the answer format."""
    lines = [ln for ln in completion.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    m = ANSWER_RE.search(lines[-1].strip())
    return int(m.group(1)) if m else None


def is_correct(completion: str, task: Task) -> bool:
    """The binary task outcome: exact integer match in the required format."""
    return extract_answer(completion) == task.answer


ANSWER_PREFIX = "Answer:"


def question(task: Task) -> str:
    """The problem without the answer-format instruction."""
    return task.prompt.removesuffix(" " + INSTRUCTION)


def answer_prompt(task: Task) -> str:
    """The problem, then the start of the answer line (the ``answer_line`` prompt)."""
    return f"{question(task)}\n{ANSWER_PREFIX}"


def rl_prompt(task: Task) -> str:
    """The prompt of the RL climb. ``answer_line``: the problem, then the start of the answer
    line (which says the format; the written instruction would only double the prompt's
    length). ``worked``: the problem and a newline; the model writes the rest."""
    if task.fmt == "worked":
        return f"{question(task)}\n"
    return answer_prompt(task)


def answer_line_done(completion: str) -> bool:
    """Whether a ``worked`` completion has finished its answer line (a newline after a line
    that starts with ``Answer:``): where it ends."""
    lines = completion.split("\n")[:-1]  # the complete lines
    return any(ln.strip().startswith(ANSWER_PREFIX) for ln in lines)


def grade(completion: str, task: Task, finished: bool = True) -> bool:
    """The binary outcome of a completion of :func:`rl_prompt`.

    ``answer_line``: its first line must finish the answer line, exactly ``Answer: <the
    integer>`` (spaces aside). ``worked``: its last non-empty line must be that answer line,
    and the completion must have ended by itself (``finished``: a newline after the answer
    line or the document boundary), not at the length cap, which could cut ``Answer: 72``
    to ``Answer: 7``.
    """
    if task.fmt == "worked":
        return finished and is_correct(completion, task)
    first = completion.split("\n", 1)[0]
    return is_correct(ANSWER_PREFIX + first, task)


def decontamination_texts(n_per_split: int = 200, difficulties: tuple[int, ...] = (0, 1, 2, 3),
                          seed: int = 0) -> list[str]:
    """Questions of the task sets (train and eval) that must not occur in pre-training data."""
    texts = []
    for d in difficulties:
        for split in ("train", "eval"):
            texts += [question(t) for t in generate(n_per_split, difficulty=d, seed=seed,
                                                    split=split)]
    return texts
