"""Self-distillation and consolidation pieces (notebook 10): trace selection, weighted mixes,
token weights, the SFT batch layout and the SFT itself, on a tiny model."""

import pytest
import torch

import mai_repro.config as C
from mai_repro.data import tokenizer as tk
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.rl import distill, rollout, tasks
from mai_repro.rl.distill import Trace
from mai_repro.stages import report

TASK = tasks.Task("t", "arithmetic", 0, "Compute 1 + 1.", 2)


def trace(source, n_completion=1, prompt=(1, 2, 3), i=0):
    return Trace(TASK, tuple(prompt), tuple(range(10 + i, 10 + i + n_completion)), source)


def test_round_robin_takes_the_budget_evenly_from_each_checkpoint():
    a = [trace("a", i=i) for i in range(10)]
    b = [trace("b", i=i) for i in range(3)]
    c = [trace("c", i=i) for i in range(10)]
    out = distill.round_robin([a, b, c], 12, seed=0)
    counts = {s: sum(t.source == s for t in out) for s in "abc"}
    assert len(out) == 12 and counts == {"a": 5, "b": 3, "c": 4}  # b runs out after 3
    assert len(set(out)) == 12  # without replacement
    assert distill.round_robin([a], 4, seed=0) == distill.round_robin([a], 4, seed=0)
    assert len(distill.round_robin([b], 99, seed=0)) == 3


def test_weighted_mix_hits_the_sample_weights_exactly():
    srcs = [[trace("x", i=i) for i in range(50)], [trace("y", i=i) for i in range(5)],
            [trace("z", i=i) for i in range(50)]]
    out = distill.weighted_mix(srcs, [0.56, 0.11, 0.33], 100, seed=1)
    counts = {s: sum(t.source == s for t in out) for s in "xyz"}
    assert counts == {"x": 56, "y": 11, "z": 33}  # y drawn with replacement past its 5
    out = distill.weighted_mix(srcs, [1, 1, 1], 10, seed=1)  # largest remainders: 4/3/3
    assert sorted(sum(t.source == s for t in out) for s in "xyz") == [3, 3, 4]
    with pytest.raises(ValueError, match="non-negative weight"):
        distill.weighted_mix(srcs, [1, -1, 1], 10, seed=0)
    with pytest.raises(ValueError, match="no verified traces"):
        distill.weighted_mix([srcs[0], []], [1, 1], 10, seed=0)


def test_token_weights_give_each_source_its_share_of_the_loss():
    # source a: 3 traces of 1 token (3 tokens); source b: 1 trace of 5 tokens (5 tokens)
    traces = [trace("a", 1, i=i) for i in range(3)] + [trace("b", 5)]
    w = distill.token_weights(traces, ["a", "b"], [0.89, 0.11])
    # a token of a weighs 0.89 * 8 / 3, one of b 0.11 * 8 / 5 (8 tokens in all)
    assert w[0] == pytest.approx(0.89 * 8 / 3) and w[3] == pytest.approx(0.11 * 8 / 5)
    share = distill.token_share(traces, w)
    assert share == pytest.approx({"a": 0.89, "b": 0.11})
    plain = distill.token_weights(traces, ["a", "b"], None)
    assert distill.token_share(traces, plain) == pytest.approx({"a": 3 / 8, "b": 5 / 8})


def test_sft_batch_weights_only_the_positions_predicting_the_completion():
    t1 = Trace(TASK, (5, 6, 7), (8, 9), "a")
    t2 = Trace(TASK, (5, 6), (8,), "a")
    x, y, w = distill.sft_batch([t1, t2], [1.0, 2.0], pad_id=0)
    assert x.tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
    assert y.tolist() == [[6, 7, 8, 9], [6, 8, 0, 0]]
    # t1: positions 2 and 3 predict 8 and 9; t2: position 1 predicts 8
    assert w.tolist() == [[0, 0, 1, 1], [0, 2, 0, 0]]
    assert y[w > 0].tolist() == [8, 9, 8]


