import math
import sys
from pathlib import Path

import pytest
import torch

from mai_repro.rl import rewards as R
from mai_repro.rl.grpo import (
    EntropyController,
    GRPOConfig,
    apply_nucleus,
    group_advantages,
    grpo_loss,
    weight_negatives,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from grpo_loss import dense_loss  # noqa: E402  (benchmarks/grpo_loss.py's baseline)


def test_group_advantages():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = group_advantages(r, 4)
    assert adv.tolist() == [0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0]
    near = group_advantages(torch.tensor([1.0, 1.0, 1.0, 1.0 + 1e-9]), 4, scale_std=True)
    assert torch.isfinite(near).all() and near.abs().max() < 1e-2
    scaled = group_advantages(torch.tensor([0.0, 2.0]), 2, scale_std=True)
    assert scaled.tolist() == [-1.0, 1.0]
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), 4)


def test_weight_negatives_scales_only_the_worse_completions():
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
    assert weight_negatives(adv, 1.0) is adv
    assert weight_negatives(adv, 0.0).tolist() == [0.75, 0.0, 0.0, 0.0]
    assert weight_negatives(adv, 0.5).tolist() == [0.75, -0.125, -0.125, -0.125]


def one_token(logp_new, logp_old, adv, cfg, k=0.0):
    """A one-token, two-action batch with the learner's log-prob of action 0 = logp_new."""
    p = math.exp(logp_new)
    logits = torch.tensor([[[math.log(p), math.log(1 - p)]]], requires_grad=True)
    out = grpo_loss(logits, torch.tensor([[0]]), torch.tensor([[logp_old]]),
                    torch.tensor([adv]), torch.ones(1, 1, dtype=torch.bool), cfg, k)
    out.loss.backward()
    return out, logits.grad


def test_clip_branches_by_hand():
    cfg = GRPOConfig(eps=0.2, r_min=0.0, r_max=10.0)
    # ratio 1.5 > hi = 1.25, positive advantage: clipped, no gradient
    out, g = one_token(math.log(0.6), math.log(0.4), 1.0, cfg)
    assert out.loss.item() == pytest.approx(-1.25) and g.abs().sum() == 0
    assert out.clip_high_frac == 1.0
    # widening the upper bound by k = 0.5 (hi = 1.75) lets the same token learn
    out, g = one_token(math.log(0.6), math.log(0.4), 1.0, cfg, k=0.5)
    assert out.loss.item() == pytest.approx(-1.5) and g.abs().sum() > 0
    # ratio 0.5 < lo = 0.8 with negative advantage: clipped at lo
    out, g = one_token(math.log(0.2), math.log(0.4), -1.0, cfg)
    assert out.loss.item() == pytest.approx(0.8) and g.abs().sum() == 0


def test_outer_clip_bounds_the_unclipped_branch():
    # ratio 8 with a negative advantage: plain PPO takes r * A = -8 (unbounded in r)
    plain = GRPOConfig(eps=0.2, r_min=0.0, r_max=100.0)
    out, g_plain = one_token(math.log(0.8), math.log(0.1), -1.0, plain)
    assert out.loss.item() == pytest.approx(8.0)
    hard = GRPOConfig(eps=0.2, r_min=0.0, r_max=4.0)
    out, g_hard = one_token(math.log(0.8), math.log(0.1), -1.0, hard)
    assert out.loss.item() == pytest.approx(4.0) and out.outer_clip_frac == 1.0
    assert g_hard.abs().sum() == 0 < g_plain.abs().sum()


def test_token_level_normalisation_and_mask():
    cfg = GRPOConfig()
    logits = torch.zeros(2, 3, 4)
    actions = torch.zeros(2, 3, dtype=torch.long)
    old = torch.full((2, 3), math.log(0.25))  # ratio 1 everywhere
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    out = grpo_loss(logits, actions, old, torch.tensor([1.0, -1.0]), mask, cfg)
    assert out.loss.item() == pytest.approx(-(3 * 1.0 - 1.0) / 4)
    assert out.entropy == pytest.approx(math.log(4))


