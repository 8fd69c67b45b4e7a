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
- ``lines``: each line is judged on its own, against the other completions of the group that
  reached it with the same lines before it (a process reward that a program checks, in the
  manner of Lightman et al., 2023): a line written as the solution writes it scores 1, the
  first departing line 0 (from the character that departs), and each token of line ``l``
  carries its score minus the mean score of line ``l`` over the completions that reached it.
  Lines after the first departure carry nothing. A right answer's lines all score 1. A group
  whose outcomes are all wrong still teaches where its completions part (issue 22, seventh
  round), so this credit is worth most with the early exit's lower bounds at 0. It makes its
  own advantages from the group's completions: ``neg_weight`` does not apply.

Under the first three, completions with an advantage >= 0 are unchanged. A completion that
departs nowhere but is wrong (it stopped early, or the cap cut it) carries its advantage on
its last token (the decision to stop); a task with no program solution keeps the outcome
credit.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Sequence

import torch

from mai_repro.rl import tasks

CREDITS = ("outcome", "first_error", "from_first_error", "lines")


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


def token_spans(pieces: Sequence[str]) -> list[tuple[int, int]]:
    """Each token's character span [start, end) in the text its pieces join into."""
    ends = itertools.accumulate(len(p) for p in pieces)
    return [(e - len(p), e) for p, e in zip(pieces, ends, strict=True)]


def completion_weights(ids: Sequence[int], task: tasks.Task, tok, mode: str) -> torch.Tensor:
    """(len(ids),) weights of a wrong completion's negative advantage under ``mode``."""
    ones = torch.ones(len(ids))
    ref = reference_lines(task)
    if mode == "outcome" or ref is None or not ids:
        return ones
    pieces = token_texts(ids, tok)  # each token read once: the text and the spans from it
    spans = token_spans(pieces)
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


def line_scores(ids: Sequence[int], ref: Sequence[str], right: bool, tok
                ) -> tuple[list[int], list[float | None]]:
    """(line of each token, score of each token) of one completion under the ``lines``
    credit: 1 on the lines it wrote as ``ref`` writes them (all of them when ``right``), 0 on
    its first departing line from the character that departs, None before that character on
    that line and on everything after it (no credit). A wrong completion that departs nowhere
    (stopped early, or cut by the cap) scores 0 on its last token, the decision to stop."""
    pieces = token_texts(ids, tok)
    spans = token_spans(pieces)
    text = "".join(pieces)
    line = [text.count("\n", 0, a) for a, _ in spans]  # the line each token starts on
    scores: list[float | None] = [1.0] * len(ids)
    span = None if right else departure(text, ref)
    if span is not None:
        lo, hi = span
        bad = text.count("\n", 0, lo)  # the departing line's index
        for j, (a, b) in enumerate(spans):
            if a >= hi:  # after the departing line: no credit
                scores[j] = None
            elif b > lo:  # the departing line, from the character that departs
                scores[j] = 0.0
            elif line[j] == bad:  # that line before the departure: shared, no credit
                scores[j] = None
    elif not right and ids:
        scores[-1] = 0.0
    return line, scores


def _line_advantages(groups, advantages: list[float], tok) -> list[torch.Tensor]:
    """Each completion's (n_i,) token advantages under the ``lines`` credit (see the module
    docstring); a task with no program solution keeps its completions' sequence
    ``advantages`` (the outcome credit the climb computed)."""
    out = []
    row = 0
    for g in groups:
        ref = reference_lines(g.task)
        seq, row = advantages[row: row + len(g.completions)], row + len(g.completions)
        if ref is None:
            out += [torch.full((len(c),), a) for c, a in zip(g.completions, seq, strict=True)]
            continue
        judged = [line_scores(c, ref, ok, tok) for c, ok in zip(g.completions, g.correct,
                                                                strict=True)]
        # a line's score for each completion that reached it: its tokens' lowest score
        per_line: dict[int, list[float]] = {}
        for lines, scores in judged:
            seen: dict[int, float] = {}
            for ln, sc in zip(lines, scores, strict=True):
                if sc is not None:
                    seen[ln] = min(sc, seen.get(ln, 1.0))
            for ln, sc in seen.items():
                per_line.setdefault(ln, []).append(sc)
        mean = {ln: sum(v) / len(v) for ln, v in per_line.items()}
        out += [torch.tensor([0.0 if sc is None else sc - mean[ln]
                              for ln, sc in zip(lines, scores, strict=True)])
                for lines, scores in judged]
    return out


def token_advantages(groups, advantages: torch.Tensor, tok, mode: str) -> torch.Tensor:
    """(B,) sequence advantages -> (B, T) token advantages (T: the longest completion), the
    negative ones placed by ``mode``; with ``outcome`` every token has its row's advantage.
    ``lines`` computes its own from the groups' completions (``advantages`` stay only where
    a task has no program solution)."""
    if mode not in CREDITS:
        raise ValueError(f"grpo.credit must be one of {CREDITS}, not {mode!r}")
    comps = [(g.task, c) for g in groups for c in g.completions]
    if len(comps) != advantages.numel():
        raise ValueError(f"{advantages.numel()} advantages for {len(comps)} completions")
    T = max([max(1, len(c)) for _, c in comps], default=1)
    out = torch.zeros(len(comps), T)
    if mode == "lines":
        for b, a in enumerate(_line_advantages(groups, advantages.tolist(), tok)):
            out[b, :len(a)] = a
        return out
    for b, ((task, c), a) in enumerate(zip(comps, advantages.tolist(), strict=True)):
        w = completion_weights(c, task, tok, mode) if a < 0 else torch.ones(len(c))
        out[b, :len(c)] = a * w
    return out
