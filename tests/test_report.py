"""The report card (mai_repro.stages.report): verdicts from fake manifests, never a number for a
stage that was not run, and nothing rebuilt."""

import math
import re

from test_results import skeleton

from mai_repro import plots
from mai_repro.artifacts import LOCK_FILE, STAGES, Run, atomic_write_json, project_root
from mai_repro.config import load
from mai_repro.stages import read_metrics, report
from mai_repro.stages.collapse import CollapseMetrics
from mai_repro.stages.grpo import GRPOMetrics
from mai_repro.stages.midtraining import MidtrainingMetrics, ModelSummary
from mai_repro.stages.report import HELD, NO_VERDICT, NOT_HELD, NOT_RUN
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
    assert c.counts == {HELD: 0, NOT_HELD: 0, NO_VERDICT: 0, NOT_RUN: len(report.FINDINGS)}
    assert all(s["status"] == NOT_RUN and s["wall_time_s"] is None for s in c.stages)


def test_renamed_metric_makes_its_stage_unreadable_not_not_run(tmp_path):
    renamed = {k: v for k, v in WIKI.items() if k != "token_ratio"} | {"tok_ratio": 3.2}
    write(tmp_path, "wikipedia", renamed)
    c = card(tmp_path)
    by = {r.finding.id: r for r in c.results}
    for fid in ("wikipedia.more_tokens", "wikipedia.about_3x", "wikipedia.infoboxes"):
        assert by[fid].verdict == NO_VERDICT and by[fid].measured == report.UNREADABLE, fid
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
    assert v["wikipedia.more_tokens"] == v["wikipedia.infoboxes"] == NO_VERDICT
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
    assert counts[NO_VERDICT] == 1  # all_moe crosses 1
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


def test_accuracy_rule():
    assert report.accuracy_rule(-0.05, 0.3, 0.35, 100) is False
    assert report.accuracy_rule(0.0, 0.3, 0.3, 100) is False
    assert report.accuracy_rule(0.3, 0.6, 0.3, 100) is True  # se ~ 0.067
    assert report.accuracy_rule(0.05, 0.35, 0.3, 100) is None  # inside 2 standard errors
    assert report.accuracy_rule(0.05, 0.35, 0.3, None) is True  # no n: the sign decides


def test_grpo_and_self_distillation(tmp_path):
    ab = {"measure": "m", "with": 1.0, "without": 5.0, "steps": 8, "claim": "c"}
    grpo = skeleton(GRPOMetrics)
    gain = {"mean": 0.5, "lo": 0.4, "hi": 0.6, "n": 120, "verdict": "held"}
    write(tmp_path, "grpo", {**grpo, "accuracy_start": 0.1, "accuracy_final": 0.6, "steps": 40,
                             "task": {**grpo["task"], "n_eval": 120}, "reward_gain": 0.2,
                             "gain": gain,
                             "verdicts": {"outer_clip": {**ab, "held": True},
                                          "entropy_control": {**ab, "held": False}}})
    write(tmp_path, "self_distillation", {**skeleton(SelfDistillationMetrics),
                                          "accuracy": {"multi_checkpoint": 0.5,
                                                       "final_only": 0.52}, "n_eval": 200})
    c = card(tmp_path)
    v = verdicts(c)
    assert v["grpo.climb"] == HELD
    assert "[+40.0%, +60.0%]" in {r.finding.id: r for r in c.results}["grpo.climb"].measured
    # the climb's verdict is its interval's: straddling 0 is no verdict (inconclusive)
    write(tmp_path, "grpo", {**grpo, "accuracy_start": 0.1, "accuracy_final": 0.6, "steps": 40,
                             "task": {**grpo["task"], "n_eval": 120},
                             "gain": {**gain, "lo": -0.01, "verdict": "inconclusive"}})
    assert verdicts(card(tmp_path))["grpo.climb"] == NO_VERDICT
    write(tmp_path, "grpo", {**grpo, "accuracy_start": 0.1, "accuracy_final": 0.6, "steps": 40,
                             "task": {**grpo["task"], "n_eval": 120}, "reward_gain": 0.2,
                             "gain": gain,
                             "verdicts": {"outer_clip": {**ab, "held": True},
                                          "entropy_control": {**ab, "held": False}}})
    c = card(tmp_path)
    v = verdicts(c)
    assert v["grpo.outer_clip"] == HELD and v["grpo.entropy_control"] == NOT_HELD
    assert v["grpo.routing_replay"] == NOT_RUN  # ablation not in the manifest
    assert v["self_distillation.multi_checkpoint"] == NOT_HELD
    status = {s["stage"]: s["status"] for s in c.stages}
    # written by hand, with no current config hash: stale, and the card still reads them
    assert status["self_distillation"] == status["grpo"] == "stale"


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
              if f.stage == "grpo" and f.id != "grpo.climb"}
    assert claims == grpo.CLAIMS
