"""The RL climb's pieces on a tiny random model: rollouts, layout, learner step, filters."""

import copy
import dataclasses

import pytest
import torch

import mai_repro.config as C
from mai_repro.data import tokenizer as tk
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.rl import climb, rollout, tasks
from mai_repro.rl.grpo import EntropyController, GRPOConfig, group_advantages, grpo_loss
from mai_repro.stages import grpo as grpo_stage


@pytest.fixture(scope="module")
def tok():
    texts = [t.prompt + "\nAnswer: " + str(t.answer) + "\n" for t in tasks.generate(200)]
    return tk.train(texts + ["def f(x):\n    return x + 1\n"] * 20, vocab_size=400)


def tiny_model(tok, seed=0, **kw):
    torch.manual_seed(seed)
    model = Transformer(ModelConfig(
        vocab_size=tok.vocab_size, n_layers=2, d_model=32, n_heads=2, n_kv_heads=1,
        attn_period=2, window=16, max_seq_len=128, d_ff=64, n_experts=4, top_k=2, d_expert=32,
        d_latent=16, ffn_layout="all_moe", **kw))
    with torch.no_grad():  # non-zero attention output and a lively router
        for block in model.blocks:
            block.attn.o.weight.normal_(0, 0.2)
            block.ffn.router.weight.normal_(0, 1.0)
    return model


