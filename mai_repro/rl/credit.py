"""Token-level credit for worked completions: put a wrong answer's blame on the line that
went wrong (``grpo.credit``; issue 22, docs/rl.md "Sixth round").

GRPO gives every token of a completion its completion's advantage. A wrong worked answer is
usually right up to one line (``Ones: 5 - 8 = 0.`` where the program writes the borrow) and
then consistent with that line; its negative advantage pushes down the steps it got right as
much as the one it got wrong, and the consistent copying after it. The worked format lets a
program find the line: the mid-training bootstrap taught the model the solutions that
:func:`mai_repro.rl.worked.solve` writes, one deterministic text per problem, so the first
line of a completion that departs from it is where the completion went wrong (or left the
taught format). The reward stays the outcome; only where a negative advantage lands changes:

- ``outcome``: every token carries its completion's advantage (GRPO; the default).
- ``first_error``: a completion with a negative advantage carries it only on the tokens of
  its first departing line, from the first character that departs to the line's end; the
  lines before it (steps it got right) and after it (which follow from the error) carry none.
- ``from_first_error``: the first departing line and every token after it.

Completions with an advantage >= 0 are unchanged. A completion that departs nowhere but is
wrong (it stopped early, or the cap cut it) carries its advantage on its last token (the
decision to stop); a task with no program solution keeps the outcome credit.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence

import torch

from mai_repro.rl import tasks

CREDITS = ("outcome", "first_error", "from_first_error")


def reference_lines(task: tasks.Task) -> tuple[str, ...] | None:
    """The lines a worked completion of ``task`` should write (after its prompt); None for
    an ``answer_line`` task (nothing to locate in one line) or a question the program does
    not solve."""
    if task.fmt != "worked":
        return None
    return _solution_lines(task.kind, task.difficulty, tasks.question(task))


@functools.lru_cache(maxsize=4096)  # a problem's group of completions asks for it often
def _solution_lines(kind: str, difficulty: int, question: str) -> tuple[str, ...] | None:
    from mai_repro.rl import worked  # worked imports the climb module, which imports this one

    try:
        text = worked.solve(kind, difficulty, question).text
    except (AttributeError, KeyError, ValueError):  # not a question the program solves
        return None
    return tuple(text.split("\n")[1:])  # the first line is the question (the prompt's)


def departure(text: str, reference: Sequence[str]) -> tuple[int, int] | None:
    """The character span [start, end) of the first line of ``text`` that is not the same
    line of ``reference`` (trailing spaces aside), from its first character that differs to
    the line's end and newline; None when every line of ``text`` agrees with the reference's
    (an unfinished last line agrees when the reference's line starts with it)."""
    pos = 0
    lines = text.split("\n")
    for i, line in enumerate(lines):
        end = pos + len(line)
        last = i == len(lines) - 1  # no newline after it: it may be a reference line, unfinished
        if last and i < len(reference) and reference[i].startswith(line):
            return None
        if i >= len(reference) or line.rstrip() != reference[i].rstrip():
            if line.strip() or i < len(reference):  # an empty last piece is not a line
                ref = reference[i] if i < len(reference) else ""
                same = len(os.path.commonprefix([line, ref]))  # the characters they share
                return pos + same, min(len(text), end + 1)
        pos = end + 1
    return None


def token_texts(ids: Sequence[int], tok) -> list[str]:
    """Each token's text in the completion (the document boundary: empty, at the end).
    Worked completions are ASCII, so a byte is a character."""
    return ["" if t == tok.eot_id else tok.token_bytes(t).decode("latin-1") for t in ids]


def completion_weights(ids: Sequence[int], task: tasks.Task, tok, mode: str) -> torch.Tensor:
    """(len(ids),) weights of a wrong completion's negative advantage under ``mode``."""
    ones = torch.ones(len(ids))
    ref = reference_lines(task)
    if mode == "outcome" or ref is None or not ids:
        return ones
    pieces = token_texts(ids, tok)  # each token read once: the text and the spans from it
    ends = list(itertools.accumulate(len(p) for p in pieces))
    spans = [(e - len(p), e) for p, e in zip(pieces, ends, strict=True)]
    span = departure("".join(pieces), ref)
    w = torch.zeros(len(ids))
    if span is None:  # right as far as it went: the blame is on stopping there
        w[-1] = 1.0
        return w
    lo, hi = span
    for j, (a, b) in enumerate(spans):
        if (a < hi and b > lo) if mode == "first_error" else b > lo:
            w[j] = 1.0
    if not w.any():  # the span is the end of the text (an empty departing line)
        w[-1] = 1.0
    return w


def token_advantages(groups, advantages: torch.Tensor, tok, mode: str) -> torch.Tensor:
    """(B,) sequence advantages -> (B, T) token advantages (T: the longest completion), the
    negative ones placed by ``mode``; with ``outcome`` every token has its row's advantage."""
    if mode not in CREDITS:
        raise ValueError(f"grpo.credit must be one of {CREDITS}, not {mode!r}")
    comps = [(g.task, c) for g in groups for c in g.completions]
    if len(comps) != advantages.numel():
        raise ValueError(f"{advantages.numel()} advantages for {len(comps)} completions")
    T = max([max(1, len(c)) for _, c in comps], default=1)
    out = torch.zeros(len(comps), T)
    for b, ((task, c), a) in enumerate(zip(comps, advantages.tolist(), strict=True)):
        w = completion_weights(c, task, tok, mode) if a < 0 else torch.ones(len(c))
        out[b, :len(c)] = a * w
    return out