def test_top_p_masking_renormalises_over_the_nucleus():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]])
    nucleus = torch.tensor([[[True, True, False, False]]])
    masked = apply_nucleus(logits, nucleus)
    p = torch.softmax(masked, -1)[0, 0]
    assert p[2] == 0 and p[3] == 0 and p[:2].sum().item() == pytest.approx(1.0)
    out = grpo_loss(logits, torch.tensor([[0]]), torch.log(p[0]).view(1, 1),
                    torch.tensor([1.0]), torch.ones(1, 1, dtype=torch.bool), GRPOConfig(),
                    nucleus=nucleus)
    assert out.ratio_mean == pytest.approx(1.0)


def test_entropy_controller():
    c = EntropyController(target=1.0, delta=0.1, k_max=0.25)
    assert c.update(0.5) == pytest.approx(0.1)  # entropy too low: widen
    assert c.update(0.5) == pytest.approx(0.2)
    assert c.update(0.5) == pytest.approx(0.25)  # capped at k_max
    assert c.update(2.0) == pytest.approx(0.15)  # too high: narrow
    for _ in range(5):
        c.update(2.0)
    assert c.k == 0.0
    d = EntropyController(target=1.0)
    d.load_state_dict({"k": 0.3})
    assert d.k == 0.3


def test_rewards():
    assert R.language_reward("Let x = 2") == 0.0
    assert R.language_reward("Пусть x") == pytest.approx(-5 / 6)
    assert R.language_reward("123 + 4") == 0.0
    assert R.length_penalty(50, 100, 0.8) == pytest.approx(0.4)
    assert R.length_penalty(500, 100, 0.1) == pytest.approx(0.1)
    r, parts = R.total_reward(True, "ok", 50, 100, 0.8, R.RewardWeights(0.1, 0.25))
    assert r == pytest.approx(1.0 - 0.25 * 0.4) and parts["task"] == 1.0


def test_filters_and_curriculum():
    assert R.early_exit_keep([True] + [False] * 15)  # 1/16 = 0.0625 in [0.05, 0.8]
    assert not R.pass_rate_keep([True] + [False] * 15)  # below the regular 0.1
    assert not R.pass_rate_keep([True] * 16) and not R.early_exit_keep([False] * 16)
    assert R.curriculum(0, 4, 8192) == (8192, 0.25)
    assert R.curriculum(3, 4, 8192) == (65536, 0.0)
    assert R.is_stale(0, 9) and not R.is_stale(1, 9)


# Every branch of the clipped surrogate, by hand. eps = 0.2: inner bounds [0.8, 1.25];
# outer clip [0.25, 2.0]; pi_old(a) = 0.4. For an unclipped token the loss is -r A and the
# gradient of the loss with respect to the logits of a two-action softmax is
# (-A r (1 - p), +A r (1 - p)); a clipped token has no gradient.
BRANCHES = [
    # A,   p_new, loss,   grad of logit 0, flags set
    (+1.0, 0.20, -0.50, -0.5 * 0.8, set()),  # A > 0, r = 0.5 below 0.8: unclipped
    (+1.0, 0.40, -1.00, -1.0 * 0.6, set()),  # A > 0, r = 1 inside
    (+1.0, 0.60, -1.25, 0.0, {"clip_high_frac"}),  # A > 0, r = 1.5 above 1.25: clipped
    (-1.0, 0.20, 0.80, 0.0, {"clip_low_frac"}),  # A < 0, r = 0.5 below 0.8: clipped
    (-1.0, 0.40, 1.00, 1.0 * 0.6, set()),  # A < 0, r = 1 inside
    (-1.0, 0.60, 1.50, 1.5 * 0.4, {"neg_high_frac"}),  # A < 0, r = 1.5: PPO's unclipped branch
    # the outer clip removes the gradient (outer_bind_frac) only where no inner bound had:
    (-1.0, 0.90, 2.00, 0.0, {"neg_high_frac", "outer_clip_frac", "outer_bind_frac"}),  # r 2.25
    (+1.0, 0.05, -0.25, 0.0, {"outer_clip_frac", "outer_bind_frac"}),  # A > 0, r = 0.125
    # A > 0, r = 2.25 > r_max: outside the outer bounds, but the upper inner clip had already
    # removed the gradient, so the outer clip changes nothing
    (+1.0, 0.90, -1.25, 0.0, {"clip_high_frac", "outer_clip_frac"}),
]
FLAGS = ("clip_low_frac", "clip_high_frac", "outer_clip_frac", "neg_high_frac",
         "outer_bind_frac")


