"""Stage ``report`` (notebook 13): the report card.

One :class:`Finding` per claim of the MAI-Thinking-1 report that a notebook of ours measures:
the stage it comes from, the claim in words (with the report's figure where RECIPE.md gives
one), how to read our measurement from that stage's metrics and the rule that turns the measured
values into a verdict. A finding reads the stage's typed metrics by attribute: the manifest's
``metrics`` (``<run_dir>/<stage>/manifest.json``) loaded strictly into the stage module's
``METRICS`` dataclass (:func:`mai_repro.stages.read_metrics`). Verdicts:

- ``held``: the measurement agrees with the claim at our scale;
- ``not held``: it contradicts the claim at our scale;
- ``inconclusive``: the stage ran but the measurement cannot decide (its interval includes the
  bar, or a sign that flips between rungs); also when a value or the stage's metrics cannot be
  read (a renamed, missing or mistyped metric, a manifest from before a finding's interval):
  then the measurement reads "unreadable" or the note gives the error;
- ``not run``: the stage's manifest is absent, or an entry a finding reads is absent from a
  dict-valued metric (an ablation, family or model that was not run).

The findings of notebooks 09, 10 and 12 carry a stated test and an interval (``Finding.interval``,
the card's ``interval`` column): a paired bootstrap over held-out problems or over steps
(:class:`mai_repro.stats.Decision`, recorded by the stage), or for the agentic stage's scripted
checks exact counts over its tasks with a Wilson interval on the share. The other findings show
"-" there.

Every measured number on the card is read from a manifest; nothing measured is typed here.
The report's own figures are constants below (or in :mod:`mai_repro.reference`), each citing
its section of RECIPE.md. The card reads whatever stages a run directory holds and rebuilds
nothing: a stage that was not run shows as "not run", never as a number.

Notebook 10's self-distillation finding reads ``metrics.multi_vs_final`` (held-out accuracy of
the multi-checkpoint minus the final-only student after their short climbs, at the same budget,
paired over the held-out problems) and ``metrics.accuracy``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mai_repro import reference, stats
from mai_repro.artifacts import STAGES, Run
from mai_repro.schema import ResultError, load_result, result_dict
from mai_repro.stages import read_metrics as read_stage_metrics
from mai_repro.stages.grpo import CLAIMS as GRPO_STABILISER_CLAIMS
from mai_repro.stages.grpo import RULES as GRPO_STABILISER_RULES
from mai_repro.train.config import ABLATIONS

STAGE = "report"
HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN = stats.HELD, stats.NOT_HELD, stats.INCONCLUSIVE, "not run"
NO_VERDICT = INCONCLUSIVE  # its former name (the word was "no verdict")
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_RUN)
NO_INTERVAL = "-"  # the interval column of a finding that has none

# The report's figures used by the rules (RECIPE.md section in the comment).
WIKI_TOKEN_RATIO = 3.0  # section 1: raw wiki markup costs "about 3x more tokens"
WIKI_RATIO_FACTOR = 1.5  # "about 3x": held between 3 / 1.5 and 3 x 1.5
MIXTURE_CROSSOVER_PARAMS = 23e9  # section 1: the STEM- and code-heavy curves crossed near 23B
# The project's floor for its AI-content detector (notebook 01 asserts it at laptop), not a
# figure of the report: the report states an effort to remove AI text, with no figure.
DETECTOR_AUC_TARGET = 0.9


class Missing(KeyError):
    """A key a finding reads is absent from a manifest's metrics."""


def get(metrics: Any, *path: Any) -> Any:
    """``metrics[path[0]][path[1]]...``, raising :class:`Missing` naming the path."""
    value = metrics
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            raise Missing(".".join(str(p) for p in path)) from None
    return value


def num(x: Any) -> float:
    """A manifest number as a float (manifests store infinities as the string ``"inf"``)."""
    return float(x)


@dataclass(frozen=True)
class Finding:
    """A claim of the report, where our measurement lives, and the rule deciding it."""

    id: str
    stage: str  # a key of artifacts.STAGES
    section: str  # RECIPE.md section
    claim: str  # the report's claim in words, with its figure where it gives one
    read: Callable[[Any], dict[str, Any]]  # typed metrics -> values (raises Missing)
    rule: Callable[[dict[str, Any]], bool | None]  # values -> held / not held / inconclusive
    rule_text: str  # the rule in words
    show: Callable[[dict[str, Any]], str]  # values -> our measurement in words
    # values -> the interval beside the verdict (notebooks 09, 10, 12); None: the card shows "-"
    interval: Callable[[dict[str, Any]], str] | None = None


@dataclass
class Result:
    """A finding evaluated on one run directory."""

    finding: Finding
    verdict: str
    measured: str  # "not run" when the stage or a key is missing: never a number then
    values: dict[str, Any] | None = None
    note: str = ""
    interval: str = NO_INTERVAL  # the test's interval, shown beside the verdict

    def row(self) -> dict[str, Any]:
        f = self.finding
        return {"notebook": notebook_of(f.stage)[:2], "section": f.section, "claim": f.claim,
                "ours": self.measured, "verdict": self.verdict, "interval": self.interval,
                "rule": f.rule_text, **({"note": self.note} if self.note else {})}


@dataclass(frozen=True)
class Headline:
    """One headline figure of a stage: a label, how to read it, how to print it."""

    stage: str
    label: str
    read: Callable[[Any], Any]  # typed metrics -> value
    fmt: Callable[[Any], str]


@dataclass
class FindingRecord:
    """One finding as the report stage's manifest stores it."""

    id: str
    stage: str
    section: str
    claim: str
    measured: str
    verdict: str
    interval: str  # beside the verdict: the test's interval, "-" when the finding has none
    rule: str
    note: str
    values: Any  # what the finding read from its stage (None when not run)


@dataclass
class HeadlineRecord:
    notebook: str
    stage: str
    figure: str
    value: str


@dataclass
class StageRecord:
    notebook: str
    stage: str
    status: str  # complete, stale, not run, unreadable
    wall_time_s: float | None
    finished_at: str | None
    figures: int


@dataclass
class ReportMetrics:
    """What the report stage's manifest records (``metrics``), read back by attribute."""

    counts: dict[str, int]  # verdict -> findings
    findings: list[FindingRecord]
    headlines: list[HeadlineRecord]
    stages: list[StageRecord]
    figures: dict[str, list[str]]  # stage -> its figures, relative to the run directory


METRICS = ReportMetrics