def rollout_batch(tok, model, n_problems=3, g=4, cap=6, top_p=0.9, seed=0):
    problems = tasks.generate(n_problems, kinds=("arithmetic",), difficulty=0, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    groups = rollout.sample_groups(model, tok, problems, g, cap, top_p=top_p, generator=gen)
    adv = group_advantages(torch.randn(n_problems * g), g)
    return groups, rollout.learner_batch(groups, adv, tok.vocab_size, tok.pad_id)


def test_grading_and_stop_tokens(tok):
    t = tasks.Task("x", "arithmetic", 0, "Compute 3 + 4.", 7)
    assert tasks.rl_prompt(t).endswith("\nAnswer:")
    assert tasks.grade(" 7", t) and tasks.grade(" 7\nmore text", t)
    assert not tasks.grade(" 7 apples", t) and not tasks.grade(" 8\n", t)
    assert not tasks.grade("\n7", t)
    zero = tasks.Task("z", "arithmetic", 0, "Compute 3 * 0.", 0)
    assert tasks.grade(" 0\n", zero) and tasks.grade("0", zero)
    assert not tasks.grade("0000", zero) and not tasks.grade(" -0", zero)
    assert not tasks.grade(" 07", t)
    stops = rollout.stop_ids(tok)
    assert tok.eot_id in stops and all(b"\n" in tok.token_bytes(i) for i in stops
                                       if i != tok.eot_id)
    assert rollout.cut_at_stop([5, 6, tok.eot_id, 9], stops) == 3
    assert rollout.cut_at_stop([5, 6], stops) == 2


def test_learner_log_probs_equal_the_inference_nucleus_log_probs(tok):
    """On policy, with top-p masking and routing replay, the learner reproduces pi_old: the
    ratio is 1 (up to the float rounding of the KV-cached vs full forward)."""
    model = tiny_model(tok)
    groups, batch = rollout_batch(tok, model)
    assert batch.mask.sum() > 0 and batch.nucleus is not None
    assert (batch.nucleus.sum(-1)[batch.mask] < tok.vocab_size).all()  # a real nucleus
    with torch.no_grad():
        logits, _ = rollout.completion_logits(model, batch)
        out = grpo_loss(logits, batch.actions, batch.old_logp, batch.advantages, batch.mask,
                        GRPOConfig(), nucleus=batch.nucleus)
        off = grpo_loss(logits, batch.actions, batch.old_logp, batch.advantages, batch.mask,
                        GRPOConfig(), nucleus=batch.nucleus, top_p_mask=False)
    diff = (out.logp - batch.old_logp)[batch.mask].abs().max().item()
    assert diff < 1e-5
    assert abs(out.ratio_min - 1) < 1e-5 and abs(out.ratio_max - 1) < 1e-5
    # without the mask the learner normalises over the whole vocabulary: ratio = kept mass < 1
    assert off.ratio_mean < 0.99 and off.ratio_mean == pytest.approx(off.nucleus_mass, abs=1e-4)


def test_routing_replay_reuses_the_inference_experts(tok):
    model = tiny_model(tok)
    _, batch = rollout_batch(tok, model)
    learner = copy.deepcopy(model)
    with torch.no_grad():  # the learner's router has moved since the rollout
        for moe in learner.moe_layers:
            moe.router.weight.add_(torch.randn_like(moe.router.weight))
        own = learner(batch.inputs).routing
        replayed = learner(batch.inputs, routing=batch.routing).routing
    real = torch.zeros_like(batch.inputs, dtype=torch.bool)
    for b in range(len(batch)):
        real[b, : int(batch.start[b]) + int(batch.mask[b].sum())] = True
    for r_own, r_rep, r_inf in zip(own, replayed, batch.routing, strict=True):
        assert torch.equal(r_rep[real], r_inf[real])
        assert not torch.equal(r_own[real], r_inf[real])


def test_one_k_update_per_optimizer_step_under_gradient_accumulation(tok):
    model = tiny_model(tok, balance="none")  # the batch-level balancing loss does not split
    _, batch = rollout_batch(tok, model, n_problems=2, g=4)
    results = {}
    for micro in (0, 1, 3):
        policy = copy.deepcopy(model)
        opt = torch.optim.SGD(policy.parameters(), lr=0.1)
        ctrl = EntropyController(target=100.0, delta=0.1, k_max=1.0)  # entropy below H*
        st = climb.optimizer_step(policy, opt, batch, ctrl, GRPOConfig(), climb.Stabilisers(),
                                  micro_batch=micro)
        assert ctrl.k == pytest.approx(0.1), f"micro_batch={micro}: one update per step"
        assert st.k == 0.0  # the step used the k from before its update
        results[micro] = (st, [p.detach().clone() for p in policy.parameters()])
    for micro in (1, 3):  # accumulation gives the same step as one pass
        for a, b in zip(results[0][1], results[micro][1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        assert results[micro][0].entropy == pytest.approx(results[0][0].entropy, rel=1e-5)


def test_no_entropy_control_keeps_k_at_zero(tok):
    model = tiny_model(tok)
    _, batch = rollout_batch(tok, model, n_problems=1, g=4)
    ctrl = EntropyController(target=100.0, delta=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    climb.optimizer_step(model, opt, batch, ctrl, GRPOConfig(),
                         climb.Stabilisers().without("entropy_control"))
    assert ctrl.k == 0.0


def test_filters_read_the_binary_outcome_only(tok, monkeypatch):
    """Early exit after G_early, pass-rate window after G, counted per problem."""
    outcomes = {0: [0, 0, 0, 0], 1: [1, 0, 0, 0, 1, 1, 0, 0], 2: [1, 1, 1, 1],
                3: [1, 0, 0, 0, 0, 0, 0, 0]}  # pass rates 0, 3/8, 1 and 1/8

    def fake(engine, tok_, problems, n, cap, *, groups=None, **kw):
        groups = groups or [rollout.Group(p, [1]) for p in problems]
        for g in groups:
            i = int(g.task.id)
            for _ in range(n):
                ok = bool(outcomes[i][len(g)])
                g.completions.append([1])
                g.correct.append(ok)
                g.texts.append("x")
        return groups

    monkeypatch.setattr(climb, "sample_groups", fake)
    pool = [tasks.Task(str(i), "arithmetic", 0, f"p{i}", 0) for i in range(4)]
    c = C.load("smoke", {"grpo": {"draw": 4, "problems": 4, "max_rounds": 1, "group": 8,
                                 "group_early": 4, "keep_lo": 0.2}}).grpo
    d = climb.draw_batch(None, tok, climb.ProblemStream(pool, 0), c, 4, None, set(), 0)
    assert d.drawn == 4 and d.early_kept == 2  # problems 1 and 3 pass the early exit
    assert [g.task.id for g in d.groups] == ["1"]  # problem 3 (1/8) fails keep_lo = 0.2
    assert d.rollouts == 4 * 4 + 2 * 4
    assert all(len(g) == 8 for g in d.groups)


def test_climb_runs_and_records_every_metric(tok):
    cfg = C.load("smoke", {"grpo": {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 3, "eval_samples": 2,
                                    "curriculum_stages": 2, "rollout_dtype": "float32"}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    assert not {t.prompt for t in pool} & {t.prompt for t in held}
    model = tiny_model(tok)
    res = climb.climb(model, tok, pool, held, cfg.grpo, steps=4, seed=0, eval_every=2)
    assert [r["step"] for r in res.history] == [1, 2, 3, 4]
    assert [e["step"] for e in res.evals] == [0, 2, 4]
    for key in ("reward", "r_task", "r_lang", "r_len", "pass_rate_drawn", "entropy", "k",
                "clip_low", "clip_high", "outer_clip", "grad_norm", "ratio_mean", "ratio_max",
                "length", "nucleus_mass"):
        assert all(r[key] is not None for r in res.history), key
    assert res.history[0]["mismatch"] is not None and res.history[0]["mismatch"] < 1e-5
    assert res.history[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert [r["cap"] for r in res.history] == [3, 3, 6, 6]  # the cap doubles
    assert [r["w_len"] for r in res.history] == [0.25, 0.25, 0.0, 0.0]  # w_len dropped last
    # the same seed gives the same run
    kept = []

    def keep(step, policy):
        kept.append((step, {k: v.clone() for k, v in policy.state_dict().items()}))

    again = climb.climb(model, tok, pool, held, cfg.grpo, steps=2, seed=0, schedule_steps=4,
                        checkpoint_every=1, on_checkpoint=keep)
    assert again.history[0]["reward"] == res.history[0]["reward"]
    # a checkpoint every step but the last (the caller saves the final policy itself)
    assert [s for s, _ in kept] == [1]
    assert any(not torch.equal(v, model.state_dict()[k]) for k, v in kept[0][1].items())
    assert [r["cap"] for r in again.history] == [3, 3]  # the main run's schedule
    # bfloat16 rollouts against the float32 learner: a real train/inference mismatch
    bf16 = dataclasses.replace(cfg.grpo, rollout_dtype="bfloat16")
    mixed = climb.climb(model, tok, pool, held, bf16, steps=1, seed=0)
    assert mixed.history[0]["mismatch"] > 1e-4


def test_warm_up_ramps_the_learning_rate_by_step(tok):
    cfg = C.load("smoke", {"grpo": {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 3, "rollout_dtype": "float32",
                                    "lr": 1e-3, "warmup_steps": 3, "updates_per_batch": 2}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    res = climb.climb(tiny_model(tok), tok, pool, held, cfg.grpo, steps=4, seed=0)
    assert [r["lr"] for r in res.history] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3])
    flat = climb.climb(tiny_model(tok), tok, pool, held,
                       dataclasses.replace(cfg.grpo, warmup_steps=0), steps=2, seed=0)
    assert [r["lr"] for r in flat.history] == [1e-3, 1e-3]
    # positive advantages only: the same first batch, a different update
    pos = climb.climb(tiny_model(tok), tok, pool, held,
                      dataclasses.replace(cfg.grpo, warmup_steps=0, neg_weight=0.0), steps=1,
                      seed=0)
    assert pos.history[0]["reward"] == flat.history[0]["reward"]
    assert pos.history[0]["loss"] != flat.history[0]["loss"]


@pytest.mark.parametrize("preset", ["smoke", "laptop", "gpu", "cluster"])
def test_every_preset_draws_its_task_sets(preset):
    """The gpu and cluster presets once asked for 5,000 and 20,000 distinct problems at
    difficulty 0, which holds a few hundred per kind: notebook 09 could not start there."""
    c = C.load(preset).grpo
    pool, held = climb.task_sets(c, 0)
    assert len(held) == c.n_eval
    assert len(pool) >= c.n_train and not {t.prompt for t in pool} & {t.prompt for t in held}


def test_a_collapsed_policy_stops_the_climb(tok, monkeypatch):
    """Every group all wrong (no signal, nothing kept): the climb stops after max_empty_draws
    empty batches in a row instead of drawing until its iteration bound (the laptop climb from
    the procedural mid-trained model collapsed at step 24 and drew on for its whole budget)."""
    calls = []

    def all_wrong(engine, tok_, problems, n, cap, *, groups=None, **kw):
        calls.append(len(problems))
        groups = groups or [rollout.Group(p, [1]) for p in problems]
        for g in groups:
            for _ in range(n):
                g.completions.append([1])
                g.correct.append(False)
                g.texts.append("x")
        return groups

    monkeypatch.setattr(climb, "sample_groups", all_wrong)
    cfg = C.load("smoke", {"grpo": {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "max_rounds": 2,
                                    "max_empty_draws": 5, "max_new_tokens": 3,
                                    "rollout_dtype": "float32"}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    branches = []
    res = climb.climb(tiny_model(tok), tok, pool, held, cfg.grpo, steps=50, seed=0,
                      branch_at=20, on_branch=branches.append)
    assert res.history == [] and res.collapsed_at == 0
    # stopped before grpo.ablation_from: the ablations branch where it stopped
    assert [b.counters[0] for b in branches] == [0]
    assert res.empty_batches == 5  # not 3 x 50 = 150, the iteration bound
    assert len(calls) == 5 * 2  # two rounds per empty draw
    ok = climb.climb(tiny_model(tok), tok, pool, held,
                     dataclasses.replace(cfg.grpo, max_empty_draws=200), steps=2, seed=0)
    assert ok.collapsed_at is None and ok.empty_batches == 6  # bounded by 3 x steps


@pytest.mark.parametrize("use_cache", [True, False])
def test_shared_prompt_sampling_equals_repeated_prompts(tok, use_cache):
    from mai_repro.model.generation import generate

    model = tiny_model(tok)
    prompt = torch.randint(6, tok.vocab_size, (2, 7))
    kw = dict(temperature=1.0, top_p=0.9, return_nucleus=True, return_routing=True,
              use_cache=use_cache)
    a = generate(model, prompt.repeat_interleave(3, 0), 5,
                 generator=torch.Generator().manual_seed(1), **kw)
    b = generate(model, prompt, 5, generator=torch.Generator().manual_seed(1), num_samples=3,
                 **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.nucleus, b.nucleus)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-6, rtol=1e-6)
    assert all(torch.equal(x, y) for x, y in zip(a.routing, b.routing, strict=True))


def test_entropy_ablation_verdict_needs_a_real_gap():
    c = C.GRPOStageConfig(entropy_target=3.0)

    def run(entropies):
        return climb.ClimbResult("x", history=[{"entropy": e} for e in entropies])

    main = run([0.61] * 8)  # 2.39 nats below H*: a gap of more than 0.239 is needed
    tie = grpo_stage.ablation_verdicts(main, {"entropy_control": run([0.606] * 8)}, c)
    gap = grpo_stage.ablation_verdicts(main, {"entropy_control": run([0.30] * 8)}, c)
    above = grpo_stage.ablation_verdicts(main, {"entropy_control": run([0.90] * 8)}, c)
    # constant histories: the paired interval has no width, so the bar alone decides
    assert tie["entropy_control"]["verdict"] == "not held"
    assert gap["entropy_control"]["verdict"] == "held"
    assert above["entropy_control"]["verdict"] == "not held"
    test = gap["entropy_control"]["tests"][0]
    assert test["n"] == 2 and test["bar"] == pytest.approx(0.239)  # the last quarter: 2 steps


def test_ablations_in_other_processes_give_the_same_numbers(tok):
    """grpo.ablation_workers runs the ablations in spawned processes while the main climb
    runs; each depends only on the start checkpoint and the seeds, so the histories are the
    same as one after another in this process."""
    cfg = C.load("smoke", {"grpo": {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 3, "eval_samples": 2, "steps": 4,
                                    "ablation_steps": 2, "ablation_from": 0, "threads": 1,
                                    "ablations": ["outer_clip", "routing_replay"],
                                    "rollout_dtype": "float32"}})
    pool, held = climb.task_sets(cfg.grpo, 0)
    model = tiny_model(tok)
    here = climb.Ablations(model, tok, pool, held, cfg.grpo, 0).results()
    par = dataclasses.replace(cfg.grpo, ablation_workers=2)
    ticks = []
    there = climb.Ablations(model, tok, pool, held, par, 0).results(progress=ticks.append)
    assert list(there) == ["outer_clip", "routing_replay"] and ticks == [2, 2]
    for name in here:
        assert there[name].name == f"no {name}"
        assert [r["reward"] for r in there[name].history] == \
            [r["reward"] for r in here[name].history]
        assert [r["grad_norm"] for r in there[name].history] == \
            [r["grad_norm"] for r in here[name].history]
        assert _comparable(there[name].evals) == _comparable(here[name].evals)


def _comparable(rows):  # wall-clock seconds (a step's time_s, an evaluation's eval_s) left out
    return [{k: v for k, v in r.items() if k not in ("time_s", "eval_s")} for r in rows]


def test_a_climb_resumed_from_its_branch_goes_on_exactly(tok):
    """grpo.ablation_from: the ablations start from the main climb's state at a step. A
    climb resumed from that state with the same stabilisers must take the very steps the
    main climb took after it (same rollouts, rewards, gradient norms, k, evaluations), in
    this process and in a spawned one; with a stabiliser off it must differ."""
    cfg = C.load("smoke", {"grpo": {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 3, "eval_samples": 2, "steps": 6,
                                    "curriculum_stages": 2, "ablation_steps": 2,
                                    "ablation_from": 2, "threads": 1,
                                    "ablations": ["entropy_control"],
                                    "rollout_dtype": "bfloat16", "lr": 3e-3}})
    c = cfg.grpo
    pool, held = climb.task_sets(c, 0)
    model = tiny_model(tok)
    branches = []
    main = climb.climb(model, tok, pool, held, c, steps=6, seed=0, eval_every=2,
                       branch_at=2, on_branch=branches.append)
    assert len(branches) == 1 and branches[0].counters[0] == 2
    again = climb.climb(model, tok, pool, held, c, steps=6, seed=0, eval_every=2,
                        resume=branches[0])
    assert [r["step"] for r in again.history] == [3, 4, 5, 6]
    assert _comparable(again.history) == _comparable(main.history[2:])
    assert [e["step"] for e in again.evals] == [4, 6]  # counted from the branch
    assert _comparable(again.evals) == _comparable(main.evals[2:])
    # the branch is not changed by resuming from it: a second resume is the same again
    twice = climb.climb(model, tok, pool, held, c, steps=6, seed=0, resume=branches[0])
    assert _comparable(twice.history) == _comparable(again.history)
    # mid-batch, the branch waits for the end of the batch (updates_per_batch = 2)
    late = []
    climb.climb(model, tok, pool, held, c, steps=4, seed=0, branch_at=3,
                on_branch=late.append)
    assert [b.counters[0] for b in late] == [4]
    # an ablation from the branch, in this process and in a child: the same numbers, its
    # steps numbered on from the branch, and a stabiliser off changes them
    here = climb.Ablations(model, tok, pool, held, c, 0, branch=branches[0]).results()
    there = climb.Ablations(model, tok, pool, held,
                            dataclasses.replace(c, ablation_workers=1), 0,
                            branch=branches[0]).results()
    ab = here["entropy_control"]
    assert [r["step"] for r in ab.history] == [3, 4]
    assert _comparable(there["entropy_control"].history) == _comparable(ab.history)
    assert ab.evals[-1]["step"] == 4 and ab.evals[-1]["correct"] is not None
    # the verdicts pair the ablation with the main climb's steps 3-4, not 1-2
    verdicts = grpo_stage.ablation_verdicts(main, here, c)
    assert verdicts["entropy_control"]["from_step"] == 2
    assert verdicts["entropy_control"]["acting"]["steps"] == 2
    assert verdicts["entropy_control"]["accuracy_with"] == main.evals[2]["accuracy"]


def test_ablations_must_end_within_the_main_climb():
    with pytest.raises(Exception, match="ablation_from"):
        C.load("smoke", {"grpo": {"steps": 10, "ablation_steps": 5, "ablation_from": 6}})


def test_a_climb_with_only_the_needed_vocabulary_work(tok):
    """grpo.vocab_work needed: the same climb, on the nucleus's tokens and the completion
    positions only. On-policy its first ratio is 1 and the learner's log-probs are the
    rollouts' (no mismatch); it is deterministic; and it draws other random numbers than
    `all` (so its figures are its own)."""
    over = {"n_train": 12, "n_eval": 3, "problems": 2, "draw": 3, "group": 4,
            "group_early": 2, "early_lo": 0.0, "keep_lo": 0.0, "early_hi": 1.0,
            "keep_hi": 1.0, "max_new_tokens": 6, "eval_samples": 2, "rollout_dtype": "float32",
            "top_p": 0.9}
    runs = {}
    for work in ("all", "needed", "needed"):
        cfg = C.load("smoke", {"grpo": {**over, "vocab_work": work}})
        pool, held = climb.task_sets(cfg.grpo, 0)
        res = climb.climb(tiny_model(tok), tok, pool, held, cfg.grpo, steps=2, seed=0,
                          eval_every=2)
        runs.setdefault(work, []).append(res)
    first, again = runs["needed"]
    assert _comparable(first.history) == _comparable(again.history)
    assert _comparable(first.evals) == _comparable(again.evals)
    assert first.history[0]["mismatch"] < 1e-5
    assert first.history[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    assert 0 < first.history[0]["nucleus_mass"] <= 1.0 + 1e-6
    assert _comparable(first.history) != _comparable(runs["all"][0].history)