def test_spread_picks_evenly_and_ends_at_the_final_checkpoint():
    items = [{"step": s} for s in (100, 200, 300, 400, 500)]
    assert [x["step"] for x in distill.spread(items, 2)] == [300, 500]
    assert [x["step"] for x in distill.spread(items, 3)] == [200, 400, 500]
    assert [x["step"] for x in distill.spread(items, 1)] == [500]
    assert distill.spread(items, 9) == items


@pytest.fixture(scope="module")
def tok():
    texts = [t.prompt + "\nAnswer: " + str(t.answer) + "\n" for t in tasks.generate(200)]
    return tk.train(texts, vocab_size=300)


def tiny_model(tok):
    torch.manual_seed(0)
    return Transformer(ModelConfig(
        vocab_size=tok.vocab_size, n_layers=2, d_model=32, n_heads=2, n_kv_heads=1,
        attn_period=2, window=16, max_seq_len=64, d_ff=64, n_experts=4, top_k=2, d_expert=32,
        d_latent=16, ffn_layout="all_moe"))


def test_collect_traces_keeps_exactly_the_verified_completions(tok, monkeypatch):
    # a stand-in grader that depends on the sampled text: some samples right, some wrong
    monkeypatch.setattr(tasks, "grade",
                        lambda text, task, finished=True: sum(text.encode()) % 2 == 0)
    problems = tasks.generate(6, kinds=("arithmetic",), difficulty=0)
    model = tiny_model(tok)
    traces, drawn = distill.collect_traces(model, tok, problems, 4, 3, temperature=1.0,
                                           top_p=0.97, seed=0, source="step 7")
    assert drawn == 24 and 0 < len(traces) < 24
    for t in traces:
        assert t.source == "step 7" and t.completion
        # graded without a closing end-of-text token (rollout.completion_text)
        assert tasks.grade(rollout.completion_text(list(t.completion), tok), t.task)
        assert t.prompt == tuple(tok.encode(tasks.rl_prompt(t.task)))
    again, _ = distill.collect_traces(model, tok, problems, 4, 3, temperature=1.0,
                                      top_p=0.97, seed=0, source="step 7")
    assert again == traces  # the same seed, the same traces


def test_sft_lowers_the_loss_on_its_traces_and_returns_dropout_off(tok):
    model = tiny_model(tok)
    problems = tasks.generate(8, kinds=("arithmetic",), difficulty=0)
    traces = [Trace(t, tuple(tok.encode(tasks.rl_prompt(t))),
                    tuple(tok.encode(f" {t.answer}\n")), "a") for t in problems]
    d = C.DistillConfig(sft_steps=40, sft_batch=8, sft_lr=3e-3)
    student, losses = distill.sft(model, traces, d, seed=0, pad_id=tok.pad_id)
    assert losses[-1] < 0.5 * losses[0]
    assert student.cfg.dropout == 0.0 and not student.training
    assert model.cfg.dropout == 0.0  # the start model is untouched
    x, y, w = distill.sft_batch(traces, [1.0] * len(traces), tok.pad_id)
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(model(x).logits.transpose(1, 2), y,
                                                   reduction="none")[w > 0].mean()
        after = torch.nn.functional.cross_entropy(student(x).logits.transpose(1, 2), y,
                                                  reduction="none")[w > 0].mean()
    assert after < 0.5 * before
    same, none = distill.sft(model, [], d, seed=0, pad_id=tok.pad_id)  # nothing to learn
    assert none == [] and all(torch.equal(a, b) for a, b in
                              zip(same.state_dict().values(), model.state_dict().values(),
                                  strict=True))