@dataclass
class Card:
    """The report card of one run directory."""

    run_dir: Path
    results: list[Result]
    headlines: list[dict[str, Any]]
    stages: list[dict[str, Any]]
    figures: dict[str, list[Path]] = field(default_factory=dict)
    summary: Path | None = None  # the verdict figure, once build() has drawn it

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(r.verdict for r in self.results)
        return {v: c.get(v, 0) for v in VERDICTS}

    def finding_rows(self) -> list[dict[str, Any]]:
        return [r.row() for r in self.results]

    def metrics(self) -> ReportMetrics:
        """What the report stage's manifest stores."""
        return ReportMetrics(
            counts=self.counts,
            findings=[FindingRecord(
                id=r.finding.id, stage=r.finding.stage, section=r.finding.section,
                claim=r.finding.claim, measured=r.measured, verdict=r.verdict,
                interval=r.interval, rule=r.finding.rule_text, note=r.note,
                values=_jsonable(r.values))
                for r in self.results],
            headlines=[HeadlineRecord(**h) for h in self.headlines],
            stages=[StageRecord(**s) for s in self.stages],
            figures={s: [str(p.relative_to(self.run_dir)) for p in ps]
                     for s, ps in self.figures.items()},
        )


# --------------------------------------------------------------------------------------------
# Helpers for the rules.


def word_rule(word: str) -> bool | None:
    """A verdict word a stage recorded (:mod:`mai_repro.stats`) as a rule's result: held ->
    True, not held -> False, inconclusive -> None; anything else is unreadable."""
    if word not in stats.VERDICTS:
        raise ValueError(f"not a verdict word: {word!r}")
    return {HELD: True, NOT_HELD: False}.get(word)


def decision(d: Any) -> stats.Decision:
    """A :class:`mai_repro.stats.Decision` from a typed metric or from a dict a manifest stores
    (an ablation's ``tests``; non-finite numbers stored as strings)."""
    return d if isinstance(d, stats.Decision) else load_result(stats.Decision, d)


def share_interval(k: int, n: int) -> str:
    """``k/n`` with the Wilson 95% interval of the share (exact counts over ``n`` items)."""
    if n <= 0:
        return "0 tasks"
    w = stats.wilson(k, n)
    return f"{k}/{n} [{w.lo:.0%}, {w.hi:.0%}]"


def tasks_count(share: Any, n: int) -> int:
    """The count behind a share of ``n`` tasks (the agentic stage stores shares)."""
    return int(round(num(share) * n))


def ladder_rule(eg: list[float], band: list[float]) -> bool | None:
    """The recipe's choice holds when the ablation's EG is below 1 at every rung and below the
    baseline's own scatter; it fails when EG is above 1 (and the scatter) at every rung."""
    if not eg or not all(math.isfinite(e) or e == math.inf for e in eg):
        return None
    lo, hi = band
    if all(e < 1 and e < lo for e in eg):
        return True
    if all(e > 1 and e > hi for e in eg):
        return False
    return None


def _sign_words(eg: list[float], band: list[float]) -> str:
    if all(e < 1 for e in eg):
        side = "below 1 at every rung"
    elif all(e > 1 for e in eg):
        side = "above 1 at every rung"
    else:
        return "crosses 1 between rungs"
    inside = not (all(e < band[0] for e in eg) or all(e > band[1] for e in eg))
    return side + (" (within the baseline's scatter)" if inside else "")


def _midtraining_pair(m: Any) -> dict[str, Any]:
    by = m.by_model()
    pre, final = get(by, "pre-trained"), get(by, m.final_label)
    return {"pre_len": m.pre_len, "context": m.contexts[-1],
            "pre_gain": pre.context_gain, "final_gain": final.context_gain,
            "pre_retrieval": pre.retrieval_final, "final_retrieval": final.retrieval_final,
            "retrieval_gain": m.retrieval_gain,
            "pre_nats": pre.nats_final, "final_nats": final.nats_final}


def _spikes(m: Any) -> dict[str, Any]:
    return {"planted": sorted(m.planted_bad_steps),
            "caught": sorted({s.step for s in m.spikes}),
            "false_alarms": sum(1 for s in m.spikes if not s.planted),
            "rollbacks": m.rollbacks, "final_loss": m.final_loss}


def _overhead(m: Any) -> dict[str, Any]:
    parts = m.overhead_s
    total = sum(parts.values())
    ours = {k: get(parts, k) / total if total else math.nan
            for k in reference.OVERHEAD_PARTS}
    return {"ours": ours, "report": {k: v[1] for k, v in reference.OVERHEAD_PARTS.items()}}


def _order(shares: Mapping[str, float]) -> list[str]:
    return sorted(shares, key=lambda k: -shares[k])


def _collapse(m: Any) -> dict[str, Any]:
    return {"gen0": m.ppl_gen0, "generations": m.generations,
            **{r: get(m.ppl_last, r) for r in ("replace", "keep_real", "accumulate")}}


# --------------------------------------------------------------------------------------------
# The findings. Claims cite RECIPE.md sections; the rules are documented in docs/report.md.

LADDER_CLAIMS = {  # ablation (changes one recipe choice back) -> the report's choice, section 2
    "standard_init": "zero-initialised attention output beats random init",
    "standard_moe": "LatentMoE beats a standard MoE at equal active compute",
    "all_moe": "interleaved dense / MoE FFN layers beat MoE in every layer",
    "all_global": "periodic local/global attention beats all-global attention",
}

GRPO_CLAIMS = GRPO_STABILISER_CLAIMS  # written once, in stages/grpo.py, section 6


def _ladder_finding(name: str) -> Finding:
    return Finding(
        id=f"ladder.{name}", stage="ladder", section="2, 3",
        claim=f"{LADDER_CLAIMS[name]} on a scaling ladder (validate on ladders, not one run; "
              f"EG of the ablation < 1)",
        read=lambda m: {"eg": get(m.eg, name), "band": m.noise_band},
        rule=lambda v: ladder_rule(v["eg"], v["band"]),
        rule_text="held: EG < 1 and below the baseline's scatter at every rung; not held: EG "
                  "> 1 and above it at every rung; else inconclusive",
        show=lambda v: "EG " + ", ".join(f"{e:.3f}" for e in v["eg"]) + ": "
                       + _sign_words(v["eg"], v["band"]),
    )


def _ablation_rule(v: Mapping[str, Any]) -> bool | None:
    if "verdict" not in v or "tests" not in v:
        raise ValueError("no verdict with an interval in the manifest (written before "
                         "intervals): rerun notebook 09")
    return word_rule(v["verdict"])


def _ablation_show(v: Mapping[str, Any]) -> str:
    first = v.get("from_step", 0)  # grpo.ablation_from (manifests before it: 0)
    out = (f"{v['measure']}: {num(v['with']):.4g} with, {num(v['without']):.4g} without "
           f"(steps {first + 1}-{first + v['steps']})")
    if v.get("accuracy_test"):
        acc = decision(v["accuracy_test"])
        out += f"; held-out accuracy without - with {acc.span()} (n={acc.n} problems)"
    return out


