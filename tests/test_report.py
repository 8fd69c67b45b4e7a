"""The report card (mai_repro.stages.report): verdicts from fake manifests, never a number for a
stage that was not run, and nothing rebuilt."""

import dataclasses
import math
import re

from test_results import skeleton

from mai_repro import plots, stats
from mai_repro.artifacts import LOCK_FILE, STAGES, Run, atomic_write_json, project_root
from mai_repro.config import load
from mai_repro.stages import read_metrics, report
from mai_repro.stages.agentic import AgenticMetrics
from mai_repro.stages.collapse import CollapseMetrics
from mai_repro.stages.grpo import GRPOMetrics
from mai_repro.stages.midtraining import MidtrainingMetrics, ModelSummary
from mai_repro.stages.report import HELD, INCONCLUSIVE, NOT_HELD, NOT_RUN
from mai_repro.stages.self_distillation import SelfDistillationMetrics
from mai_repro.train.config import ABLATIONS

BY_ID = {f.id: f for f in report.FINDINGS}
DIGIT = re.compile(r"\d")


def write(run_dir, stage, metrics):
    atomic_write_json(run_dir / stage / "manifest.json",
                      {"stage": stage, "config_hash": "fake", "metrics": metrics,
                       "wall_time_s": 1.0})


def card(tmp_path):
    return report.make_card(Run(load("smoke"), tmp_path))


def verdicts(c):
    return {r.finding.id: r.verdict for r in c.results}


WIKI = {"pages": 10, "facts": 100, "token_ratio": 3.2, "bytes_ratio": 2.0,
        "token_ratio_by_lang": {"en": 3.2},
        "retention": {"markup: value present": 0.8, "text: value present": 0.4,
                      "text: parsed": 0.0}}
COLLAPSE = {**skeleton(CollapseMetrics), "ppl_gen0": 100.0, "generations": 3,
            "ppl_last": {"replace": 180.0, "keep_real": 130.0, "accumulate": 110.0}}

RUNG = {"width": 32, "depth": 2, "params_nonembedding": 1000, "tokens": 4096,
        "compute": 1e10, "objective": 3.0}
LADDER = {"fit": {"A": 2.0, "alpha": 0.3, "E": 1.0, "c0": 1e10,
                  "stderr": {"A": 0.1, "alpha": "nan", "E": 0.1}},
          "rungs": [RUNG, {**RUNG, "width": 64}], "baseline_eg": [1.0, "inf"],
          "noise_band": [0.98, 1.02], "eg": {}, "sign_holds": {}, "verdict": {},
          "run_seconds": 1.0, "allocation_runs": [], "loss_nd": None}


def test_verdicts_follow_the_values(tmp_path):
    write(tmp_path, "wikipedia", WIKI)
    write(tmp_path, "collapse", COLLAPSE)
    v = verdicts(card(tmp_path))
    assert v["wikipedia.more_tokens"] == v["wikipedia.about_3x"] == HELD
    assert v["wikipedia.infoboxes"] == HELD
    assert v["collapse.replace"] == v["collapse.accumulate"] == HELD

    write(tmp_path, "wikipedia", {**WIKI, "token_ratio": 1.2,
                                  "retention": {"markup: value present": 0.3,
                                                "text: value present": 0.5}})
    write(tmp_path, "collapse", {**COLLAPSE, "ppl_last": {"replace": 90.0, "keep_real": 95.0,
                                                          "accumulate": 120.0}})
    v = verdicts(card(tmp_path))
    assert v["wikipedia.more_tokens"] == HELD  # 1.2x is more tokens, but not about 3x
    assert v["wikipedia.about_3x"] == NOT_HELD
    assert v["wikipedia.infoboxes"] == NOT_HELD
    assert v["collapse.replace"] == v["collapse.accumulate"] == NOT_HELD


def test_measurement_is_read_from_the_manifest(tmp_path):
    write(tmp_path, "wikipedia", {**WIKI, "token_ratio": 2.345})
    c = card(tmp_path)
    r = next(r for r in c.results if r.finding.id == "wikipedia.more_tokens")
    assert "2.35x" in r.measured and r.values == {"ratio": 2.345}
    row = next(h for h in c.headlines if h["figure"] == "markup / text tokens")
    assert row["value"] == "2.35"


