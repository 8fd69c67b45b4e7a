import numpy as np
import pytest

from mai_repro.train import scaling as sc


def test_fit_recovers_a_known_law():
    C = np.logspace(15, 19, 5)
    true = sc.PowerLawFit(2.0, 0.3, 1.7, (0, 0, 0), 1e17)
    fit = sc.fit_power_law(C, true.loss(C))
    assert fit.alpha == pytest.approx(0.3, rel=1e-3)
    assert fit.E == pytest.approx(1.7, rel=1e-3)
    assert np.allclose(fit.loss(C), true.loss(C), rtol=1e-6)


def test_efficiency_gain_by_hand():
    base = sc.PowerLawFit(1.0, 1.0, 0.0, (0, 0, 0), 1.0)  # L = 1/C
    # a candidate reaching L = 0.25 with C = 2: the baseline needs C = 4 -> EG 2
    assert sc.efficiency_gain(base, 0.25, 2.0) == pytest.approx(2.0)
    assert sc.efficiency_gain(base, 0.5, 2.0) == pytest.approx(1.0)
    shifted = sc.PowerLawFit(1.0, 1.0, 1.0, (0, 0, 0), 1.0)
    assert sc.efficiency_gain(shifted, 0.9, 1.0) == float("inf")  # below the floor E
    with pytest.raises(ValueError):
        sc.efficiency_gain(base, 0.5, 0.0)


def test_fit_needs_three_points():
    with pytest.raises(ValueError, match=">= 3"):
        sc.fit_power_law([1, 2], [3, 2])


def test_rank_agreement_extremes():
    small = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    same = sc.rank_agreement(small, small * 2, n_boot=200)
    assert same.kendall_tau == pytest.approx(1.0) and same.top1_agree
    assert same.pairwise_flips == 0.0
    rev = sc.rank_agreement(small, -small, n_boot=200)
    assert rev.kendall_tau == pytest.approx(-1.0) and not rev.top1_agree
    assert rev.pairwise_flips == 1.0
    one_swap = sc.rank_agreement(small, np.array([2.0, 1.0, 3.0, 4.0, 5.0]), n_boot=200)
    assert one_swap.pairwise_flips == pytest.approx(1 / 10)
    assert one_swap.kendall_ci[0] <= one_swap.kendall_tau <= one_swap.kendall_ci[1]


def test_mixture_regression_recovers_a_linear_truth():
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(3), size=40)
    loss = 3.0 - 1.0 * w[:, 0] + 0.5 * w[:, 1]
    reg = sc.fit_mixture_regression(w, loss, ("a", "b", "c"), ridge=1e-8)
    assert np.allclose(reg.predict(w), loss, atol=1e-3)


def test_fit_recovers_a_synthetic_ladder_with_noise():
    # a 5-rung ladder (compute x4 per rung) with 0.3% multiplicative noise on the losses
    C = 1e12 * 4.0 ** np.arange(5)
    A, alpha, E, c0 = 3.0, 0.25, 2.0, 1e14
    true = sc.PowerLawFit(A, alpha, E, (0, 0, 0), c0)
    loss = true.loss(C) * (1 + 0.003 * np.random.default_rng(1).standard_normal(5))
    fit = sc.fit_power_law(C, loss)
    A_at_c0 = fit.A * (c0 / fit.c0) ** -fit.alpha  # the fit's own c0 is the geometric mean
    assert A_at_c0 == pytest.approx(A, rel=0.1)
    assert fit.alpha == pytest.approx(alpha, rel=0.15)
    assert fit.E == pytest.approx(E, rel=0.05)
    for est, err, truth in zip((fit.alpha, fit.E), fit.stderr[1:], (alpha, E), strict=True):
        assert np.isfinite(err) and abs(est - truth) < 4 * err + 1e-9


def test_efficiency_gain_is_exact_on_a_known_curve():
    base = sc.PowerLawFit(2.0, 0.3, 1.7, (0, 0, 0), 1e17)
    for gain in (0.5, 1.0, 1.3, 4.0):
        # a candidate reaching, with compute C, the loss the baseline reaches with gain * C
        C = 3e16
        assert sc.efficiency_gain(base, float(base.loss(gain * C)), C) == pytest.approx(
            gain, rel=1e-9)


def test_loss_nd_fit_recovers_a_known_law_and_its_allocation():
    """Chinchilla's approach 3 on a synthetic grid: the fit recovers the law, and the
    optimum under C = 6ND matches the closed form N* = G (C/6)^(beta/(alpha+beta))."""
    from mai_repro.train.scaling import LossND, fit_loss_nd

    true = LossND(E=1.5, A=1.0, alpha=0.35, B=1.2, beta=0.3, n0=1e5, d0=1e6)
    sizes = np.array([2e4, 5e4, 1e5, 2e5])
    n = np.repeat(sizes, 3)
    d = np.concatenate([s * np.array([1.0, 4.0, 16.0]) for s in sizes])
    rng = np.random.default_rng(0)
    fit = fit_loss_nd(n, d, true.loss(n, d) + rng.normal(0, 0.002, n.size))
    assert fit.alpha == pytest.approx(true.alpha, abs=0.05)
    assert fit.beta == pytest.approx(true.beta, abs=0.05)
    c = 1e14
    a_, b_ = true.A * true.n0 ** true.alpha, true.B * true.d0 ** true.beta
    g = (true.alpha * a_ / (true.beta * b_)) ** (1 / (true.alpha + true.beta))
    n_closed = g * (c / 6) ** (true.beta / (true.alpha + true.beta))
    n_opt, d_opt = true.optimal(c)
    assert n_opt == pytest.approx(n_closed, rel=1e-3)
    assert 6 * n_opt * d_opt == pytest.approx(c)
    assert fit.optimal(c)[0] == pytest.approx(n_closed, rel=0.3)


def test_loss_nd_fit_refuses_a_grid_without_token_variation():
    from mai_repro.train.scaling import fit_loss_nd

    with pytest.raises(ValueError, match="token counts"):
        fit_loss_nd(np.array([1e4, 2e4] * 3), np.array([1e5, 2e5] * 3), np.ones(6))
