"""Typed stage results: strict loading (schema.load_result) and every stage's metrics class
against the report card's findings."""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from mai_repro.schema import ResultError, load_result, result_dict


def skeleton(cls: type) -> dict[str, Any]:
    """The smallest stored metrics that load into ``cls``: zeros, empty strings, lists and
    dicts, None where allowed, nested dataclasses filled the same way. Tests override the keys
    a finding reads."""
    hints = get_type_hints(cls)
    return {f.name: _blank(hints[f.name]) for f in dataclasses.fields(cls)}


def _blank(tp: Any) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return skeleton(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        return None if type(None) in args else _blank(args[0])
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    return {bool: False, int: 0, float: 0.0, str: ""}.get(tp)


@dataclass
class Inner:
    x: float
    tags: list[str] = field(default_factory=list)


@dataclass
class Outer:
    n: int
    name: str
    inner: Inner
    by_family: dict[str, float]
    maybe: float | None
    flags: list[bool]
    extra: Any


def sample() -> dict[str, Any]:
    return {"n": 3, "name": "a", "inner": {"x": 1.5, "tags": ["p"]},
            "by_family": {"web": 0.5, "code": "inf"}, "maybe": None, "flags": [True],
            "extra": {"free": [1, "two"]}}


def test_load_result_round_trip_and_inf_strings():
    r = load_result(Outer, sample())
    assert r.inner.x == 1.5 and r.inner.tags == ["p"] and r.extra == {"free": [1, "two"]}
    assert r.by_family["code"] == math.inf and r.maybe is None
    assert result_dict(r) == sample()  # inf written back as the string it was read from
    nan = load_result(Inner, {"x": "nan", "tags": []})
    assert math.isnan(nan.x) and result_dict(nan)["x"] == "nan"
    assert load_result(Inner, {"x": "-inf", "tags": []}).x == -math.inf


def test_load_result_unknown_key_names_class_and_path():
    data = sample()
    data["inner"]["y"] = 2
    with pytest.raises(ResultError, match=r"Outer: inner\.y: unknown key"):
        load_result(Outer, data)


def test_load_result_missing_key_names_class_and_path():
    data = sample()
    del data["inner"]["tags"]  # missing even though the field has a default: results are strict
    with pytest.raises(ResultError, match=r"Outer: inner\.tags: missing key"):
        load_result(Outer, data)
    data = sample()
    del data["name"]
    with pytest.raises(ResultError, match=r"Outer: name: missing"):
        load_result(Outer, data)


def test_load_result_wrong_types():
    for key, bad in [("n", 1.5), ("n", True), ("name", 3), ("flags", [1]), ("maybe", "x"),
                     ("by_family", {"web": "lots"}), ("inner", [1])]:
        data = sample()
        data[key] = bad
        with pytest.raises(ResultError, match=key):
            load_result(Outer, data)


# -- every stage's METRICS against the report card ---------------------------------------------

def _summary(model: str, gain: float) -> dict[str, Any]:
    from mai_repro.stages.midtraining import ModelSummary

    return {**skeleton(ModelSummary), "model": model, "context_gain": gain,
            "retrieval_final": 0.5 + gain, "nats_final": gain}


def _decision(verdict: str = "held") -> dict[str, Any]:
    return {"test": "t", "items": "held-out problems", "mean": 0.1, "lo": 0.05, "hi": 0.15,
            "n": 10, "bar": 0.0, "scale": "share", "verdict": verdict}


def _verdict(held: bool) -> dict[str, Any]:
    word = "held" if held else "not held"
    return {"measure": "m", "with": 1.0, "without": 2.0, "verdict": word,
            "tests": [_decision(word)], "rule": "r", "steps": 4, "claim": "c",
            "accuracy_with": 0.5, "accuracy_without": 0.4, "accuracy_test": None}


def stage_samples() -> dict[str, dict[str, Any]]:
    """A stored metrics dict per stage with a METRICS class: the class's skeleton with the
    dict entries the report card's findings and headlines read (keyed by family, ablation,
    regime, model) filled in, as a real run writes them."""
    from mai_repro import reference
    from mai_repro.stages import metrics_class
    from mai_repro.stages.collapse import REGIMES
    from mai_repro.stages.grpo import BaseComparison, Distilled
    from mai_repro.stages.report import GRPO_CLAIMS
    from mai_repro.train.config import ABLATIONS

    gain = {"mean": 0.1, "lo": 0.05, "hi": 0.15, "n": 10, "verdict": "held"}
    fill: dict[str, dict[str, Any]] = {
        "overview": {},
        "wikipedia": {"retention": {"markup: value present": 0.8, "text: parsed": 0.1}},
        "tokenizer": {"heldout_roundtrip": {"checked": 10, "failed": 0}},
        "architecture": {},
        "ladder": {"eg": {a: [0.9, 0.8] for a in ABLATIONS}, "noise_band": [0.95, 1.05]},
        "mixtures": {"kendall_ci": [-0.5, 0.5]},
        "pretraining": {"overhead_s": {k: 1.0 for k in reference.OVERHEAD_PARTS}, "mfu": 0.3,
                        "checkpoint_stall_s": {"sync": 0.2, "async": 0.1}},
        "midtraining": {"contexts": [64, 256], "pre_len": 32,
                        "summary": [_summary("pre-trained", 0.0),
                                    _summary("stage 2 (256)", 0.1)]},
        # laptop-worked's: each climb followed by self-distillation, and the same from the
        # model before the reasoning bootstrap
        "grpo": {"verdicts": {name: _verdict(True) for name in GRPO_CLAIMS},
                 "distilled": {**skeleton(Distilled), "gain": gain},
                 "without_procedural": {**skeleton(BaseComparison), "gain_distilled": gain,
                                        "base": "control", "difference": _decision(),
                                        "difference_distilled": _decision()}},
        "self_distillation": {"accuracy": {"multi_checkpoint": 0.5, "final_only": 0.4},
                              "multi_vs_final": _decision()},
        "report": {},
        "agentic": {"hacks": 13, "hacks_at_min_all_on": 13, "hacks_with_reason_all_on": 13,
                    "reference_solved": 1.0, "namespaces": True, "tasks": 12,
                    "redteam_tasks": 2,
                    "solved": {p: {"all on": 0.0, "scrub off": 1.0, "test reset off": 1.0}
                               for p in ("read_git", "edit_tests", "delete_tests")}},
        "curation": {"inputs": 10, "kept": 7, "removed": {"quality/too_short": 3},
                     "detector_method": "binoculars",
                     "detector_auc": {"binoculars": {"generator": 0.99,
                                                     "generator T=1 top-p 0.97": 0.8}}},
        "collapse": {**{f"{k}_last": {r: 1.0 for r in REGIMES}
                        for k in ("ppl", "nll_p99", "rare_share", "coverage", "distinct3",
                                  "detector_flagged")}},
    }
    out = {}
    for stage, extra in fill.items():
        cls = metrics_class(stage)
        assert cls is not None, f"stage {stage} has no METRICS class"
        out[stage] = {**skeleton(cls), **extra}
    specialists = out["self_distillation"]["specialists"]
    models = ("pre_rl", "specialist arithmetic", "consolidated", "joint RL")
    specialists.update(kinds=["arithmetic"], n_eval=10,
                       accuracy={m: {"arithmetic": 0.5} for m in models},
                       correct={m: {"arithmetic": [2] * 10} for m in models},
                       tests={"arithmetic": {k: _decision() for k in (
                           "specialist_gain", "consolidated_gain", "consolidated_loss")}})
    return out


def test_every_stage_has_metrics():
    from mai_repro.artifacts import STAGES
    from mai_repro.stages import metrics_class

    typed = {s for s in STAGES if metrics_class(s) is not None}
    assert typed == set(STAGES)
    assert typed == set(stage_samples())


def test_curation_findings_read_the_typed_metrics():
    """The report card's curation findings by value, from the typed metrics: the accounting
    adds up and the detector's AUCs are the ones written."""
    from mai_repro.stages import load_metrics
    from mai_repro.stages.report import FINDINGS, HELD, evaluate

    m = load_metrics("curation", stage_samples()["curation"])
    results = {f.id: evaluate(f, m) for f in FINDINGS if f.stage == "curation"}
    assert results["curation.accounting"].verdict == HELD  # 10 = 7 + 3
    assert results["curation.detector_sampled"].verdict != HELD  # 0.8 < the floor 0.9
    assert m.ai_planted.kept == 0 and m.ai_logo_genre == {}


def test_a_renamed_nested_curation_metric_fails_to_load():
    """Renaming inside a nested record (the planted outcome) fails too, naming the path."""
    from mai_repro.stages import load_metrics

    sample = stage_samples()["curation"]
    planted = dict(sample["ai_planted"])
    planted["removed_fraction"] = planted.pop("removed_share")
    with pytest.raises(ResultError, match=r"CurationMetrics: ai_planted\.removed_fraction"):
        load_metrics("curation", {**sample, "ai_planted": planted})


@pytest.mark.parametrize("stage", sorted(stage_samples()))
def test_every_finding_and_headline_reads_the_stage_metrics(stage):
    from mai_repro.stages import load_metrics
    from mai_repro.stages.report import FINDINGS, HEADLINES, NOT_RUN, UNREADABLE, evaluate, headline

    sample = stage_samples()[stage]
    m = load_metrics(stage, sample)
    assert result_dict(m) == result_dict(load_metrics(stage, result_dict(m)))  # round trip
    findings = [f for f in FINDINGS if f.stage == stage]
    for f in findings:
        r = evaluate(f, m)
        # an attribute the class lacks would show as "unreadable", a missing entry "not run"
        assert r.verdict != NOT_RUN and r.measured not in (NOT_RUN, UNREADABLE), (f.id, r.note)
    for h in (h for h in HEADLINES if h.stage == stage):
        assert headline(h, m) not in (NOT_RUN, UNREADABLE), h.label


@pytest.mark.parametrize("stage", sorted(stage_samples()))
def test_a_renamed_metric_fails_to_load(stage):
    """What a renamed metric looks like from the reader's side: a key the class expects is
    missing and an unknown one is present. Either alone raises, naming the class."""
    from mai_repro.stages import load_metrics, metrics_class

    sample = stage_samples()[stage]
    name = metrics_class(stage).__name__
    for key in sample:
        renamed = {k: v for k, v in sample.items() if k != key}
        with pytest.raises(ResultError, match=f"{name}: {key}: missing key"):
            load_metrics(stage, renamed)
        with pytest.raises(ResultError, match=f"{name}: {key}_v2: unknown key"):
            load_metrics(stage, {**sample, f"{key}_v2": sample[key]})