def test_missing_stage_shows_not_run_and_no_number(tmp_path):
    c = card(tmp_path)
    assert {r.verdict for r in c.results} == {NOT_RUN}
    assert all(r.measured == NOT_RUN and r.values is None for r in c.results)
    assert all(h["value"] == NOT_RUN for h in c.headlines)
    for row in c.finding_rows():
        assert row["ours"] == NOT_RUN and not DIGIT.search(row["ours"])
    assert c.counts == {HELD: 0, NOT_HELD: 0, INCONCLUSIVE: 0, NOT_RUN: len(report.FINDINGS)}
    assert all(s["status"] == NOT_RUN and s["wall_time_s"] is None for s in c.stages)


def test_renamed_metric_makes_its_stage_unreadable_not_not_run(tmp_path):
    renamed = {k: v for k, v in WIKI.items() if k != "token_ratio"} | {"tok_ratio": 3.2}
    write(tmp_path, "wikipedia", renamed)
    c = card(tmp_path)
    by = {r.finding.id: r for r in c.results}
    for fid in ("wikipedia.more_tokens", "wikipedia.about_3x", "wikipedia.infoboxes"):
        assert by[fid].verdict == INCONCLUSIVE and by[fid].measured == report.UNREADABLE, fid
        assert "tok_ratio" in by[fid].note and "WikipediaMetrics" in by[fid].note
    heads = {h["figure"]: h["value"] for h in c.headlines}
    assert heads["pages / infobox facts"] == heads["markup / text tokens"] == report.UNREADABLE
    assert next(s for s in c.stages if s["stage"] == "wikipedia")["status"] == report.UNREADABLE


def test_missing_key_in_a_present_manifest_shows_not_run(tmp_path):
    pre_trained = {**skeleton(ModelSummary), "model": "pre-trained", "context_gain": 0.01}
    write(tmp_path, "midtraining", {**skeleton(MidtrainingMetrics), "contexts": [64, 256],
                                    "summary": [pre_trained]})  # the final model's row is missing
    c = card(tmp_path)
    by = {r.finding.id: r for r in c.results}
    for fid in ("midtraining.context", "midtraining.retrieval"):
        assert by[fid].verdict == NOT_RUN and by[fid].measured == NOT_RUN, fid


def test_unreadable_value_gives_no_verdict_not_a_crash(tmp_path):
    write(tmp_path, "wikipedia", {**WIKI, "token_ratio": "lots"})  # not a number
    write(tmp_path, "collapse", COLLAPSE)
    v = verdicts(card(tmp_path))
    assert v["wikipedia.more_tokens"] == v["wikipedia.infoboxes"] == INCONCLUSIVE
    assert v["collapse.replace"] == HELD  # the other stages still read


def test_counts_add_up(tmp_path):
    write(tmp_path, "wikipedia", {**WIKI, "token_ratio": 1.2})
    write(tmp_path, "collapse", COLLAPSE)
    eg = {"standard_init": [0.9, 0.8], "standard_moe": [1.2, 1.3], "all_moe": [0.9, 1.1]}
    write(tmp_path, "ladder", {**LADDER, "eg": eg, "noise_band": [0.98, 1.02],
                               "sign_holds": {n: True for n in eg},
                               "verdict": {n: "" for n in eg}})
    c = card(tmp_path)
    counts = c.counts
    assert sum(counts.values()) == len(c.results) == len(report.FINDINGS)
    assert counts[HELD] == 2 + 2 + 1  # wiki more tokens + infoboxes, collapse x2, standard_init
    assert counts[NOT_HELD] == 1 + 1  # about 3x, standard_moe
    assert counts[INCONCLUSIVE] == 1  # all_moe crosses 1
    assert counts[NOT_RUN] == len(report.FINDINGS) - 8  # all_global: no key in the manifest
    assert verdicts(c)["ladder.all_global"] == NOT_RUN


def test_every_finding_names_a_stage_and_notebook():
    allowed = set(STAGES)
    root = project_root()
    ids = [f.id for f in report.FINDINGS]
    assert len(ids) == len(set(ids))
    for f in report.FINDINGS:
        assert f.stage in allowed and f.stage != report.STAGE, f.id
        assert f.claim and f.rule_text and f.section, f.id
        assert (root / "notebooks" / STAGES[f.stage].notebook).is_file(), f.id
    for h in report.HEADLINES:
        assert h.stage in allowed, h.label
    # every notebook stage that measures something has at least one finding
    measured = {f.stage for f in report.FINDINGS}
    assert set(STAGES) - {"report"} <= measured