@pytest.mark.parametrize("adv, p_new, loss, grad0, flags", BRANCHES)
def test_every_clip_branch_by_hand(adv, p_new, loss, grad0, flags):
    cfg = GRPOConfig(eps=0.2, r_min=0.25, r_max=2.0)
    out, g = one_token(math.log(p_new), math.log(0.4), adv, cfg)
    assert out.loss.item() == pytest.approx(loss)
    assert g[0, 0, 0].item() == pytest.approx(grad0, abs=1e-6)
    assert g[0, 0, 1].item() == pytest.approx(-grad0, abs=1e-6)
    assert {f for f in FLAGS if getattr(out, f) == 1.0} == flags
    assert all(getattr(out, f) == 0.0 for f in FLAGS if f not in flags)
    assert out.ratio_mean == pytest.approx(p_new / 0.4)


def test_controller_k_sequence_for_an_entropy_trace():
    c = EntropyController(target=1.0, delta=0.1, k_max=0.25)
    trace = [0.5, 0.5, 0.5, 0.5, 1.5, 1.0, 0.2, 2.0, 2.0, 2.0]
    ks = [round(c.update(h), 10) for h in trace]
    assert ks == [0.1, 0.2, 0.25, 0.25, 0.15, 0.15, 0.25, 0.15, 0.05, 0.0]


def test_constant_reward_groups_have_finite_zero_advantages():
    for scale in (False, True):
        adv = group_advantages(torch.tensor([1.0] * 4 + [0.0] * 4 + [0.3] * 4), 4,
                               scale_std=scale)
        assert torch.isfinite(adv).all() and adv.abs().max() == 0


def test_ratio_is_exactly_one_on_policy():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    actions = torch.randint(0, 11, (3, 5))
    old = torch.log_softmax(logits, -1).gather(-1, actions[..., None]).squeeze(-1)
    out = grpo_loss(logits, actions, old, torch.tensor([1.0, -0.5, 0.0]),
                    torch.ones(3, 5, dtype=torch.bool), GRPOConfig())
    assert out.ratio_mean == 1.0 and out.ratio_min == 1.0 and out.ratio_max == 1.0


def test_without_top_p_masking_the_ratio_is_the_nucleus_mass():
    logits = torch.tensor([[[2.0, 1.0, 0.0, -1.0]]])
    nucleus = torch.tensor([[[True, True, False, False]]])
    p_nuc = torch.softmax(apply_nucleus(logits, nucleus), -1)[0, 0, 0]
    kw = dict(actions=torch.tensor([[0]]), old_logp=torch.log(p_nuc).view(1, 1),
              advantages=torch.tensor([1.0]), mask=torch.ones(1, 1, dtype=torch.bool),
              cfg=GRPOConfig(), nucleus=nucleus)
    masked = grpo_loss(logits, **kw)
    unmasked = grpo_loss(logits, **kw, top_p_mask=False)
    mass = torch.softmax(logits, -1)[0, 0, :2].sum().item()
    assert masked.ratio_mean == pytest.approx(1.0) and masked.nucleus_mass == pytest.approx(mass)
    assert unmasked.ratio_mean == pytest.approx(mass)


@pytest.mark.parametrize("value", [0.3, 0.1, 0.7, 1e-3, 123.456])
@pytest.mark.parametrize("scale", [False, True])
def test_constant_group_of_8_has_zero_advantage(value, scale):
    """Issue 20: 8 x 0.3 (float32) gave +0.0298 with scale_std: rounding / the 1e-6 floor."""
    adv = group_advantages(torch.full((8,), value, dtype=torch.float32), 8, scale_std=scale)
    assert adv.abs().max().item() == 0.0


def test_small_real_spread_is_still_scaled():
    r = torch.tensor([0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.30, 0.31])
    adv = group_advantages(r, 8, scale_std=True)
    assert adv[-1].item() == pytest.approx(7 ** 0.5, rel=1e-3)  # (x - mean) / std, one outlier
    assert adv.sum().abs().item() < 1e-4



