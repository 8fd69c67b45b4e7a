"""Gated and lexicographic aggregation: property tests on seeded random objectives."""

import random

import pytest

from mai_repro.rl.aggregate import (
    R_MIN,
    Objectives,
    Weights,
    gated_weighted,
    lexicographic,
    lexicographic_key,
    objectives,
)

N = 3000


def _random(rng: random.Random, safe: bool | None = None) -> Objectives:
    # mix exact grid values (ties, edges) with continuous ones
    def x() -> float:
        return rng.choice([0.0, 1.0, 0.5, rng.random(), round(rng.random(), 2)])
    return Objectives(safe=rng.random() < 0.5 if safe is None else safe, task=x(),
                      format=x(), length=x())


@pytest.mark.parametrize("aggregate", [lexicographic, gated_weighted])
def test_no_unsafe_completion_outranks_a_safe_one(aggregate):
    rng = random.Random(0)
    for _ in range(N):
        safe, unsafe = _random(rng, True), _random(rng, False)
        assert aggregate(unsafe) == R_MIN
        assert aggregate(safe) > aggregate(unsafe)
        assert aggregate(safe) >= 0.0


def test_an_unsafe_perfect_completion_gets_the_minimum():
    perfect = Objectives(safe=False, task=1.0, format=1.0, length=0.0)
    assert lexicographic(perfect) == gated_weighted(perfect) == R_MIN


def test_lexicographic_reward_follows_the_lexicographic_order():
    rng = random.Random(1)
    for _ in range(N):
        a, b = _random(rng, True), _random(rng, True)
        ka, kb = lexicographic_key(a), lexicographic_key(b)
        ra, rb = lexicographic(a), lexicographic(b)
        assert (ka > kb) == (ra > rb) and (ka == kb) == (ra == rb), (a, b)


def test_one_more_case_beats_any_format_or_length():
    # task first: the weighted sum can be bought with brevity, the lexicographic reward cannot
    more = Objectives(safe=True, task=0.5, format=0.0, length=1.0)
    fewer = Objectives(safe=True, task=0.49, format=1.0, length=0.0)
    assert lexicographic(more) > lexicographic(fewer)
    assert gated_weighted(more, Weights()) < gated_weighted(fewer, Weights())


def test_bounds_and_validation():
    assert lexicographic(Objectives(True, 1.0, 1.0, 0.0)) == 1.0
    assert lexicographic(Objectives(True, 0.0, 0.0, 1.0)) == 0.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError):
            Objectives(True, bad)


def test_objectives_of_an_episode():
    assert objectives(3, 6, [], False, 50, 100) == Objectives(True, 0.5, 1.0, 0.5)
    assert not objectives(6, 6, ["timeout"], False, 10, 100).safe
    assert objectives(0, 0, [], True, 500, 100) == Objectives(True, 1.0, 0.0, 1.0)