def test_claims_cover_every_ablation_of_the_configs():
    assert set(report.LADDER_CLAIMS) == set(ABLATIONS)
    assert {f"ladder.{a}" for a in ABLATIONS} <= set(BY_ID)
    cfg = load("laptop")
    assert set(cfg.grpo.ablations) <= set(report.GRPO_CLAIMS)


def test_ladder_rule():
    band = [0.98, 1.02]
    assert report.ladder_rule([0.9, 0.95, 0.8], band) is True
    assert report.ladder_rule([1.1, 1.2, math.inf], band) is False
    assert report.ladder_rule([0.9, 1.1, 0.95], band) is None  # crosses 1
    assert report.ladder_rule([0.99, 0.995], band) is None  # below 1 but inside the scatter
    assert report.ladder_rule([0.9, math.nan], band) is None


def decision(mean, lo, hi, n=64, items="held-out problems", scale="share", bar=0.0):
    """A recorded test as a stage writes it (a dict), its verdict from the interval."""
    word = stats.verdict(stats.Interval(mean, lo, hi, n), bar)
    return dataclasses.asdict(stats.Decision("t", items, mean, lo, hi, n, bar, scale, word))


def ablation(mean, lo, hi, **extra):
    """An ablation's verdict dict with one test over steps (log gradient-norm ratios)."""
    test = decision(mean, lo, hi, n=8, items="steps", scale="log")
    return {"measure": "m", "with": 1.0, "without": 5.0, "steps": 8, "claim": "c", "rule": "r",
            "verdict": test["verdict"], "tests": [test], "accuracy_with": 0.1,
            "accuracy_without": 0.05, "accuracy_test": decision(-0.05, -0.09, -0.01), **extra}


GRPO = skeleton(GRPOMetrics)
GRPO_RUN = {**GRPO, "accuracy_start": 0.1, "accuracy_final": 0.6, "steps": 40,
            "task": {**GRPO["task"], "n_eval": 120}, "reward_gain": 0.2,
            "gain": {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 120, "verdict": "held"},
            "verdicts": {"outer_clip": ablation(0.7, 0.3, 1.1),
                         "entropy_control": ablation(-0.2, -0.4, -0.1),
                         "top_p_mask": ablation(0.1, -0.2, 0.4),
                         "routing_replay": ablation(0.5, 0.2, 0.9)}}
KIND = {"specialist_gain": decision(0.10, 0.05, 0.15), "consolidated_gain":
        decision(0.08, 0.03, 0.13), "consolidated_loss": decision(0.02, -0.02, 0.06)}
SD = skeleton(SelfDistillationMetrics)
SD_RUN = {**SD, "accuracy": {"multi_checkpoint": 0.5, "final_only": 0.52}, "n_eval": 200,
          "multi_vs_final": decision(-0.02, -0.05, 0.01, n=200),
          "specialists": {**SD["specialists"], "kinds": ["arithmetic"], "n_eval": 64,
                          "accuracy": {m: {"arithmetic": 0.1} for m in (
                              "pre_rl", "specialist arithmetic", "consolidated", "joint RL")},
                          "tests": {"arithmetic": KIND}}}
AGENTIC = {**skeleton(AgenticMetrics), "hacks": 13, "hacks_at_min_all_on": 13,
           "hacks_with_reason_all_on": 13, "reference_solved": 1.0, "namespaces": True,
           "tasks": 12, "redteam_tasks": 2,
           "solved": {p: {"all on": 0.0, "scrub off": 1.0, "test reset off": 1.0}
                      for p in ("read_git", "edit_tests", "delete_tests")}}
INTERVAL = re.compile(r"\[[^\]]+, [^\]]+\]")  # "[lo, hi]"


