"""Verdicts with intervals (issue 22, item 3): the stated tests of notebooks 09 and 10 on hand
cases, the ablation verdicts from per-step histories, and the paired accuracy intervals of
notebook 10 from per-problem counts."""

import math

import numpy as np
import pytest

import mai_repro.config as C
from mai_repro import stats
from mai_repro.rl.climb import ClimbResult
from mai_repro.rl.evaluate import paired_accuracy
from mai_repro.stages import grpo as grpo_stage
from mai_repro.stages import report
from mai_repro.stages.self_distillation import consolidation_tests

# -- mai_repro.stats ----------------------------------------------------------------------------


def test_decide_on_hand_cases():
    a = np.array([0.3, 0.5, 0.4, 0.6])
    d = stats.decide(a, a - 0.2, test="t", items="problems")
    assert (d.mean, d.lo, d.hi, d.n) == pytest.approx((0.2, 0.2, 0.2, 4))
    assert d.verdict == "held"  # every item 0.2 above: the interval is [0.2, 0.2]
    assert stats.decide(a, a - 0.2, test="t", items="problems", bar=0.2).verdict == "not held"
    # differences of +-0.1 around 0: the interval straddles the bar 0
    d = stats.decide([1.0, 0.0, 1.0, 0.0], [0.9, 0.1, 0.9, 0.1], test="t", items="problems")
    assert d.lo < 0 < d.hi and d.mean == pytest.approx(0.0)
    assert d.verdict == "inconclusive"
    # ... and the same interval held against a bar below it, or above it
    shifted = stats.decide([1.0, 0.0, 1.0, 0.0], [0.9, 0.1, 0.9, 0.1], test="t",
                           items="problems", bar=-0.5)
    assert shifted.verdict == "held"


def test_decide_drops_non_finite_items_and_needs_two():
    d = stats.decide([1.0, math.nan, 2.0], [0.0, 0.0, math.inf], test="t", items="steps")
    assert d.n == 1 and d.mean == 1.0 and d.verdict == "inconclusive"  # one item: no interval
    assert str(d) == "+1 [no interval] (n=1 steps)"
    empty = stats.decide([], [], test="t", items="steps")
    assert empty.n == 0 and empty.verdict == "inconclusive" and str(empty) == "no steps to compare"
    with pytest.raises(ValueError, match="same number"):
        stats.decide([1.0], [1.0, 2.0], test="t", items="steps")


def test_decision_prints_its_scale():
    share = stats.Decision("t", "held-out problems", 0.047, 0.012, 0.081, 64, 0.0, "share",
                           "held")
    assert str(share) == "+4.7% [+1.2%, +8.1%] (n=64 held-out problems)"
    ratio = stats.Decision("t", "steps", math.log(2), 0.0, math.log(4), 30, math.log(1.5),
                           "log", "inconclusive")
    assert str(ratio) == "x2 [x1, x4] (n=30 steps, bar x1.5)"


def test_all_of():
    assert stats.all_of(["held", "held"]) == "held"
    assert stats.all_of(["held", "inconclusive"]) == "inconclusive"
    assert stats.all_of(["inconclusive", "not held"]) == "not held"
    assert stats.all_of([]) == "inconclusive"


def test_wilson_against_hand_values():
    # k = 5 of 10: centre 0.5, half-width 1.96 sqrt(0.025 + 0.0096) / 1.384 = 0.2634
    w = stats.wilson(5, 10)
    assert (w.mean, w.lo, w.hi) == pytest.approx((0.5, 0.2366, 0.7634), abs=1e-4)
    w = stats.wilson(0, 10)  # not zero-width at 0 of n: 3.84 / 13.84
    assert (w.lo, w.hi) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert stats.wilson(2, 2).lo == pytest.approx(0.3424, abs=1e-4)
    with pytest.raises(ValueError):
        stats.wilson(3, 2)


# -- notebook 09: the ablation verdicts -----------------------------------------------------------


def run(key, values, evals=()):
    return ClimbResult("x", history=[{"step": i + 1, key: v} for i, v in enumerate(values)],
                       evals=list(evals))


def test_an_ablation_with_equal_noisy_steps_is_inconclusive():
    """Gradient norms with and without the outer clip that differ by symmetric noise: the
    paired interval of the log ratio straddles x1, so the claim is neither held nor refuted."""
    rng = np.random.default_rng(0)
    base = 1 + rng.random(40)
    noise = rng.normal(0, 0.1, 20)
    without = base * np.exp(np.concatenate([noise, -noise]))  # mean log ratio exactly 0
    c = C.GRPOStageConfig()
    v = grpo_stage.ablation_verdicts(run("grad_norm", base), {"outer_clip": run(
        "grad_norm", without)}, c)["outer_clip"]
    test = stats.Decision(**v["tests"][0])
    assert test.n == 40 and test.items == "steps" and test.scale == "log"
    assert test.lo < 0 < test.hi
    assert v["verdict"] == "inconclusive"
    assert v["rule"] == grpo_stage.RULES["outer_clip"] and v["claim"]
    # ... the same noise on gradient norms three times larger without the clip: held
    v = grpo_stage.ablation_verdicts(run("grad_norm", base), {"outer_clip": run(
        "grad_norm", 3 * without)}, c)["outer_clip"]
    assert v["verdict"] == "held" and stats.Decision(**v["tests"][0]).lo > 0


