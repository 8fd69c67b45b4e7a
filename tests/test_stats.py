import numpy as np
import pytest

from mai_repro.stats import Interval, mean_interval, paired_bootstrap, verdict


def test_paired_bootstrap_centres_on_the_mean_difference():
    rng = np.random.default_rng(0)
    a = rng.random(400)
    iv = paired_bootstrap(a + 0.3, a)
    assert iv.mean == pytest.approx(0.3)
    assert iv.lo == pytest.approx(0.3) and iv.hi == pytest.approx(0.3)  # no spread: constant


def test_the_interval_covers_the_truth_and_narrows_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (50, 800):
        a, b = rng.binomial(1, 0.6, n), rng.binomial(1, 0.5, n)
        iv = paired_bootstrap(a, b)
        assert iv.lo < iv.mean < iv.hi
        widths.append(iv.hi - iv.lo)
    assert widths[1] < widths[0] / 2


def test_pairing_removes_the_shared_item_effect():
    """Items of very different difficulty, one arm better by 0.1 on each: the paired interval
    excludes zero although the arms' own spreads overlap."""
    rng = np.random.default_rng(2)
    difficulty = rng.random(60)
    iv = paired_bootstrap(difficulty + 0.1 + rng.normal(0, 0.01, 60), difficulty)
    assert iv.lo > 0.05


def test_verdict_words():
    assert verdict(Interval(0.3, 0.1, 0.5, 10)) == "held"
    assert verdict(Interval(-0.3, -0.5, -0.1, 10)) == "not held"
    assert verdict(Interval(0.1, -0.1, 0.3, 10)) == "inconclusive"
    assert verdict(Interval(0.4, 0.25, 0.5, 10), bar=0.3) == "inconclusive"


def test_mean_interval_and_bad_input():
    iv = mean_interval(np.ones(10))
    assert (iv.mean, iv.lo, iv.hi) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same non-zero"):
        paired_bootstrap(np.ones(3), np.ones(4))