def test_padding_left_out_gives_the_same_gradient_bit_for_bit():
    """Right-padded rows (completions of different lengths, as in the worked format): the
    loss that leaves the padding out has the dense loss's gradient exactly (the loss as it
    was written before, benchmarks/grpo_loss.py's baseline), and the same statistics up to
    the order of their sums."""
    torch.manual_seed(0)
    B, T, V = 6, 9, 50
    lens = torch.tensor([9, 3, 7, 1, 5, 9])
    mask = torch.arange(T)[None] < lens[:, None]
    logits = (torch.randn(B, T, V) * 3).requires_grad_()
    actions = torch.randint(0, V, (B, T))
    nucleus = torch.rand(B, T, V) < 0.2
    nucleus.scatter_(-1, actions[..., None], True)
    nucleus[~mask] = True
    old = torch.log_softmax(logits.detach().masked_fill(~nucleus, float("-inf")), -1) \
        .gather(-1, actions[..., None]).squeeze(-1) + 0.3 * torch.randn(B, T)
    adv = torch.randn(B)
    cfg = GRPOConfig(eps=0.2, r_min=0.5, r_max=2.0)
    ref_loss, ref_logp, ref_entropy, ref_mass = dense_loss(
        logits, actions, old, adv, mask, cfg, 0.3, nucleus)
    (g_ref,) = torch.autograd.grad(ref_loss, logits)
    out = grpo_loss(logits, actions, old, adv, mask, cfg, k=0.3, nucleus=nucleus)
    (g,) = torch.autograd.grad(out.loss, logits)
    assert torch.equal(g[mask], g_ref[mask]) and g[~mask].abs().max() == 0
    assert out.loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    assert torch.equal(out.logp[mask], ref_logp[mask])
    assert out.entropy == pytest.approx(ref_entropy, rel=1e-5)
    assert out.nucleus_mass == pytest.approx(ref_mass, rel=1e-5)
    assert out.n_tokens == int(lens.sum())


@pytest.mark.parametrize("entropy_penalty", [0.0, 0.1])
def test_nucleus_only_loss_matches_the_vocabulary_wide_one(entropy_penalty):
    """grpo.nucleus_only: the loss computed on the nucleus's columns alone has the
    vocabulary-wide loss's value, gradient (zero outside the nucleus) and statistics, up to
    the order of the sums; the per-token advantages of the worked format's credit too."""
    torch.manual_seed(1)
    B, T, V = 5, 8, 300
    lens = torch.tensor([8, 2, 6, 1, 8])
    mask = torch.arange(T)[None] < lens[:, None]
    logits = (torch.randn(B, T, V) * 3).requires_grad_()
    actions = torch.randint(0, V, (B, T))
    nucleus = torch.rand(B, T, V) < 0.05
    nucleus.scatter_(-1, actions[..., None], True)
    old = torch.log_softmax(logits.detach().masked_fill(~nucleus, float("-inf")), -1) \
        .gather(-1, actions[..., None]).squeeze(-1) + 0.3 * torch.randn(B, T)
    for adv in (torch.randn(B), torch.randn(B, T)):
        outs, grads = [], []
        for only in (False, True):
            cfg = GRPOConfig(eps=0.2, r_min=0.5, r_max=2.0, entropy_penalty=entropy_penalty,
                             nucleus_only=only)
            out = grpo_loss(logits, actions, old, adv, mask, cfg, k=0.3, nucleus=nucleus)
            outs.append(out)
            grads.append(torch.autograd.grad(out.loss, logits)[0])
        dense, compact = outs
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)
        assert grads[1][~nucleus].abs().max() == 0
        assert compact.loss.item() == pytest.approx(dense.loss.item(), rel=1e-5)
        torch.testing.assert_close(compact.logp, dense.logp)
        for name in ("entropy", "nucleus_mass", "ratio_mean", "clip_low_frac",
                     "clip_high_frac", "outer_clip_frac", "outer_bind_frac"):
            assert getattr(compact, name) == pytest.approx(getattr(dense, name), rel=1e-5), name
    # without top-p masking (its ablation) the whole vocabulary is the distribution: the
    # vocabulary-wide path, bit for bit
    adv = torch.randn(B)
    off = [grpo_loss(logits, actions, old, adv, mask, GRPOConfig(nucleus_only=only),
                     nucleus=nucleus, top_p_mask=False) for only in (False, True)]
    assert torch.equal(off[0].loss, off[1].loss) and off[0].entropy == off[1].entropy