def _seeds_or_problems(seeds: Mapping[str, Any] | None, per_seed: list[float],
                       gain: Any) -> dict[str, Any]:
    """The interval that decides a gain: over the seeds (``seeds``, a Decision as a dict, when
    grpo.seeds >= 2; ``per_seed``: each seed's gain), else over the held-out problems of the
    one seed (``gain``, a paired bootstrap)."""
    if seeds and seeds["n"] >= 2:
        d = decision(seeds)
        each = ", ".join(f"{x:+.1%}" for x in per_seed)
        return {"interval_verdict": d.verdict, "interval": f"{d} (per seed: {each})"}
    return {"interval_verdict": gain.verdict,
            "interval": f"{gain.mean:+.1%} [{gain.lo:+.1%}, {gain.hi:+.1%}] "
                        f"(n={gain.n} held-out problems, one seed)"}


def _grpo_climb(m: Any) -> dict[str, Any]:
    """The climb's gain and the interval that decides it (:func:`_seeds_or_problems`;
    manifests before grpo.seeds: over the problems)."""
    return {"start": m.accuracy_start, "final": m.accuracy_final, "n": m.task.n_eval,
            "steps": m.steps,
            **_seeds_or_problems(getattr(m, "gain_over_seeds", None),
                                 [g.accuracy_final - g.accuracy_start for g in m.seed_gains],
                                 m.gain)}


def _grpo_distilled(m: Any) -> dict[str, Any]:
    """The climb then the report's self-distillation (grpo.distill_steps > 0): the gain of
    the distilled model over the start, decided as the climb's."""
    d = m.distilled
    if d is None:
        raise Missing("distilled")
    return {"start": m.accuracy_start, "climbed": m.accuracy_final, "distilled": d.accuracy,
            "n": m.task.n_eval, "steps": m.steps, "sft_steps": d.steps, "total_s": d.total_s,
            **_seeds_or_problems(m.distilled_over_seeds,
                                 [g.accuracy_distilled - g.accuracy_start
                                  for g in m.seed_gains if g.accuracy_distilled is not None],
                                 d.gain)}


def _grpo_bootstrap(m: Any) -> dict[str, Any]:
    """The main run's gain minus the same run's from the base without the procedural family
    (grpo.compare_base: notebook 08's compute-matched control, or the model before the
    reasoning bootstrap): after the climb and its self-distillation where the preset distils,
    else after the climb."""
    w = m.without_procedural
    if w is None:
        raise Missing("without_procedural")
    after = w.difference_distilled is not None
    return {"after_distillation": after, "climb": decision(w.difference),
            "test": decision(w.difference_distilled if after else w.difference),
            "with": m.distilled.gain.mean if after else m.gain.mean,
            "without": w.gain_distilled.mean if after else w.gain.mean,
            "base": w.base_label}


def _bootstrap_show(v: Mapping[str, Any]) -> str:
    what = "climb + self-distillation" if v["after_distillation"] else "climb"
    out = (f"{what}: gain {v['with']:+.1%} from the bootstrapped base, {v['without']:+.1%} "
           f"from {v['base']}")
    if v["after_distillation"]:
        out += f"; the climb alone: difference {v['climb'].span()}"
    return out


def _grpo_ablation_finding(name: str) -> Finding:
    return Finding(
        id=f"grpo.{name}", stage="grpo", section="6",
        claim=GRPO_CLAIMS[name],
        read=lambda m: dict(get(m.verdicts, name)),
        rule=_ablation_rule,
        rule_text=GRPO_STABILISER_RULES[name] + " (the same steps with and without it, one "
                  "seed; docs/rl.md)",
        show=_ablation_show,
        interval=lambda v: "; ".join(str(decision(t)) for t in v["tests"]),
    )


# The agentic findings are deterministic scripted checks on the project's own tasks.
AGENTIC_EXACT = ("Exact counts over the tasks (scripted policies: no sampling noise); the Wilson "
                 "95% interval of each share, beside the verdict, says what that many tasks "
                 "tell about the task generator, and does not decide it")


