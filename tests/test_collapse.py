"""Model-collapse regimes build their training sets as defined; sample statistics by hand."""

import numpy as np
import pytest

from mai_repro.stages.collapse import REGIMES, distinct_n, tail_stats, training_set


def rows(tag: int, n: int = 20, t: int = 5) -> np.ndarray:
    """Rows whose first token says where they come from (0 = real, g = generation g - 1)."""
    out = np.arange(n * t).reshape(n, t) % 7 + 10
    out[:, 0] = tag
    return out


@pytest.fixture
def data():
    real = rows(0)
    samples = [rows(1), rows(2), rows(3)]  # from generations 0, 1, 2
    return real, samples


@pytest.mark.parametrize("regime", REGIMES)
def test_generation_zero_trains_on_real_data(data, regime):
    real, _ = data
    assert training_set(regime, real, [], 0.1, 0) is real


def test_replace_holds_no_real_data(data):
    real, samples = data
    built = training_set("replace", real, samples, 0.1, 0)
    assert set(built[:, 0]) == {3} and len(built) == len(real)


def test_accumulate_holds_all_real_data_and_every_sample(data):
    real, samples = data
    built = training_set("accumulate", real, samples, 0.1, 0)
    assert len(built) == len(real) + sum(len(s) for s in samples)
    for tag, part in enumerate([real, *samples]):
        assert (built[:, 0] == tag).sum() == len(part)
    assert np.array_equal(built[: len(real)], real)


def test_keep_real_keeps_the_stated_share(data):
    real, samples = data
    built = training_set("keep_real", real, samples, 0.1, 0)
    assert len(built) == len(real)
    assert (built[:, 0] == 0).sum() == 2 and (built[:, 0] == 3).sum() == 18
    assert set(built[:, 0]) == {0, 3}  # nothing from older generations
    # each kept real row is a distinct real row
    kept = built[built[:, 0] == 0]
    assert len({r.tobytes() for r in kept}) == 2


def test_unknown_regime(data):
    with pytest.raises(ValueError, match="regime"):
        training_set("mix", data[0], data[1], 0.1, 0)


def test_distinct_n_by_hand():
    r = np.array([[1, 2, 1, 2, 1]])
    assert distinct_n(r, 2) == pytest.approx(2 / 4)  # (1,2) (2,1) repeated
    assert distinct_n(r, 3) == pytest.approx(2 / 3)


def test_tail_stats_by_hand():
    rare = np.zeros(10, dtype=bool)
    rare[[7, 8]] = True
    sample = np.array([[0, 7, 1, 1], [0, 2, 8, 8]])  # first column: the document start
    s = tail_stats(sample, rare, real_distinct=8)
    assert s.rare_share == pytest.approx(3 / 6)
    assert s.coverage == pytest.approx(4 / 8)  # tokens 1, 2, 7, 8
