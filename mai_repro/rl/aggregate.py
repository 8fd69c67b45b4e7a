"""Gated and lexicographic aggregation of several objectives into one reward (issue 23).

The report merges specialists with a reward that is *gated* (an unsafe answer gets the minimum
reward whatever else it does) and *lexicographic* (a lower-priority objective only breaks ties
of the higher ones). Objectives of one completion, each in [0, 1]:

- ``safe``: no sandbox violation and no forbidden call (the gate);
- ``task``: the share of hidden test cases passed;
- ``format``: the completion is well-formed (the module imports);
- ``length``: the completion's length as a share of a cap (lower is better).

:func:`lexicographic` quantises each objective to ``levels`` steps and reads them as the digits
of one number in base ``levels``: task first, then format, then brevity. Quantised, the order
is exact: a completion that passes one more case always outranks any shorter or better-formed
one. :func:`gated_weighted` is the usual weighted sum behind the same gate, for comparison.
Both give every unsafe completion :data:`R_MIN`, below every safe one (tests/test_aggregate.py
checks both on seeded random objectives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

R_MIN = -1.0  # the reward of every unsafe completion; every safe one gets at least 0


@dataclass(frozen=True)
class Objectives:
    safe: bool
    task: float
    format: float = 1.0
    length: float = 0.0

    def __post_init__(self) -> None:
        for name in ("task", "format", "length"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)
                    and 0.0 <= value <= 1.0):
                raise ValueError(f"{name} must be a finite number in [0, 1], got {value!r}")


def quantise(x: float, levels: int) -> int:
    """x in [0, 1] -> an integer step in [0, levels - 1]."""
    return min(levels - 1, math.floor(x * (levels - 1) + 0.5))


def lexicographic_key(o: Objectives, levels: int = 100) -> tuple[int, int, int]:
    """The order of safe completions: task, then format, then brevity (all quantised)."""
    return (quantise(o.task, levels), quantise(o.format, levels),
            quantise(1.0 - o.length, levels))


def lexicographic(o: Objectives, levels: int = 100) -> float:
    """R_MIN when unsafe; otherwise the lexicographic key read as a number in [0, 1]."""
    if levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if not o.safe:
        return R_MIN
    value = 0
    for digit in lexicographic_key(o, levels):
        value = value * levels + digit
    return value / (levels ** 3 - 1)


@dataclass(frozen=True)
class Weights:
    task: float = 1.0
    format: float = 0.1
    length: float = 0.05


def gated_weighted(o: Objectives, w: Weights = Weights()) -> float:
    """R_MIN when unsafe; otherwise a weighted sum normalised into [0, 1]."""
    if not o.safe:
        return R_MIN
    top = w.task + w.format + w.length
    return (w.task * o.task + w.format * o.format + w.length * (1.0 - o.length)) / top


def objectives(passed: int, total: int, violations: list[str], import_failed: bool,
               chars: int, cap: int) -> Objectives:
    """The objectives of an episode. A grader that finds no case finds no failure (task 1):
    that is what the test-deleting hack exploits when the tests are not reset."""
    if cap <= 0:
        raise ValueError(f"cap must be positive, got {cap}")
    return Objectives(safe=not violations, task=passed / total if total else 1.0,
                      format=0.0 if import_failed else 1.0, length=min(1.0, chars / cap))