FINDINGS: list[Finding] = [
    Finding(
        id="overview.params", stage="overview", section="2",
        claim=f"MAI-Base-1 has ~{reference.TOTAL_PARAMS / 1e12:.0f}T total and "
              f"{reference.ACTIVE_PARAMS / 1e9:.0f}B active parameters (a config built from "
              f"the report's architecture)",
        read=lambda m: {"total": m.total_params, "active": m.active_params,
                        "total_err": m.total_params_rel_err,
                        "active_err": m.active_params_rel_err},
        rule=lambda v: abs(v["total_err"]) <= 0.05 and abs(v["active_err"]) <= 0.05,
        rule_text="held: both counts within 5% of the report's",
        show=lambda v: f"{v['total'] / 1e12:.3f}T total ({v['total_err']:+.1%}), "
                       f"{v['active'] / 1e9:.1f}B active ({v['active_err']:+.1%})",
    ),
    Finding(
        id="overview.composition", stage="overview", section="1",
        claim="the composition table of the 30T training tokens is consistent (training "
              "tokens from unique tokens and shares, epochs within rounding)",
        read=lambda m: {"tokens": m.mixture_training_tokens_ok,
                        "epochs": m.mixture_epochs_ok},
        rule=lambda v: bool(v["tokens"] and v["epochs"]),
        rule_text="held: the planner rebuilds every family's training tokens within 0.06T "
                  "and its epochs within the rounding interval",
        show=lambda v: f"training tokens {'match' if v['tokens'] else 'do not match'}, epochs "
                       f"{'within' if v['epochs'] else 'outside'} rounding",
    ),
    Finding(
        id="curation.accounting", stage="curation", section="1",
        claim="every raw document is processed in-house and kept or removed for a recorded "
              "reason",
        read=lambda m: {"inputs": m.inputs, "kept": m.kept,
                        "removed": sum(m.removed.values())},
        rule=lambda v: v["inputs"] == v["kept"] + v["removed"],
        rule_text="held: inputs = kept + removed",
        show=lambda v: f"{v['inputs']:,} inputs = {v['kept']:,} kept + {v['removed']:,} "
                       f"removed",
    ),
    Finding(
        id="curation.detector", stage="curation", section="1",
        claim="AI-generated content inside collected sources can be found and removed "
              "(measured on our own models' text)",
        read=lambda m: {"auc": m.detector_headline_auc, "method": m.detector_method,
                        "acts": m.detector_acts},
        rule=lambda v: v["auc"] >= DETECTOR_AUC_TARGET,
        rule_text=f"held: detector AUC >= {DETECTOR_AUC_TARGET} (the project's floor)",
        show=lambda v: f"{v['method']} AUC {v['auc']:.3f}; the filter "
                       f"{'acts' if v['acts'] else 'does not act'}",
    ),
    Finding(
        id="curation.detector_sampled", stage="curation", section="1, 7",
        claim="... also for text sampled the way the report samples (temperature 1, top-p "
              "0.97)",
        read=lambda m: {"auc": get(m.detector_auc, m.detector_method,
                                   "generator T=1 top-p 0.97")},
        rule=lambda v: v["auc"] >= DETECTOR_AUC_TARGET,
        rule_text=f"held: detector AUC >= {DETECTOR_AUC_TARGET}",
        show=lambda v: f"AUC {v['auc']:.3f}",
    ),
    Finding(
        id="wikipedia.more_tokens", stage="wikipedia", section="1",
        claim="raw wiki markup costs more tokens than the rendered text",
        read=lambda m: {"ratio": m.token_ratio},
        rule=lambda v: v["ratio"] > 1,
        rule_text="held: markup / text token ratio > 1",
        show=lambda v: f"{v['ratio']:.2f}x the tokens",
    ),
    Finding(
        id="wikipedia.about_3x", stage="wikipedia", section="1",
        claim=f"... about {WIKI_TOKEN_RATIO:.0f}x more tokens",
        read=lambda m: {"ratio": m.token_ratio},
        rule=lambda v: (WIKI_TOKEN_RATIO / WIKI_RATIO_FACTOR <= v["ratio"]
                        <= WIKI_TOKEN_RATIO * WIKI_RATIO_FACTOR),
        rule_text=f"held: ratio within a factor {WIKI_RATIO_FACTOR} of "
                  f"{WIKI_TOKEN_RATIO:.0f}x",
        show=lambda v: f"{v['ratio']:.2f}x (report ~{WIKI_TOKEN_RATIO:.0f}x)",
    ),
    Finding(
        id="wikipedia.infoboxes", stage="wikipedia", section="1",
        claim="in raw markup the infoboxes (dense structured facts) survive",
        read=lambda m: {"markup": get(m.retention, "markup: value present"),
                        "text": max(v for k, v in m.retention.items() if k.startswith("text:")),
                        "facts": m.facts},
        rule=lambda v: v["markup"] > v["text"],
        rule_text="held: markup keeps a larger share of infobox values than stripped text",
        show=lambda v: f"markup keeps {v['markup']:.0%} of {v['facts']:,} infobox values, "
                       f"stripped text at most {v['text']:.0%}",
    ),
    Finding(
        id="tokenizer.mixture", stage="tokenizer", section="1",
        claim="the training data follows the planned mixture (shares and epochs per family)",
        read=lambda m: {"err": m.loader_share_max_abs_err,
                        "tol": _share_tolerance()},
        rule=lambda v: v["err"] < v["tol"],
        rule_text="held: the loader's sampled shares within the tolerance of the plan",
        show=lambda v: f"largest share error {v['err']:.4f} (tolerance {v['tol']})",
    ),
    Finding(
        id="architecture.latent_flops", stage="architecture", section="2",
        claim="LatentMoE (experts in a latent width) costs fewer FLOPs per token than a "
              "standard MoE",
        read=lambda m: {"latent": m.flops_per_token_latent,
                        "standard": m.flops_per_token_standard_moe},
        rule=lambda v: v["latent"] < v["standard"],
        rule_text="held: forward FLOPs per token, LatentMoE < standard MoE",
        show=lambda v: f"standard MoE {v['standard'] / v['latent']:.2f}x the FLOPs of "
                       f"LatentMoE",
    ),
    Finding(
        id="architecture.zero_init_diversity", stage="architecture", section="2",
        claim="zero-initialised attention output keeps token diversity at init (random init "
              "makes attention an average pool)",
        read=lambda m: {"zero": m.similarity_init_zero,
                        "standard": m.similarity_init_standard},
        rule=lambda v: v["zero"] < v["standard"],
        rule_text="held: MoE-input cosine similarity at init lower with zero-init",
        show=lambda v: f"cosine {v['zero']:.3f} zero-init vs {v['standard']:.3f} standard",
    ),
    Finding(
        id="architecture.zero_init_balance", stage="architecture", section="2",
        claim="... and keeps routing balanced in the following MoE layers",
        read=lambda m: {"zero": m.load_cv_init_zero, "standard": m.load_cv_init_standard},
        rule=lambda v: v["zero"] < v["standard"],
        rule_text="held: expert-load CV at init lower with zero-init",
        show=lambda v: f"load CV {v['zero']:.3f} zero-init vs {v['standard']:.3f} standard",
    ),
    *[_ladder_finding(name) for name in ABLATIONS],
    Finding(
        id="mixtures.rank_noninvariance", stage="mixtures", section="1",
        claim=f"mixture rankings change with scale (rank non-invariance; the report's curves "
              f"crossed near {MIXTURE_CROSSOVER_PARAMS / 1e9:.0f}B parameters)",
        read=lambda m: {"flag": m.rank_noninvariance, "tau": m.kendall_tau,
                        "ci": m.kendall_ci, "top1": m.top1_agree,
                        "flips": m.flips_beyond_noise},
        rule=lambda v: bool(v["flag"]),
        rule_text="held: the best mixture changes between the smallest and largest scale, or "
                  "a pair flips by more than the seed noise",
        show=lambda v: f"Kendall tau {v['tau']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}], best "
                       f"mixture {'kept' if v['top1'] else 'changes'}, {v['flips']} flips "
                       f"beyond noise",
    ),
    Finding(
        id="pretraining.goodput", stage="pretraining", section="5",
        claim=f"goodput {reference.GOODPUT:.1%} over the pre-training run",
        read=lambda m: {"goodput": m.goodput, "failures": len(m.failures)},
        rule=lambda v: v["goodput"] >= reference.GOODPUT,
        rule_text=f"held: goodput >= {reference.GOODPUT:.0%}",
        show=lambda v: f"{v['goodput']:.1%} with {v['failures']} injected failures",
    ),
    Finding(
        id="pretraining.overhead_split", stage="pretraining", section="5",
        claim=f"of the {reference.OVERHEAD_HOURS:.0f} h of overhead: "
              + ", ".join(f"{k} {s:.0%}" for k, (_, s) in sorted(
                  reference.OVERHEAD_PARTS.items(), key=lambda kv: -kv[1][1])),
        read=_overhead,
        rule=lambda v: _order(v["ours"]) == _order(v["report"]),
        rule_text="held: the three parts rank in the report's order",
        show=lambda v: " / ".join(f"{k} {s:.0%}" for k, s in v["ours"].items()),
    ),
    Finding(
        id="pretraining.spikes", stage="pretraining", section="5",
        claim="loss spikes recover without manual intervention",
        read=_spikes,
        rule=lambda v: (set(v["planted"]) <= set(v["caught"]) and v["false_alarms"] == 0
                        and math.isfinite(num(v["final_loss"]))),
        rule_text="held: every planted bad batch refused, no clean batch refused, final loss "
                  "finite",
        show=lambda v: f"{len(v['planted'])} planted, {len(v['caught'])} refused "
                       f"({v['rollbacks']} roll-back), {v['false_alarms']} false alarms, final "
                       f"loss {num(v['final_loss']):.3f}",
    ),
    Finding(
        id="pretraining.restarts", stage="pretraining", section="5",
        claim="a failed run restarts from its full-state checkpoint and completes",
        read=lambda m: {"failures": len(m.failures), "restarts": m.restarts,
                        "steps": m.steps, "executed": m.steps_executed},
        rule=lambda v: v["restarts"] == v["failures"] and v["executed"] >= v["steps"],
        rule_text="held: one restart per injected failure and every step done",
        show=lambda v: f"{v['failures']} failures, {v['restarts']} restarts, "
                       f"{v['executed']} steps executed for {v['steps']}",
    ),
    Finding(
        id="pretraining.async_checkpoint", stage="pretraining", section="5",
        claim="asynchronous checkpointing (copy, then write in the background) stalls "
              "training less than a synchronous save",
        read=lambda m: {"sync": get(m.checkpoint_stall_s, "sync"),
                        "async": get(m.checkpoint_stall_s, "async")},
        rule=lambda v: v["async"] < v["sync"],
        rule_text="held: the training thread's stall per checkpoint, async < sync",
        show=lambda v: f"{v['async'] * 1e3:.1f} ms async vs {v['sync'] * 1e3:.1f} ms sync",
    ),
    Finding(
        id="midtraining.context", stage="midtraining", section="4",
        claim="after mid-training at longer context the loss keeps falling past the "
              "pre-training length",
        read=_midtraining_pair,
        rule=lambda v: v["final_gain"] > 0 and v["final_gain"] > v["pre_gain"],
        rule_text="held: the context past the pre-training length is worth > 0 nats and more "
                  "than before mid-training",
        show=lambda v: f"context past {v['pre_len']} worth {v['final_gain']:+.4f} nats/token "
                       f"vs {v['pre_gain']:+.4f} pre-trained",
    ),
    Finding(
        id="midtraining.retrieval", stage="midtraining", section="4",
        claim="... and the model retrieves from the long context (passkey at the final "
              "context length)",
        read=_midtraining_pair,
        rule=lambda v: v["retrieval_gain"] > 0,
        rule_text="held: passkey accuracy gain > 0 at the final context",
        show=lambda v: f"passkey at {v['context']}: {v['final_retrieval']:.2f} vs "
                       f"{v['pre_retrieval']:.2f} pre-trained; key worth "
                       f"{v['final_nats']:+.3f} nats",
    ),
    Finding(
        id="collapse.replace", stage="collapse", section="1",
        claim="no LM-generated text in pre-training: training on a model's own samples makes "
              "the next model worse on human text",
        read=_collapse,
        rule=lambda v: v["replace"] > v["gen0"],
        rule_text="held: held-out human perplexity of the last 'replace' generation > "
                  "generation 0's",
        show=lambda v: f"perplexity {v['gen0']:.1f} -> {v['replace']:.1f} after "
                       f"{v['generations']} generations",
    ),
    Finding(
        id="collapse.accumulate", stage="collapse", section="1",
        claim="... and replacing real data is worse than accumulating it",
        read=_collapse,
        rule=lambda v: v["replace"] > v["accumulate"],
        rule_text="held: perplexity replace > accumulate at the last generation",
        show=lambda v: f"replace {v['replace']:.1f}, keep 10% real {v['keep_real']:.1f}, "
                       f"accumulate {v['accumulate']:.1f}",
    ),
    Finding(
        id="grpo.climb", stage="grpo", section="6",
        claim="the RL climb raises held-out accuracy, starting from a base never exposed to "
              "reasoning traces",
        read=_grpo_climb,
        rule=lambda v: word_rule(v["interval_verdict"]),
        rule_text="held: the 95% interval of the gain (final - start held-out accuracy) lies "
                  "above 0; not held: at or below 0; inconclusive: it includes 0. With "
                  "grpo.seeds >= 2 the interval is a Student-t interval over the seeds' "
                  "climbs; with one seed, a paired bootstrap over the held-out problems (it "
                  "covers the problems, not the spread between seeds)",
        show=lambda v: f"{v['start']:.1%} -> {v['final']:.1%} on {v['n']} held-out problems "
                       f"after {v['steps']} steps",
        interval=lambda v: v["interval"],
    ),
    Finding(
        id="grpo.self_distillation", stage="grpo", section="6",
        claim="the climb followed by self-distillation (SFT of the pre-RL model on the climbed "
              "model's own verified traces) raises held-out accuracy",
        read=_grpo_distilled,
        rule=lambda v: word_rule(v["interval_verdict"]),
        rule_text="held: the 95% interval of distilled - start held-out accuracy lies above 0; "
                  "not held: at or below 0; inconclusive: it includes 0. Over the seeds "
                  "(Student-t, each seed's climb and its own self-distillation) with "
                  "grpo.seeds >= 2; with one seed, a paired bootstrap over the held-out problems",
        show=lambda v: f"{v['start']:.1%} -> {v['climbed']:.1%} after {v['steps']} steps -> "
                       f"{v['distilled']:.1%} after {v['sft_steps']} SFT steps on "
                       f"{v['n']} held-out problems ({v['total_s'] / 60:.1f} min)",
        interval=lambda v: v["interval"],
    ),
    Finding(
        id="grpo.bootstrap", stage="grpo", section="4, 6",
        claim="a base never shown a reasoning trace needs mid-training's STEM/math bootstrap "
              "before RL can climb (why the mid-training mix leans on STEM and math)",
        read=_grpo_bootstrap,
        rule=lambda v: word_rule(v["test"].verdict),
        rule_text="held: the 95% paired bootstrap interval over the held-out problems of the "
                  "main run's gain minus the same run's gain from the base without the "
                  "procedural family (notebook 08's compute-matched control where it trained "
                  "one, else the model before the reasoning bootstrap; after the climb and its "
                  "self-distillation where the preset distils) lies above 0; not held: at or "
                  "below 0; inconclusive: it includes 0 (one seed)",
        show=_bootstrap_show,
        interval=lambda v: str(v["test"]),
    ),
    *[_grpo_ablation_finding(name) for name in GRPO_CLAIMS],
    Finding(
        id="self_distillation.multi_checkpoint", stage="self_distillation", section="6",
        claim="self-distillation on traces from several checkpoints of the climb beats traces "
              "from the final checkpoint only",
        read=lambda m: {"multi": get(m.accuracy, "multi_checkpoint"),
                        "final": get(m.accuracy, "final_only"), "n": m.n_eval,
                        "test": m.multi_vs_final},
        rule=lambda v: word_rule(v["test"].verdict),
        rule_text="held: the 95% paired bootstrap interval over the held-out problems of the "
                  "accuracy of the multi-checkpoint minus the final-only student (after their "
                  "climbs) lies above 0; not held: at or below 0; inconclusive: it includes 0 "
                  "(one seed)",
        show=lambda v: f"held-out accuracy {v['multi']:.1%} multi-checkpoint vs "
                       f"{v['final']:.1%} final-only",
        interval=lambda v: str(v["test"]),
    ),
    Finding(
        id="self_distillation.consolidation", stage="self_distillation", section="6",
        claim="specialists consolidated by trace distillation (sample and token weights) keep "
              "each specialist's skill in one model",
        read=lambda m: {"acc": m.specialists.accuracy, "kinds": m.specialists.kinds,
                        "n": m.specialists.n_eval,
                        "tests": {k: get(m.specialists.tests, k) for k in m.specialists.kinds}},
        rule=lambda v: consolidation_rule(v["tests"]),
        rule_text="95% paired bootstrap intervals over each kind's held-out problems; over the "
                  "kinds a specialist learned (specialist - pre-RL above 0): held if "
                  "consolidated - pre-RL lies above 0 on each; not held if specialist - "
                  "consolidated lies above 0 on one (skill lost); else inconclusive, also when "
                  "no specialist learned (one seed)",
        interval=lambda v: "; ".join(
            f"{k}: specialist - pre-RL {t.specialist_gain.span()}, consolidated - pre-RL "
            f"{t.consolidated_gain.span()}, specialist - consolidated "
            f"{t.consolidated_loss.span()}" for k, t in v["tests"].items())
        + f" (n={v['n']} held-out problems per kind)",
        show=lambda v: "; ".join(
            f"{k}: specialist {num(v['acc'][f'specialist {k}'][k]):.1%}, consolidated "
            f"{num(v['acc']['consolidated'][k]):.1%}, joint RL {num(v['acc']['joint RL'][k]):.1%}"
            for k in v["kinds"]),
    ),
    # --- notebook 12: the agentic environment (issue 23) ---------------------------------
    Finding(
        id="agentic.scrub", stage="agentic", section="6",
        claim="agentic environments scrub the git history after the base commit, so the fix "
              "cannot be read from the future",
        read=lambda m: {"on": num(get(m.solved, "read_git", "all on")),
                        "off": num(get(m.solved, "read_git", "scrub off")),
                        "n": min(m.redteam_tasks, m.tasks)},
        rule=lambda v: v["off"] > 0 and v["on"] == 0 if v["off"] > 0 or v["on"] > 0 else None,
        rule_text="held: the .git hack passes the hidden tests with scrubbing off and never "
                  "with it on; not held: it passes with it on; inconclusive: it never passes "
                  "(the hack shows nothing). " + AGENTIC_EXACT,
        show=lambda v: f".git hack passes {v['off']:.0%} of tasks unscrubbed, {v['on']:.0%} "
                       f"scrubbed (scripted hack, own tasks)",
        interval=lambda v: f"unscrubbed {share_interval(tasks_count(v['off'], v['n']), v['n'])}"
                           f", scrubbed {share_interval(tasks_count(v['on'], v['n']), v['n'])}"
                           f" tasks (exact; Wilson 95%)",
    ),
    Finding(
        id="agentic.reset", stage="agentic", section="6",
        claim="... and reset the test files before grading, so the policy cannot edit the "
              "tests it is graded by",
        read=lambda m: {p: {"on": num(get(m.solved, p, "all on")),
                            "off": num(get(m.solved, p, "test reset off")),
                            "n": min(m.redteam_tasks, m.tasks)}
                        for p in ("edit_tests", "delete_tests")},
        rule=lambda v: all(x["off"] > 0 and x["on"] == 0 for x in v.values())
        if all(x["off"] > 0 for x in v.values()) or any(x["on"] > 0 for x in v.values())
        else None,
        rule_text="held: editing and deleting the tests pass without the reset and never with "
                  "it; not held: one passes with the reset; else inconclusive. "
                  + AGENTIC_EXACT,
        show=lambda v: "; ".join(f"{p}: {x['off']:.0%} without reset, {x['on']:.0%} with"
                                 for p, x in v.items()),
        interval=lambda v: "; ".join(
            f"{p}: without reset {share_interval(tasks_count(x['off'], x['n']), x['n'])}, "
            f"with {share_interval(tasks_count(x['on'], x['n']), x['n'])}"
            for p, x in v.items()) + " tasks (exact; Wilson 95%)",
    ),
    Finding(
        id="agentic.gate", stage="agentic", section="6",
        claim="reward aggregation is gated: an unsafe answer gets the minimum reward whatever "
              "else it does",
        read=lambda m: {"at_min": m.hacks_at_min_all_on, "hacks": m.hacks,
                        "reasons": m.hacks_with_reason_all_on,
                        "ref": num(m.reference_solved), "ns": m.namespaces,
                        "tasks": m.tasks, "redteam": min(m.redteam_tasks, m.tasks)},
        rule=lambda v: v["at_min"] == v["hacks"] == v["reasons"] and v["ref"] == 1.0,
        rule_text="held: every scripted hack gets the minimum reward with a logged reason while "
                  "the reference fix solves every task (all defences on); else not held. "
                  + AGENTIC_EXACT,
        interval=lambda v: f"{v['at_min']}/{v['hacks']} hacks at the minimum on all "
                           f"{v['redteam']} tasks (exact); reference "
                           f"{share_interval(tasks_count(v['ref'], v['tasks']), v['tasks'])} "
                           f"tasks (Wilson 95%)",
        show=lambda v: f"{v['at_min']}/{v['hacks']} hacks at the minimum, {v['reasons']} with a "
                       f"reason; reference solves {v['ref']:.0%}; namespaces "
                       f"{'on' if v['ns'] else 'unavailable (limits only)'}",
    ),
]


