"""The optional entropy penalty (``grpo.entropy_penalty``): its value is the ``entropy``
statistic, its gradient lowers the learner's entropy inside the nucleus, it is off in every
preset, and with it off the loss is what it was."""

import pytest
import torch

import mai_repro.config as C
from mai_repro.rl import climb
from mai_repro.rl.grpo import GRPOConfig, action_logp, apply_nucleus, grpo_loss


def _batch(seed=0, B=2, T=16, V=6):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    actions = torch.multinomial(logits.view(-1, V).softmax(-1), 1, generator=g).view(B, T)
    nucleus = torch.rand(B, T, V, generator=g) > 0.3  # a ragged nucleus, the action always in
    nucleus.scatter_(-1, actions.unsqueeze(-1), True)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, T // 2:] = False  # a padded row
    return logits, actions, nucleus, mask


def _entropy(logits, nucleus, mask):
    lp = torch.log_softmax(apply_nucleus(logits, nucleus), -1)
    h = -(lp.exp() * lp.masked_fill(torch.isinf(lp), 0.0)).sum(-1)
    return float(h[mask].mean())


def test_the_penalty_lowers_the_entropy_inside_the_nucleus():
    logits, actions, nucleus, mask = _batch()
    old = action_logp(logits, actions, nucleus)
    for pen in (0.0, 0.5):
        x = logits.clone().requires_grad_(True)
        out = grpo_loss(x, actions, old, torch.zeros(2), mask,
                        GRPOConfig(entropy_penalty=pen), nucleus=nucleus)
        assert out.entropy == pytest.approx(_entropy(logits, nucleus, mask), rel=1e-6)
        out.loss.backward()
        assert torch.isfinite(x.grad).all()  # no 0 * -inf outside the nucleus
        if pen == 0:  # zero advantages and no penalty: no gradient at all
            assert x.grad.abs().max() == 0
            continue
        assert x.grad[~mask].abs().max() == 0  # padding carries nothing
        stepped = logits - 4 * float(mask.sum()) * x.grad  # the token mean spreads the step
        assert _entropy(stepped, nucleus, mask) < 0.9 * _entropy(logits, nucleus, mask)


def test_the_penalty_is_its_own_term_of_the_loss():
    logits, actions, nucleus, mask = _batch(seed=1)
    old = action_logp(logits, actions, nucleus) - 0.1  # ratios away from 1: the clip acts
    adv = torch.tensor([1.0, -0.5])
    base = grpo_loss(logits, actions, old, adv, mask, GRPOConfig(), nucleus=nucleus)
    pen = grpo_loss(logits, actions, old, adv, mask, GRPOConfig(entropy_penalty=0.3),
                    nucleus=nucleus)
    assert float(pen.loss - base.loss) == pytest.approx(0.3 * base.entropy, rel=1e-5)
    assert pen.entropy == base.entropy  # the statistic is the same number either way


def test_off_in_every_preset_and_passed_to_the_loss():
    assert all(C.load(p).grpo.entropy_penalty == 0.0 for p in C.PRESETS)
    cfg = C.load("smoke", {"grpo": {"entropy_penalty": 0.2}})
    assert climb.loss_config(cfg.grpo, climb.Stabilisers()).entropy_penalty == 0.2
    with pytest.raises(C.ConfigError):
        C.load("smoke", {"grpo": {"entropy_penalty": -0.1}})