def test_entropy_ablation_inside_the_tie_band_is_not_held_and_across_it_inconclusive():
    c = C.GRPOStageConfig(entropy_target=3.0)  # the main run sits 2.4 nats below: bar 0.24
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.05, 10)
    main = run("entropy", [0.6] * 40)
    tie = run("entropy", [0.6] * 30 + list(0.6 + np.concatenate([noise[:5], -noise[:5]])))
    v = grpo_stage.ablation_verdicts(main, {"entropy_control": tie}, c)["entropy_control"]
    assert v["verdict"] == "not held"  # the interval lies wholly below the tie bar
    across = run("entropy", [0.6] * 30 + list(0.36 - np.concatenate([noise[:5], -noise[:5]])))
    v = grpo_stage.ablation_verdicts(main, {"entropy_control": across}, c)["entropy_control"]
    test = stats.Decision(**v["tests"][0])
    assert test.bar == pytest.approx(0.24) and test.lo < test.bar < test.hi
    assert v["verdict"] == "inconclusive"


def test_top_p_and_routing_ablations_need_both_tests():
    c = C.GRPOStageConfig()
    rng = np.random.default_rng(2)
    steps = 20
    with_mask = [{"step": i + 1, "ratio_mean": 1 + rng.normal(0, 1e-4)} for i in range(steps)]
    mass = 0.97 + rng.normal(0, 0.002, steps)
    biased = [{"step": i + 1, "ratio_mean": m + rng.normal(0, 1e-4), "nucleus_mass": m}
              for i, m in enumerate(mass)]
    v = grpo_stage.ablation_verdicts(ClimbResult("m", history=with_mask),
                                     {"top_p_mask": ClimbResult("a", history=biased)},
                                     c)["top_p_mask"]
    assert [t["verdict"] for t in v["tests"]] == ["held", "held"] and v["verdict"] == "held"
    # the ratio without masking at 1 too (nothing biased): the first test fails
    flat = [{**r, "ratio_mean": 1 + rng.normal(0, 1e-4)} for r in biased]
    v = grpo_stage.ablation_verdicts(ClimbResult("m", history=with_mask),
                                     {"top_p_mask": ClimbResult("a", history=flat)},
                                     c)["top_p_mask"]
    assert v["verdict"] == "not held"

    # routing replay: a mismatch measured on some steps only (None elsewhere); twice as large
    # without replay, but below the 1e-3 floor: not held by the second test
    def mismatch(scale):
        return ClimbResult("r", history=[{"step": i + 1, "mismatch_max": None if i % 2 else
                                          scale * (1 + 0.1 * (i % 3)), "mismatch": None}
                                         for i in range(steps)])
    v = grpo_stage.ablation_verdicts(mismatch(1e-5), {"routing_replay": mismatch(2e-5)},
                                     c)["routing_replay"]
    first, second = (stats.Decision(**t) for t in v["tests"])
    assert first.n == steps // 2 and first.verdict == "held"  # x2 against the bar x1.5
    assert second.verdict == "not held" and v["verdict"] == "not held"
    v = grpo_stage.ablation_verdicts(mismatch(1e-2), {"routing_replay": mismatch(2e-2)},
                                     c)["routing_replay"]
    assert v["verdict"] == "held"


def test_ablation_accuracy_is_paired_over_the_held_out_problems_at_the_same_step():
    c = C.GRPOStageConfig(eval_samples=4)
    main_evals = [{"step": 0, "accuracy": 0.0, "correct": [0] * 8},
                  {"step": 4, "accuracy": 0.5, "correct": [4, 4, 2, 2, 2, 2, 0, 0]}]
    ab_evals = [{"step": 0, "accuracy": 0.0, "correct": [0] * 8},
                {"step": 4, "accuracy": 0.25, "correct": [2, 2, 1, 1, 1, 1, 0, 0]}]
    main = run("grad_norm", [1.0] * 4, main_evals)
    v = grpo_stage.ablation_verdicts(main, {"outer_clip": run("grad_norm", [1.0] * 4,
                                                              ab_evals)}, c)["outer_clip"]
    acc = stats.Decision(**v["accuracy_test"])
    assert acc.mean == pytest.approx(-0.25) and acc.n == 8 and acc.hi < 0
    assert (v["accuracy_with"], v["accuracy_without"]) == (0.5, 0.25)
    # the main run not evaluated at the ablation's last step: no paired accuracy
    v = grpo_stage.ablation_verdicts(run("grad_norm", [1.0] * 4, main_evals[:1]),
                                     {"outer_clip": run("grad_norm", [1.0] * 4, ab_evals)},
                                     c)["outer_clip"]
    assert v["accuracy_test"] is None