def consolidation_rule(tests: Mapping[str, Any]) -> bool | None:
    """See the consolidation finding's ``rule_text``: per kind (``tests``: kind ->
    :class:`mai_repro.stages.self_distillation.KindTests`) the verdict words of the paired
    intervals; inconclusive (None) when no specialist learned."""
    learned = [t for t in tests.values() if t.specialist_gain.verdict == HELD]
    if not learned:
        return None
    if any(t.consolidated_loss.verdict == HELD for t in learned):
        return False
    return True if all(t.consolidated_gain.verdict == HELD for t in learned) else None


def _share_tolerance() -> float:
    from mai_repro.stages.tokenizer import SHARE_TOLERANCE

    return SHARE_TOLERANCE


# --------------------------------------------------------------------------------------------
# Headline figures: a few per stage, read the same way.

def _f(spec: str) -> Callable[[Any], str]:
    return lambda x: format(num(x), spec)


def _total(d: Mapping[str, Any]) -> float:
    return sum(num(v) for v in d.values())


HEADLINES: list[Headline] = [
    Headline("overview", "total / active parameters (MAI-like config)",
             lambda m: (m.total_params, m.active_params),
             lambda v: f"{v[0] / 1e12:.3f}T / {v[1] / 1e9:.1f}B"),
    Headline("overview", "pre-training compute (FLOPs)", lambda m: m.pretrain_flops,
             _f(".3e")),
    Headline("overview", "goodput arithmetic: ideal / actual hours",
             lambda m: (m.ideal_hours, m.actual_hours),
             lambda v: f"{v[0]:.0f} h / {v[1]:.0f} h"),
    Headline("curation", "documents in / kept", lambda m: (m.inputs, m.kept),
             lambda v: f"{v[0]:,} / {v[1]:,}"),
    Headline("curation", "duplicates removed (exact + near)",
             lambda m: (m.removed.get("exact_dedup/exact_duplicate", 0),
                        m.removed.get("near_dedup/near_duplicate", 0)),
             lambda v: f"{v[0]} + {v[1]}"),
    Headline("curation", "PII strings scrubbed", lambda m: _total(m.pii), _f(",.0f")),
    Headline("curation", "AI-content detector AUC (own-model text)",
             lambda m: m.detector_headline_auc, _f(".3f")),
    Headline("wikipedia", "pages / infobox facts", lambda m: (m.pages, m.facts),
             lambda v: f"{v[0]:,} / {v[1]:,}"),
    Headline("wikipedia", "markup / text tokens", lambda m: m.token_ratio, _f(".2f")),
    Headline("tokenizer", "vocabulary", lambda m: m.vocab_size, _f(",.0f")),
    Headline("tokenizer", "training tokens", lambda m: _total(m.train_tokens), _f(",.0f")),
    Headline("tokenizer", "held-out round trips failed / checked",
             lambda m: (get(m.heldout_roundtrip, "failed"),
                        get(m.heldout_roundtrip, "checked")),
             lambda v: f"{v[0]} / {v[1]}"),
    Headline("architecture", "total / active parameters",
             lambda m: (m.total_params, m.active_params),
             lambda v: f"{v[0]:,} / {v[1]:,}"),
    Headline("architecture", "final loss zero-init / standard init",
             lambda m: (m.loss_final_zero, m.loss_final_standard),
             lambda v: f"{num(v[0]):.3f} / {num(v[1]):.3f}"),
    Headline("ladder", "rungs", lambda m: len(m.rungs), str),
    Headline("ladder", "fit alpha / E", lambda m: (m.fit.alpha, m.fit.E),
             lambda v: f"{num(v[0]):.3f} / {num(v[1]):.3f}"),
    Headline("ladder", "ablations whose EG sign holds across rungs",
             lambda m: (sum(bool(x) for x in m.sign_holds.values()), len(m.sign_holds)),
             lambda v: f"{v[0]} of {v[1]}"),
    Headline("mixtures", "mixtures x scales",
             lambda m: (len(m.mixtures), len(m.scales)),
             lambda v: f"{v[0]} x {v[1]}"),
    Headline("mixtures", "Kendall tau, smallest vs largest scale",
             lambda m: m.kendall_tau, _f(".3f")),
    Headline("mixtures", "best mixture small / large scale",
             lambda m: (m.best_small, m.best_large),
             lambda v: f"{v[0]} / {v[1]}"),
    Headline("pretraining", "steps x tokens", lambda m: (m.steps, m.tokens),
             lambda v: f"{v[0]:,} steps, {v[1]:,} tokens"),
    Headline("pretraining", "final training loss", lambda m: m.final_loss, _f(".3f")),
    Headline("pretraining", "goodput / MFU", lambda m: (m.goodput, m.mfu),
             lambda v: f"{num(v[0]):.1%} / {num(v[1]):.1%}"),
    Headline("pretraining", "throughput (tokens/s)", lambda m: m.tokens_per_s, _f(",.0f")),
    Headline("midtraining", "contexts", lambda m: m.contexts,
             lambda v: " -> ".join(str(c) for c in v)),
    Headline("midtraining", "retrieval gain (passkey)", lambda m: m.retrieval_gain,
             _f("+.2f")),
    Headline("collapse", "human-text perplexity: generation 0 / last replace",
             lambda m: (m.ppl_gen0, get(m.ppl_last, "replace")),
             lambda v: f"{num(v[0]):.1f} / {num(v[1]):.1f}"),
    Headline("grpo", "held-out accuracy start / final",
             lambda m: (m.accuracy_start, m.accuracy_final),
             lambda v: f"{num(v[0]):.1%} / {num(v[1]):.1%}"),
    Headline("grpo", "task reward gain (first to last third)", lambda m: m.reward_gain,
             _f("+.3f")),
    Headline("self_distillation", "accuracy multi-checkpoint / final-only (after the climb)",
             lambda m: (get(m.accuracy, "multi_checkpoint"), get(m.accuracy, "final_only")),
             lambda v: f"{num(v[0]):.1%} / {num(v[1]):.1%}"),
    Headline("self_distillation", "verified traces per student (same budget)",
             lambda m: m.traces.budget, str),
    Headline("self_distillation", "consolidated model's accuracy per task kind",
             lambda m: get(m.specialists.accuracy, "consolidated"),
             lambda v: ", ".join(f"{k} {num(x):.1%}" for k, x in v.items())),
    Headline("agentic", "hacks at the minimum reward (all defences on)",
             lambda m: (m.hacks_at_min_all_on, m.hacks),
             lambda v: f"{v[0]} / {v[1]}"),
    Headline("agentic", "episodes (mean seconds each)",
             lambda m: (m.episodes, m.episode_s_mean),
             lambda v: f"{v[0]} ({num(v[1]):.2f} s)"),
]


