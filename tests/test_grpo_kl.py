"""The optional KL to the pre-RL model (issue 22 item 6): the k3 estimator, its gradient, and
the climb with it off (no reference model, nothing changes) and on (``kl_ref`` recorded)."""

import copy
import math

import pytest
import torch

import mai_repro.config as C
from mai_repro.rl import climb, rollout
from mai_repro.rl.grpo import EntropyController, GRPOConfig, action_logp, grpo_loss, kl_k3
from tests.test_rl_loop import rollout_batch, tiny_model, tok  # noqa: F401 (fixture)


def test_k3_by_hand():
    lp = torch.tensor([-0.5, -2.0, -1.0])
    assert torch.equal(kl_k3(lp, lp), torch.zeros(3))  # equal log-probs: exactly zero
    d = torch.tensor([0.3, -0.7, 2.0])  # d = ref - logp
    got = kl_k3(lp, lp + d)
    assert got.tolist() == pytest.approx([math.exp(x) - x - 1 for x in d.tolist()], rel=1e-6)
    assert (got > 0).all()  # positive wherever they differ, either sign of d


def test_k3_is_the_exact_kl_in_expectation_on_a_categorical():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    exact = float((p * (p / q).log()).sum())  # KL(p || q)
    per_action = kl_k3(p.log(), q.log())
    assert float((p * per_action).sum()) == pytest.approx(exact, rel=1e-12)  # E_p, exactly
    g = torch.Generator().manual_seed(0)
    a = torch.multinomial(p, 200_000, replacement=True, generator=g)
    mc = float(per_action[a].mean())  # the estimate from samples of p, as in a climb
    assert mc == pytest.approx(exact, abs=4 * float(per_action[a].std()) / math.sqrt(a.numel()))


def _exact_kl(logits, ref_logits):
    lp, lq = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    return float((lp.exp() * (lp - lq)).sum(-1).mean())


def test_the_kl_term_pulls_the_policy_toward_the_reference():
    """Zero advantages: the only gradient is the KL's. One step on tokens sampled from the
    policy lowers the exact KL(policy || reference); with kl_coef 0 there is no gradient."""
    g = torch.Generator().manual_seed(1)
    ref_logits = torch.randn(1, 64, 5, generator=g)
    start = ref_logits + torch.randn(1, 64, 5, generator=g)
    actions = torch.multinomial(start[0].softmax(-1), 1, generator=g).view(1, 64)
    old = action_logp(start, actions)
    ref = action_logp(ref_logits, actions)
    mask = torch.ones(1, 64, dtype=torch.bool)
    for coef in (0.0, 1.0):
        logits = start.clone().requires_grad_(True)
        out = grpo_loss(logits, actions, old, torch.zeros(1), mask, GRPOConfig(kl_coef=coef),
                        ref_logp=ref)
        assert out.kl == pytest.approx(float(kl_k3(old, ref).mean()), rel=1e-5)
        out.loss.backward()
        if coef == 0:
            assert logits.grad.abs().max() == 0
            continue
        stepped = start - 16.0 * logits.grad  # the token mean spreads the step over 64
        assert _exact_kl(stepped, ref_logits) < 0.95 * _exact_kl(start, ref_logits)
    # the KL term is its own part of the loss: the same batch, KL on minus KL off
    with_kl = grpo_loss(start, actions, old, torch.ones(1), mask, GRPOConfig(kl_coef=0.3),
                        ref_logp=ref)
    without = grpo_loss(start, actions, old, torch.ones(1), mask, GRPOConfig(), ref_logp=ref)
    assert float(with_kl.loss - without.loss) == pytest.approx(0.3 * with_kl.kl, rel=1e-5)


def test_the_kl_step_pulls_a_model_toward_its_reference(tok):  # noqa: F811
    """optimizer_step with the reference: zero advantages, a policy moved off the reference;
    one step lowers the KL to it on the batch (the reference forward runs without replay)."""
    ref = tiny_model(tok, balance="none")
    _, batch = rollout_batch(tok, ref, n_problems=2, g=4)
    batch.advantages.zero_()
    policy = copy.deepcopy(ref)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    frozen = climb.reference_model(ref)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training

    def kl_on_batch(model):
        with torch.no_grad():
            logits, _ = rollout.completion_logits(model, batch, replay=False)
            r, _ = rollout.completion_logits(frozen, batch, replay=False)
            return float(kl_k3(action_logp(logits, batch.actions, batch.nucleus),
                               action_logp(r, batch.actions, batch.nucleus))[batch.mask].mean())

    before = kl_on_batch(policy)
    opt = torch.optim.SGD(policy.parameters(), lr=0.1)
    st = climb.optimizer_step(policy, opt, batch, EntropyController(1.0), GRPOConfig(kl_coef=1.0),
                              climb.Stabilisers().without("routing_replay"), ref=frozen)
    assert st.kl_ref == pytest.approx(before, rel=1e-4)  # measured before the update
    assert 0 < kl_on_batch(policy) < 0.8 * before
    with pytest.raises(ValueError, match="reference"):
        climb.optimizer_step(policy, opt, batch, EntropyController(1.0),
                             GRPOConfig(kl_coef=1.0), climb.Stabilisers())


def _cfg(**kw):
    return C.load("smoke", {"grpo": {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                     "group": 4, "group_early": 2, "early_lo": 0.0,
                                     "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                     "max_new_tokens": 3, "rollout_dtype": "float32", **kw}})


def test_kl_off_builds_no_reference_and_runs_no_reference_forward(tok, monkeypatch):  # noqa: F811
    cfg = _cfg()
    assert cfg.grpo.kl_coef == 0.0  # off by default, as in the report
    assert all(C.load(p).grpo.kl_coef == 0.0 for p in C.PRESETS)
    pool, held = climb.task_sets(cfg.grpo, 0)
    calls = []
    real = climb.completion_logits

    def counted(model, batch, **kwargs):
        calls.append(model)
        return real(model, batch, **kwargs)

    def no_reference(policy):
        raise AssertionError("a reference model was built with kl_coef 0")

    monkeypatch.setattr(climb, "completion_logits", counted)
    monkeypatch.setattr(climb, "reference_model", no_reference)
    res = climb.climb(tiny_model(tok), tok, pool, held, cfg.grpo, steps=2, seed=0,
                      keep_model=True)
    assert len(calls) == 2 and all(m is res.model for m in calls)  # the learner's only
    assert all("kl_ref" not in r for r in res.history)


def test_kl_on_records_kl_ref_from_zero(tok):  # noqa: F811
    cfg = _cfg(kl_coef=0.5, updates_per_batch=2)
    pool, held = climb.task_sets(cfg.grpo, 0)
    res = climb.climb(tiny_model(tok), tok, pool, held, cfg.grpo, steps=3, seed=0)
    kls = [r["kl_ref"] for r in res.history]
    assert len(kls) == 3 and all(k >= 0 for k in kls)
    assert kls[0] < 1e-6  # the first step: the policy is the reference
    with pytest.raises(C.ConfigError):
        C.load("smoke", {"grpo": {"kl_coef": -0.1}})