def test_grpo_and_self_distillation(tmp_path):
    write(tmp_path, "grpo", GRPO_RUN)
    write(tmp_path, "self_distillation", SD_RUN)
    c = card(tmp_path)
    v = verdicts(c)
    by = {r.finding.id: r for r in c.results}
    assert v["grpo.climb"] == HELD
    assert by["grpo.climb"].interval == "+50.0% [+40.0%, +60.0%] (n=120 held-out problems, " \
                                        "one seed)"
    assert "one seed" in by["grpo.climb"].finding.rule_text.lower()
    # with grpo.seeds >= 2 the interval over the seeds decides, whatever the one seed's says
    seeds = {**GRPO_RUN, "gain_over_seeds": decision(0.05, -0.02, 0.12, n=3, items="seeds"),
             "seed_gains": [{"seed": k, "steps": 40, "accuracy_start": 0.1,
                             "accuracy_final": 0.1 + g, "solved_any_start": 0.2,
                             "solved_any_final": 0.3, "accuracy_distilled": None,
                             "solved_any_distilled": None}
                            for k, g in enumerate((0.5, 0.0, -0.35))]}
    write(tmp_path, "grpo", seeds)
    by3 = {r.finding.id: r for r in card(tmp_path).results}
    assert by3["grpo.climb"].verdict == INCONCLUSIVE
    assert by3["grpo.climb"].interval == "+5.0% [-2.0%, +12.0%] (n=3 seeds) (per seed: " \
                                         "+50.0%, +0.0%, -35.0%)"
    write(tmp_path, "grpo", GRPO_RUN)
    # each ablation's verdict is its interval's: above x1 held, below not held, across it
    # inconclusive
    assert v["grpo.outer_clip"] == v["grpo.routing_replay"] == HELD
    assert v["grpo.entropy_control"] == NOT_HELD
    assert v["grpo.top_p_mask"] == INCONCLUSIVE
    assert by["grpo.outer_clip"].interval == "x2.014 [x1.35, x3.004] (n=8 steps)"
    assert "accuracy without - with -5.0% [-9.0%, -1.0%]" in by["grpo.outer_clip"].measured
    # notebook 10: the paired interval of multi - final straddles 0: inconclusive, not the
    # sign's "not held"
    assert v["self_distillation.multi_checkpoint"] == INCONCLUSIVE
    assert by["self_distillation.multi_checkpoint"].interval == \
        "-2.0% [-5.0%, +1.0%] (n=200 held-out problems)"
    assert v["self_distillation.consolidation"] == HELD
    assert "consolidated - pre-RL +8.0% [+3.0%, +13.0%]" in \
        by["self_distillation.consolidation"].interval
    # the climb's verdict is its interval's: straddling 0 is inconclusive
    write(tmp_path, "grpo", {**GRPO_RUN, "gain": {**GRPO_RUN["gain"], "lo": -0.01,
                                                  "verdict": "inconclusive"}})
    write(tmp_path, "self_distillation", {**SD_RUN, "multi_vs_final": decision(
        -0.06, -0.09, -0.02, n=200)})
    v = verdicts(card(tmp_path))
    assert v["grpo.climb"] == INCONCLUSIVE
    assert v["self_distillation.multi_checkpoint"] == NOT_HELD
    write(tmp_path, "grpo", {**GRPO_RUN, "verdicts": {"outer_clip": ablation(0.7, 0.3, 1.1)}})
    c = card(tmp_path)
    assert verdicts(c)["grpo.routing_replay"] == NOT_RUN  # ablation not in the manifest
    status = {s["stage"]: s["status"] for s in c.stages}
    # written by hand, with no current config hash: stale, and the card still reads them
    assert status["self_distillation"] == status["grpo"] == "stale"


def recipe_run() -> dict:
    """GRPO_RUN with laptop-worked's recipe: each seed's climb followed by self-distillation,
    and the same from the model before the reasoning bootstrap (grpo.compare_base)."""
    from mai_repro.stages.grpo import BaseComparison, Distilled

    gain = {"mean": 0.35, "lo": 0.3, "hi": 0.4, "n": 120, "verdict": "held"}
    none = {**gain, "mean": 0.0, "lo": 0.0, "hi": 0.0, "verdict": "inconclusive"}
    distilled = {**skeleton(Distilled), "accuracy": 0.45, "steps": 150, "total_s": 300.0,
                 "gain": gain}
    seeds = [{"seed": k, "steps": 40, "accuracy_start": 0.1, "accuracy_final": 0.2,
              "solved_any_start": 0.2, "solved_any_final": 0.3, "accuracy_distilled": 0.1 + g,
              "solved_any_distilled": 0.5} for k, g in enumerate((0.35, 0.4, 0.3))]
    without = {**skeleton(BaseComparison), "gain": none, "base": "control",
               "difference": decision(0.02, -0.01, 0.05, n=120), "gain_distilled": none,
               "difference_distilled": decision(0.35, 0.3, 0.4, n=120)}
    return {**GRPO_RUN, "distilled": distilled, "seed_gains": seeds,
            "distilled_over_seeds": decision(0.35, 0.2, 0.5, n=3, items="seeds"),
            "without_procedural": without}