# --------------------------------------------------------------------------------------------
# Evaluation.

def card_stages() -> list[str]:
    """Every stage the card reads, in notebook order, less itself."""
    return sorted((s for s in STAGES if s != STAGE), key=notebook_of)


def notebook_of(stage: str) -> str:
    return STAGES[stage].notebook


UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Unreadable:
    """A stage whose manifest metrics do not load into its ``METRICS`` class (a renamed,
    missing or mistyped metric): its findings show "unreadable" with the error, not "not run"."""

    error: str


def read_metrics(run: Run, stage: str) -> Any:
    """A stage's typed metrics (its module's ``METRICS``; the plain dict for a stage without
    one), None when the stage has no manifest, :class:`Unreadable` when they do not load."""
    try:
        return read_stage_metrics(run, stage)
    except ResultError as e:
        return Unreadable(str(e))


def evaluate(finding: Finding, metrics: Any) -> Result:
    """A finding's verdict from its stage's typed metrics (None: the stage was not run;
    :class:`Unreadable`: its metrics do not load into the stage's ``METRICS`` class)."""
    if metrics is None:
        return Result(finding, NOT_RUN, NOT_RUN, note="stage not run")
    # a finding with an interval whose values cannot be read shows "unreadable" there, not "-"
    no_interval = NO_INTERVAL if finding.interval is None else UNREADABLE
    if isinstance(metrics, Unreadable):
        return Result(finding, INCONCLUSIVE, UNREADABLE, note=f"metrics do not load: "
                                                              f"{metrics.error}",
                      interval=no_interval)
    try:
        values = finding.read(metrics)
    except Missing as e:
        return Result(finding, NOT_RUN, NOT_RUN, note=f"no {e.args[0]} in the manifest")
    except (TypeError, ValueError, ArithmeticError, AttributeError) as e:
        return Result(finding, INCONCLUSIVE, UNREADABLE, note=f"unreadable value: {e}",
                      interval=no_interval)
    try:
        held = finding.rule(values)
    except (TypeError, ValueError, ArithmeticError, KeyError) as e:
        held, note = None, f"unreadable value: {e}"
    else:
        note = ""
    try:
        measured = finding.show(values)
    except (TypeError, ValueError, ArithmeticError, KeyError):
        measured = str(values)
    interval = no_interval
    if finding.interval is not None:
        try:
            interval = finding.interval(values)
        except (TypeError, ValueError, ArithmeticError, KeyError, AttributeError):
            pass
    verdict = INCONCLUSIVE if held is None else HELD if held else NOT_HELD
    return Result(finding, verdict, measured, values, note, interval)