# -- notebook 10: paired accuracy over the same held-out problems --------------------------------


def test_paired_accuracy_on_hand_made_counts():
    """Two models on the same 6 problems, 4 samples each: a is 1 sample better on every
    problem; b's counts are spread over easy and hard problems. Pairing sees the constant
    +0.25 (a zero-width interval) whatever the spread between problems."""
    b = [0, 0, 1, 2, 3, 3]
    a = [x + 1 for x in b]
    d = paired_accuracy(a, b, 4, test="a - b", seed=0)
    assert (d.mean, d.lo, d.hi, d.n) == pytest.approx((0.25, 0.25, 0.25, 6))
    assert d.verdict == "held" and d.items == "held-out problems" and d.scale == "share"
    # a better on half the problems and worse on the other half by as much: inconclusive
    d = paired_accuracy([1, 3, 1, 3], [3, 1, 3, 1], 4, test="a - b", seed=0)
    assert d.mean == 0 and d.lo < 0 < d.hi and d.verdict == "inconclusive"
    with pytest.raises(ValueError, match="same problems"):
        paired_accuracy([1, 2], [1], 4, test="a - b", seed=0)


def test_consolidation_tests_from_per_problem_counts():
    pre = [0] * 8
    spec = [2, 2, 2, 2, 1, 1, 1, 1]
    correct = {"pre_rl": {"k": pre}, "specialist k": {"k": spec},
               "consolidated": {"k": [2, 2, 2, 2, 1, 1, 1, 1]}}
    t = consolidation_tests(correct, "k", 4, seed=0)
    assert t.specialist_gain.mean == pytest.approx(0.375) and t.specialist_gain.verdict == "held"
    assert t.consolidated_gain.verdict == "held"
    assert t.consolidated_loss.mean == 0 and t.consolidated_loss.verdict == "not held"
    assert report.consolidation_rule({"k": t}) is True
    # the consolidated model at pre-RL level: the specialist's skill is lost
    lost = consolidation_tests({**correct, "consolidated": {"k": pre}}, "k", 4, seed=0)
    assert lost.consolidated_loss.verdict == "held"
    assert report.consolidation_rule({"k": lost}) is False
    # nothing learned by the specialist: inconclusive
    none = consolidation_tests({**correct, "specialist k": {"k": pre}}, "k", 4, seed=0)
    assert report.consolidation_rule({"k": none}) is None


def test_the_verdicts_say_how_often_the_removed_stabiliser_acted_in_the_main_run():
    c = C.GRPOStageConfig(entropy_target=0.5)
    rows = [{"step": i + 1, "grad_norm": 1.0, "outer_bind": 0.1 * (i % 4 == 0),
             "outer_clip": 0.3,
             "k": 0.02 * max(0, i - 5), "entropy": 1.0 - 0.1 * i} for i in range(12)]
    main = ClimbResult("m", history=rows + rows)  # the main run is longer than the ablation
    ab = ClimbResult("a", history=[dict(r) for r in rows])
    v = grpo_stage.ablation_verdicts(main, {"outer_clip": ab, "entropy_control": ab}, c)
    clip = v["outer_clip"]["acting"]
    assert clip["steps"] == 12 and clip["steps_acting"] == 3 and clip["largest"] == 0.1
    ent = v["entropy_control"]["acting"]
    assert ent["steps_acting"] == 6 and ent["largest"] == pytest.approx(0.12)
    assert ent["entropy_below_target_max"] == pytest.approx(0.5 - (1.0 - 1.1))
    never = [dict(r, outer_bind=0.0) for r in rows]  # r outside the bounds, no gradient cut
    v = grpo_stage.ablation_verdicts(ClimbResult("m", history=never),
                                     {"outer_clip": ClimbResult("a", history=never)}, c)
    assert v["outer_clip"]["acting"]["steps_acting"] == 0


def test_over_seeds_is_a_student_t_interval():
    """Three seeds' gains: mean +- t(0.975, 2) sd / sqrt(3) = mean +- 2.484 sd (hand value);
    a bootstrap of three values would be far narrower."""
    d = stats.over_seeds([0.10, 0.14, 0.12], test="gain")
    assert d.items == "seeds" and d.n == 3 and d.mean == pytest.approx(0.12)
    assert d.hi - d.mean == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-5)
    assert d.verdict == "held"
    assert stats.over_seeds([0.10, -0.02, 0.12], test="gain").verdict == "inconclusive"
    assert stats.over_seeds([-0.10, -0.12, -0.11], test="gain").verdict == "not held"
    one = stats.over_seeds([0.3], test="gain")
    assert one.verdict == "inconclusive" and one.n == 1 and math.isnan(one.lo)
