"""Mixture search: the mixtures, noise-aware flips, the stage end to end and 07's hand-off."""

import numpy as np
import pytest
from test_ladder import tiny_cfg, write_synthetic_tokenizer_stage

from mai_repro import artifacts
from mai_repro.data.config import FAMILIES
from mai_repro.stages import mixtures as mixsearch
from mai_repro.stages import read_metrics


def test_mixtures_are_anchored_floored_and_seeded():
    shares = {"code": 54.6, "stem": 15.8, "math": 5.4, "general": 22.7, "multilingual": 1.6}
    mixes = mixsearch.make_mixtures(8, shares, seed=0, concentration=1.0, min_weight=0.02)
    assert list(mixes)[:3] == ["report", "stem_heavy", "uniform"]
    assert len(mixes) == 8
    for w in mixes.values():
        assert set(w) == set(FAMILIES)
        assert sum(w.values()) == pytest.approx(1.0)
        assert min(w.values()) >= 0.02 - 1e-12
    assert mixes["report"]["code"] > mixes["stem_heavy"]["code"]
    assert mixes == mixsearch.make_mixtures(8, shares, 0, 1.0, 0.02)
    assert mixes != mixsearch.make_mixtures(8, shares, 1, 1.0, 0.02)


def test_flips_beyond_noise_by_hand():
    small = np.array([1.0, 2.0, 3.0, 3.05])
    large = np.array([2.0, 1.0, 3.0, 2.99])
    # pairs: (0,1) flips clearly; (2,3) flips but within the noise at the small scale
    flips, clear = mixsearch.flips_beyond_noise(small, large, noise_small=0.1, noise_large=0.1)
    assert flips == 1
    # gaps at the small scale 1, 2, 2.05, 1, 1.05, 0.05; at the large 1, 1, 0.99, 2, 1.99, 0.01:
    # every pair but (2,3) is above the noise at both scales
    assert clear == 5


def test_stage_end_to_end_and_hand_off(tmp_path):
    run = artifacts.Run(tiny_cfg(), tmp_path)
    write_synthetic_tokenizer_stage(run)
    res = mixsearch.build(run)
    m = read_metrics(run, "mixtures")  # MixturesMetrics, loaded strictly from the manifest
    assert m.scales == res.metrics.scales and m.objective == res.metrics.objective
    chosen = mixsearch.chosen_mixture(run)
    assert set(chosen) == set(FAMILIES) and sum(chosen.values()) == pytest.approx(1.0)
    assert chosen == m.chosen_mixture == res.mixtures[m.best_large]
    assert res.objective.shape == (2, 5)
    assert m.best_large == list(res.mixtures)[int(res.objective[-1].argmin())]
    lo, hi = m.kendall_ci
    assert -1 <= lo <= hi <= 1
    assert isinstance(m.rank_noninvariance, bool)
    assert len(list((tmp_path / "mixtures" / "runs").glob("*.json"))) == 2 * (5 + 1)
    assert all(p.is_file() for p in res.figures.values())