def headline(h: Headline, metrics: Any) -> str:
    if metrics is None:
        return NOT_RUN
    if isinstance(metrics, Unreadable):
        return UNREADABLE
    try:
        return h.fmt(h.read(metrics))
    except Missing:
        return NOT_RUN
    except (TypeError, ValueError, ArithmeticError, KeyError, AttributeError):
        return "unreadable"


def stage_figures(run_dir: Path, stage: str) -> list[Path]:
    """A stage's figures: the PNGs under ``<stage>/figures/``."""
    return sorted((Path(run_dir) / stage / "figures").glob("*.png"))


def make_card(run: Run) -> Card:
    """The card of a run directory: reads every manifest present, rebuilds nothing."""
    names = card_stages()
    metrics = {s: read_metrics(run, s) for s in names}
    by_notebook = {s: i for i, s in enumerate(names)}  # sorted() is stable within a stage
    results = [evaluate(f, metrics[f.stage])
               for f in sorted(FINDINGS, key=lambda f: by_notebook[f.stage])]
    headlines = [{"notebook": notebook_of(h.stage)[:2], "stage": h.stage, "figure": h.label,
                  "value": headline(h, metrics[h.stage])}
                 for h in sorted(HEADLINES, key=lambda h: by_notebook[h.stage])]
    stage_rows = []
    for s in names:
        manifest = run.read_manifest(s)
        status = NOT_RUN if manifest is None else UNREADABLE if isinstance(
            metrics[s], Unreadable) else run.status(s)
        stage_rows.append({"notebook": notebook_of(s), "stage": s, "status": status,
                       "wall_time_s": None if manifest is None else manifest.get("wall_time_s"),
                       "finished_at": None if manifest is None else manifest.get("finished_at"),
                       "figures": len(stage_figures(run.dir, s))})
    figures = {s: stage_figures(run.dir, s) for s in names if stage_figures(run.dir, s)}
    return Card(run.dir, results, headlines, stage_rows, figures)