def test_climb_with_self_distillation_and_the_base_without_the_bootstrap(tmp_path):
    """grpo.distill_steps and grpo.compare_base each give the card a row: the recipe's gain
    (climb, then self-distillation) decided over the seeds, and the gain from the bootstrapped
    base minus the gain from the base before the bootstrap, after the self-distillation where
    the preset distils. A preset without them shows "not run", never a number."""
    write(tmp_path, "grpo", GRPO_RUN)
    v = verdicts(card(tmp_path))
    assert v["grpo.self_distillation"] == v["grpo.bootstrap"] == NOT_RUN
    run, without = recipe_run(), recipe_run()["without_procedural"]
    write(tmp_path, "grpo", run)
    by = {r.finding.id: r for r in card(tmp_path).results}
    sd, boot = by["grpo.self_distillation"], by["grpo.bootstrap"]
    assert sd.verdict == HELD and "(n=3 seeds) (per seed: +35.0%, +40.0%, +30.0%)" in sd.interval
    assert "10.0% -> 60.0% after 40 steps -> 45.0% after 150 SFT steps" in sd.measured
    # the recipe against the recipe decides; the climb alone is shown beside it
    assert boot.verdict == HELD and boot.interval.startswith("+35.0% [+30.0%, +40.0%]")
    assert "climb + self-distillation: gain +35.0%" in boot.measured
    # the base without the family is named: notebook 08's compute-matched control here, the
    # model before the bootstrap where the preset trains no control
    assert "+0.0% from the compute-matched control (the bootstrap's steps" in boot.measured
    write(tmp_path, "grpo", {**run, "without_procedural": {**without,
                                                          "base": "before_bootstrap"}})
    boot = {r.finding.id: r for r in card(tmp_path).results}["grpo.bootstrap"]
    assert "from the model before the bootstrap (compute not matched)" in boot.measured
    assert "the climb alone: difference +2.0% [-1.0%, +5.0%]" in boot.measured
    # without a self-distillation after the climbs the climb's own difference decides
    write(tmp_path, "grpo", {**run, "without_procedural": {**without,
                                                          "difference_distilled": None}})
    boot = {r.finding.id: r for r in card(tmp_path).results}["grpo.bootstrap"]
    assert boot.verdict == INCONCLUSIVE and boot.measured.startswith("climb: gain +50.0%")
    # one seed: the paired interval over the problems decides the recipe's gain
    write(tmp_path, "grpo", {**run, "distilled_over_seeds": None})
    sd = {r.finding.id: r for r in card(tmp_path).results}["grpo.self_distillation"]
    assert sd.verdict == HELD and sd.interval.endswith("(n=120 held-out problems, one seed)")


def test_card_shows_an_interval_beside_each_verdict_of_09_10_12(tmp_path):
    write(tmp_path, "grpo", recipe_run())
    write(tmp_path, "self_distillation", SD_RUN)
    write(tmp_path, "agentic", AGENTIC)
    write(tmp_path, "collapse", COLLAPSE)
    c = card(tmp_path)
    with_interval = {"grpo", "self_distillation", "agentic"}
    for r in c.results:
        row = r.row()
        assert list(row)[list(row).index("verdict") + 1] == "interval"  # beside the verdict
        if r.finding.stage in with_interval:
            assert r.verdict != NOT_RUN and INTERVAL.search(row["interval"]), r.finding.id
        else:
            assert row["interval"] == report.NO_INTERVAL, r.finding.id
    by = {r.finding.id: r for r in c.results}
    # the agentic checks are exact counts over the tasks, with a Wilson interval on the share
    assert by["agentic.scrub"].verdict == HELD
    assert by["agentic.scrub"].interval == \
        "unscrubbed 2/2 [34%, 100%], scrubbed 0/2 [0%, 66%] tasks (exact; Wilson 95%)"
    assert "12/12 [76%, 100%]" in by["agentic.gate"].interval
    for fid in ("agentic.scrub", "agentic.reset", "agentic.gate"):
        assert "Exact counts over the tasks" in by[fid].finding.rule_text
    # a stage not run: no interval either
    assert {r.interval for r in c.results if r.verdict == NOT_RUN} <= {report.NO_INTERVAL}


