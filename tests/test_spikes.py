import math

from mai_repro.train.spikes import SpikeDetector


def warm(d, n=20):
    for i in range(n):
        assert d.check(2.0 + 0.01 * (i % 3), 1.0 + 0.01 * (i % 2)) == "ok"


def test_spike_is_skipped_and_repeated_spikes_roll_back():
    d = SpikeDetector(window=20, z_threshold=6.0, max_skips=3)
    warm(d)
    assert d.check(10.0) == "skip"
    assert d.check(2.0) == "ok"  # isolated spike: training goes on
    assert d.check(10.0) == "skip" and d.check(11.0) == "skip" and d.check(12.0) == "rollback"
    assert (d.n_skipped, d.n_rollbacks) == (3, 1)


def test_nan_and_grad_norm_spikes():
    d = SpikeDetector()
    warm(d)
    assert d.check(math.nan) == "skip"
    assert d.check(2.0, 50.0) == "skip"
    assert d.check(2.0, 1.0) == "ok"


def test_no_judgement_before_enough_history():
    d = SpikeDetector(min_history=10)
    assert d.check(100.0) == "ok" and d.check(1.0) == "ok"


def test_state_round_trip():
    d = SpikeDetector()
    warm(d)
    d.check(10.0)
    e = SpikeDetector()
    e.load_state_dict(d.state_dict())
    assert e.check(11.0) == d.check(11.0) and e.state_dict() == d.state_dict()


def test_a_batch_a_few_percent_harder_on_a_flat_stretch_is_no_spike():
    """On a flat stretch the measured deviation is tiny; the floor (2% of the mean) keeps an
    ordinary harder batch (+10%) from counting, while a planted one (+30%) still does."""
    from mai_repro.train.spikes import SpikeDetector

    det = SpikeDetector(window=20, z_threshold=6.0)
    for i in range(20):
        assert det.check(6.0 + 0.01 * (i % 3)) == "ok"
    assert det.check(6.6) == "ok"
    assert det.check(7.9) == "skip"
    assert SpikeDetector(window=20, z_threshold=6.0, rel_floor=0.0).check(6.0) == "ok"
    strict = SpikeDetector(window=20, z_threshold=6.0, rel_floor=0.0)
    for i in range(20):
        strict.check(6.0 + 0.01 * (i % 3))
    assert strict.check(6.6) == "skip"  # without the floor the same batch was refused