def test_distill_config_rejects_bad_specialists_and_weights():
    with pytest.raises(C.ConfigError, match="specialists"):
        C.load("smoke", {"distill": {"specialists": ["linear"]}})
    with pytest.raises(C.ConfigError, match="sample_weights"):
        C.load("smoke", {"distill": {"sample_weights": [1.0]}})
    cfg = C.load("smoke", {"distill": {"token_weights": [0.9, 0.1]}})
    assert cfg.distill.token_weights == [0.9, 0.1]


def test_consolidation_rule():
    """The rule reads the verdict words of the per-kind paired intervals (test_intervals.py
    builds them from per-problem counts)."""
    from mai_repro.stages.self_distillation import KindTests
    from mai_repro.stats import Decision

    def d(verdict):
        return Decision("t", "held-out problems", 0.0, 0.0, 0.0, 64, 0.0, "share", verdict)

    def kind(learned, gain, loss):
        return KindTests(d(learned), d(gain), d(loss))

    rule = report.consolidation_rule
    assert rule({"a": kind("inconclusive", "held", "not held")}) is None  # nothing learned
    assert rule({"a": kind("held", "held", "inconclusive"),
                 "b": kind("not held", "inconclusive", "held")}) is True  # b: not learned
    assert rule({"a": kind("held", "held", "held")}) is False  # skill lost
    assert rule({"a": kind("held", "inconclusive", "inconclusive")}) is None


def test_specialists_in_a_child_process_give_the_same_numbers(tok):
    """distill.workers 1 climbs the specialists in a spawned process while joint RL runs here;
    every climb and SFT seeds itself, so the metrics equal those of one after another."""
    import dataclasses

    from mai_repro.stages import self_distillation as sd

    cfg = C.load("smoke", {"grpo": {"n_train": 8, "n_eval": 3, "problems": 2, "draw": 3,
                                    "group": 4, "group_early": 2, "early_lo": 0.0,
                                    "keep_lo": 0.0, "early_hi": 1.0, "keep_hi": 1.0,
                                    "max_new_tokens": 3, "eval_samples": 2, "threads": 1,
                                    "rollout_dtype": "float32"},
                           "distill": {"specialist_steps": 2, "sft_steps": 2, "sft_batch": 4,
                                       "traces": 8, "trace_samples": 2}})
    model = tiny_model(tok)
    here = sd.specialists(model, tok, cfg.grpo, cfg.distill, seed=0)
    ticks = []
    there = sd.specialists(model, tok, cfg.grpo, dataclasses.replace(cfg.distill, workers=1),
                           seed=0, progress=ticks.append)
    assert there == here
    assert sum(ticks) >= 2 * 2  # the child's climbs are counted when they come back


def test_add_and_sub_specialists_split_the_climbs_own_problems():
    """distill.specialists [add, sub] (the worked task): the specialists' pools and held-out
    sets are the additions and the subtractions of grpo's addsub sets, so the bootstrap's
    decontamination against grpo's held-out problems covers them too."""
    from mai_repro.rl import tasks
    from mai_repro.rl.climb import task_sets
    from mai_repro.stages import self_distillation as sd

    cfg = C.load("laptop-worked")
    assert cfg.distill.specialists == ["add", "sub"]
    pool, held = task_sets(cfg.grpo, cfg.seed)
    cf, sets = sd._specialist_sets(cfg.grpo, cfg.distill, cfg.seed)
    for whole, part in ((pool, 0), (held, 1)):
        add, sub = sets["add"][part], sets["sub"][part]
        assert sorted(map(tasks.question, add + sub)) == sorted(map(tasks.question, whole))
        assert add and sub and all(" + " in tasks.question(t) for t in add)
        assert all(" - " in tasks.question(t) and " + " not in tasks.question(t) for t in sub)
    assert all(c.kinds == ["addsub"] for c in cf.values())
    with pytest.raises(C.ConfigError, match="specialists"):
        C.load("laptop-worked", {"distill": {"specialists": ["add", "linear"]}})
    with pytest.raises(C.ConfigError, match="addsub"):
        C.load("smoke", {"distill": {"specialists": ["add", "sub"]}})