def test_an_ablation_without_an_interval_is_inconclusive(tmp_path):
    """A manifest written before the intervals (only a held flag) decides nothing."""
    old = {k: v for k, v in ablation(0.7, 0.3, 1.1).items() if k not in ("verdict", "tests")}
    write(tmp_path, "grpo", {**GRPO_RUN, "verdicts": {"outer_clip": {**old, "held": True}}})
    r = next(r for r in card(tmp_path).results if r.finding.id == "grpo.outer_clip")
    assert r.verdict == INCONCLUSIVE and "rerun notebook 09" in r.note
    assert r.interval == report.UNREADABLE
    # a notebook-10 manifest from before the intervals does not load: unreadable, not "-"
    write(tmp_path, "self_distillation", {k: v for k, v in SD_RUN.items()
                                          if k != "multi_vs_final"})
    r = next(r for r in card(tmp_path).results
             if r.finding.id == "self_distillation.multi_checkpoint")
    assert r.verdict == INCONCLUSIVE and r.interval == report.UNREADABLE
    assert "multi_vs_final" in r.note


def test_verdict_words_come_from_the_stats_module():
    assert report.VERDICTS == (*stats.VERDICTS, NOT_RUN)
    assert report.NO_VERDICT == INCONCLUSIVE == "inconclusive"
    assert report.word_rule("held") is True and report.word_rule("not held") is False
    assert report.word_rule("inconclusive") is None


def test_build_reads_and_rebuilds_nothing(tmp_path):
    run = Run(load("smoke"), tmp_path)  # smoke rebuilds missing upstream stages on require()
    write(tmp_path, "collapse", COLLAPSE)
    fig, ax = plots.new()
    ax.plot([0, 1], [0, 1])
    plots.save(fig, tmp_path / "collapse" / "figures" / "generations")
    c = report.build(run)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_FILE) == \
        ["collapse", "report"]
    assert run.status("report") == "complete"
    m = run.read_manifest("report")["metrics"]
    assert m["counts"] == c.counts and m["counts"][HELD] == 2
    typed = read_metrics(run, "report")  # ReportMetrics, loaded strictly
    assert typed.counts == c.counts and [f.id for f in typed.findings] == [
        r.finding.id for r in c.results]
    assert m["figures"] == {"collapse": ["collapse/figures/generations.png"]}
    assert c.summary is not None and c.summary.is_file()
    ids = [f["id"] for f in m["findings"]]
    assert ids == [r.finding.id for r in c.results] and len(ids) == len(report.FINDINGS)
    assert m["findings"][ids.index("collapse.replace")]["values"]["replace"] == 180.0
    assert {f["interval"] for f in m["findings"]} == {report.NO_INTERVAL}  # none of 09/10/12


def test_report_stage_is_registered_without_upstream():
    rep = STAGES["report"]
    assert rep.upstream == () and rep.sections == ()
    assert rep.notebook == "13_report.ipynb" and rep.builder == "mai_repro.stages.report:build"
    assert set(report.card_stages()) == set(STAGES) - {"report"}
    assert "self_distillation" in report.card_stages()
    assert report.card_stages()[0] == "overview" and report.card_stages()[-1] == "agentic"


def test_grpo_claims_are_written_once_next_to_their_stage():
    from mai_repro.stages import grpo

    assert report.GRPO_CLAIMS is grpo.CLAIMS
    claims = {f.id.removeprefix("grpo."): f.claim for f in report.FINDINGS
              if f.stage == "grpo"
              and f.id not in ("grpo.climb", "grpo.self_distillation", "grpo.bootstrap")}
    assert claims == grpo.CLAIMS