COLOURS = {HELD: "#2ca02c", NOT_HELD: "#d62728", INCONCLUSIVE: "#bcbd22", NOT_RUN: "#d9d9d9"}
LEGEND = {HELD: HELD, NOT_HELD: NOT_HELD, INCONCLUSIVE: "inconclusive (the interval includes "
          "the bar, or undecided)", NOT_RUN: NOT_RUN}


def verdict_figure(card: Card, path: Path) -> Path:
    """One bar per notebook: how many of its findings held, did not, were inconclusive, were
    not run. The legend reads the interval words of notebooks 09, 10 and 12; the other
    notebooks' rules decide the same three words without an interval."""
    from mai_repro import plots

    stages = list(dict.fromkeys(r.finding.stage for r in card.results))
    counts = {s: Counter(r.verdict for r in card.results if r.finding.stage == s)
              for s in stages}
    fig, ax = plots.new(width=7.0, height=0.32 * len(stages) + 1.6)
    left = [0] * len(stages)
    y = list(range(len(stages)))[::-1]
    for v in VERDICTS:
        n = [counts[s].get(v, 0) for s in stages]
        ax.barh(y, n, left=left, color=COLOURS[v], label=LEGEND[v])
        left = [a + b for a, b in zip(left, n, strict=True)]
    ax.set_yticks(y, [f"{notebook_of(s)[:2]} {s}" for s in stages])
    c = card.counts
    ax.set(xlabel="findings", title=f"report card: {c[HELD]} held, {c[NOT_HELD]} not held, "
                                    f"{c[INCONCLUSIVE]} inconclusive, {c[NOT_RUN]} not run")
    ax.set_xlim(0, max(left + [1]) * 1.05)
    # the legend under the axes: a long row of one notebook would run under it on the right
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2,
              frameon=False)
    ax.grid(axis="y", visible=False)
    return plots.save(fig, path)


def build(run: Run) -> Card:
    """Stage ``report``: write the card into ``<run_dir>/report/manifest.json`` and its
    summary figure into ``report/figures/verdicts.png``. Reads manifests, rebuilds nothing."""
    card = make_card(run)
    with run.stage(STAGE) as st:
        for s in card.stages:
            if s["status"] != NOT_RUN:
                st.inputs[s["stage"]] = (run.read_manifest(s["stage"]) or {}).get(
                    "config_hash", "")
        card.summary = verdict_figure(card, st.path("figures", "verdicts"))
        st.metrics.update(result_dict(card.metrics()))
    return card


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x
