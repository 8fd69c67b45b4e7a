"""Stage ``grpo`` (notebook 09): the main climb, its ablations with verdicts, figures."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mai_repro import plots, stats
from mai_repro.artifacts import Run, require
from mai_repro.config import GRPOStageConfig
from mai_repro.model.transformer import Transformer
from mai_repro.rl import tasks
from mai_repro.rl.climb import (
    Ablations,
    Branch,
    ClimbResult,
    PoolSelection,
    climb,
    evaluate,
    number_mass,
    replica,
    select_pool,
    task_sets,
)
from mai_repro.rl.distill import after_climb
from mai_repro.rl.evaluate import paired_accuracy
from mai_repro.rl.rollout import (
    sample_groups,
    stop_ids,
)
from mai_repro.schema import cpu_threads, resolve_device, result_dict
from mai_repro.train.checkpoint import load_model_file, save_model_file
from mai_repro.train.sweep import Background

STAGE = "grpo"
UPSTREAM = "midtraining"

# The report's claim for each stabiliser (section 6 of RECIPE.md), written once: the ablation
# that switches it off tests it (ablation_verdicts stores it with the verdict) and the report
# card states it (mai_repro.stages.report).
CLAIMS = {
    "outer_clip": "the outer ratio clip prevents the gradient-norm spikes of unclipped branches",
    "entropy_control": "adaptive entropy control (widened upper clip) keeps entropy near its "
                       "target H*",
    "top_p_mask": "top-p masking in the learner is needed: without it the policy diverges",
    "routing_replay": "MoE routing replay keeps the learner's log-probs equal to inference's",
}


@dataclass
class TaskSetup:
    kinds: list[str]
    train_difficulties: list[int]
    eval_difficulty: int
    n_train_pool: int
    n_eval: int  # held-out problems
    eval_samples: int  # samples per held-out problem


@dataclass
class PoolChoice:
    """The training pool chosen at the starting model's edge of competence
    (``grpo.pool_samples`` > 0): every candidate's pass rate, the window, what was kept."""

    candidates: int
    kept: int
    samples: int  # per candidate problem
    lo: float
    hi: float
    histogram: dict[str, int]  # "k/samples" -> problems with k of the samples right
    solved_any: float  # share of candidates solved at least once


@dataclass
class NumberMass:
    """Probability of a number token right after 'Answer:', on the held-out prompts."""

    start: float
    final: float


@dataclass
class Evaluation:
    step: int
    accuracy: float  # pass@1: the mean over problems of the share of samples right
    solved_any: float  # pass@k for k = grpo.eval_samples
    length: float
    correct: list[int]  # per held-out problem: samples right
    eval_s: float = 0.0  # seconds the evaluation took


@dataclass
class Gain:
    """The climb's held-out gain (final - start), with a paired bootstrap interval over the
    held-out problems (both evaluations share them and their random numbers) and the
    verdict against 0 (``mai_repro.stats.verdict``). One seed: the interval is over problems,
    not over seeds."""

    mean: float
    lo: float
    hi: float
    n: int  # held-out problems resampled
    verdict: str  # held / not held / inconclusive


@dataclass
class SeedGain:
    """One seed's climb (``grpo.seeds``; the first is the main climb): held-out accuracy and
    pass@k at its start and end, on the same held-out problems."""

    seed: int
    steps: int
    accuracy_start: float
    accuracy_final: float
    solved_any_start: float
    solved_any_final: float
    # this seed's pass@1 and pass@k after the self-distillation that follows its climb
    # (grpo.distill_steps > 0; None without)
    accuracy_distilled: float | None = None
    solved_any_distilled: float | None = None


@dataclass
class BaseComparison:
    """Issue 22's with and without the procedural family (``grpo.compare_base``): the main
    climb's settings and seed from a mid-trained model never shown a worked solution,
    evaluated at its start and end on the same held-out problems with the same random numbers.
    That base is notebook 08's compute-matched control where it trained one
    (``midtrain.bootstrap_control``: the bootstrap's steps on human STEM/math text), else the
    model before the reasoning bootstrap (the bases then differ by the bootstrap's steps as
    well as by the family: the compute is not matched)."""

    steps: int  # optimizer steps taken (fewer when it stopped early)
    collapsed_at: int | None  # grpo.max_empty_draws batches in a row kept no group
    rollouts: int
    evals: list[Evaluation]  # at its start and end
    gain: Gain  # its own final - start, paired over the held-out problems
    # the main climb's gain minus this one's, per held-out problem, paired bootstrap: a
    # mai_repro.stats.Decision as a dict
    difference: dict[str, Any]
    # with grpo.distill_steps > 0, the recipe as the main climb ran it: the same
    # self-distillation after this climb (its verified answers, the same steps), the student
    # evaluated the same way; None without
    traces_distilled: int | None = None
    accuracy_distilled: float | None = None
    solved_any_distilled: float | None = None
    gain_distilled: Gain | None = None  # distilled - start, paired over the problems
    # the main climb's distilled gain minus this one's, paired bootstrap (a Decision as a dict)
    difference_distilled: dict[str, Any] | None = None
    # the base it climbed from: a key of BASES
    base: str = "before_bootstrap"

    @property
    def base_label(self) -> str:
        return BASES[self.base][1]


# grpo.compare_base's base without the procedural family: notebook 08's file, its name in
# tests and on the card, and its short name in the climb figure's legend
BASES = {"before_bootstrap": ("model_before_bootstrap.pt",
                              "the model before the bootstrap (compute not matched)",
                              "the model before the bootstrap"),
         "control": ("model_control.pt",
                     "the compute-matched control (the bootstrap's steps on human STEM/math "
                     "text)", "the control (no worked solutions)")}


@dataclass
class Checkpoint:
    step: int
    file: str  # relative to the stage folder


@dataclass
class GRPOMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. ``verdicts``
    stays a dict per ablation: its measured keys differ between ablations."""

    task: TaskSetup
    pool: PoolChoice | None  # None: the whole pool (grpo.pool_samples 0)
    steps: int
    accuracy_start: float  # held-out accuracy of the starting checkpoint
    accuracy_final: float
    accuracy_best: float
    accuracy_gain: float
    gain: Gain  # accuracy_gain with its interval over problems and verdict (one seed)
    seed_gains: list[SeedGain]  # the main climb and each other seed's (grpo.seeds)
    gain_over_seeds: dict[str, Any]  # the gain's mai_repro.stats.Decision over the seeds
    number_mass: NumberMass
    reward_first_third: float  # mean task reward of every rollout drawn, first third of steps
    reward_last_third: float
    reward_gain: float
    main_wall_s: float
    ablation_wall_s: dict[str, float]
    empty_batches: int
    collapsed_at: int | None  # the main climb stopped here: grpo.max_empty_draws empty batches
    dropped_stale: int
    rollouts: int
    evals: list[Evaluation]  # of the main climb
    verdicts: dict[str, dict[str, Any]]  # ablation -> measure, with, without, verdict,
    # tests (each a mai_repro.stats.Decision as a dict), rule, accuracy_test, ...
    checkpoints: list[Checkpoint]  # the policy along the climb; the last is model.pt
    distilled: Distilled | None = None  # None: grpo.distill_steps 0
    # the distilled gain (distilled - start) over the seeds, as gain_over_seeds; None without
    distilled_over_seeds: dict[str, Any] | None = None
    without_procedural: BaseComparison | None = None  # None: grpo.compare_base false


METRICS = GRPOMetrics


@dataclass
class Distilled:
    """The report's self-distillation after the main climb (``grpo.distill_steps``,
    :func:`mai_repro.rl.distill.after_climb`), evaluated on the same held-out problems."""

    student: str  # the model fine-tuned: "start" (the pre-RL model, as the report) or "climbed"
    steps: int
    lr: float
    temperature: float  # of the traces
    problems: int  # training problems the climbed model answered
    traces: int  # verified answers kept
    loss_first: float | None
    loss_last: float | None
    accuracy: float  # held-out pass@1 of the distilled model
    solved_any: float  # held-out pass@k
    correct: list[int]  # per held-out problem: samples right
    gain: Gain  # distilled - start, paired over the held-out problems
    gain_over_climbed: Gain  # distilled - climbed (final), paired
    climb_s: float  # the main climb's seconds, its held-out evaluations left out
    collect_s: float  # sampling the traces
    sft_s: float  # fine-tuning
    total_s: float  # climb_s + collect_s + sft_s: the minutes of climbing issue 22 counts


@dataclass
class GRPOResult:
    main: ClimbResult
    ablations: dict[str, ClimbResult]
    figures: dict[str, Any]
    metrics: GRPOMetrics
    samples: list[dict[str, Any]]


def mean_over(history: list[dict], key: str, first: int | None = None,
              last: int | None = None) -> float:
    rows = history[:first] if first else history[-last:] if last else history
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


EPS = 1e-12  # floor of a gradient norm, ratio or mismatch before its log (an exact 0)

# How each ablation's verdict is decided (ablation_verdicts; the report card states it, and
# docs/rl.md): every test is a 95% paired bootstrap over the steps both runs took (the same
# step index, the same seeds), held against its bar by mai_repro.stats.verdict; a rule with two
# tests is held when both are, not held when one is not, else inconclusive.
RULES = {
    "outer_clip": "paired bootstrap over the steps of log(gradient norm without / with the "
                  "outer clip): held when the interval lies above x1 (larger without it at the "
                  "same steps), not held at or below x1, else inconclusive",
    "entropy_control": "paired bootstrap over the last quarter of the steps of entropy with - "
                       "without control: held when the interval lies above a tenth of the main "
                       "run's distance from H* (lower without it by more than a tie), not held "
                       "at or below that bar, else inconclusive",
    "top_p_mask": "paired bootstrap over the steps of |log r| without - 2 |log r| with masking "
                  "(r the mean ratio pi_theta / pi_old of a step) and, without masking, of "
                  "|log r| - |log(r / kept nucleus mass)|: held when both intervals lie above "
                  "0 (the ratio is more than 2x further from 1 and nearer the kept mass than "
                  "1), not held when one lies at or below 0, else inconclusive",
    "routing_replay": "paired bootstrap over the steps with a mismatch measured of log(largest "
                      "batch mismatch without / with replay) against x1.5, and of the "
                      "mismatch without replay against 1e-3 nats: held when both intervals lie "
                      "above their bars, not held when one lies at or below, else inconclusive",
}


def _paired(a: list[dict], b: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``key`` of the rows of ``a`` and ``b`` at the same index (the same step), where both
    recorded a finite value."""
    xa, xb = [], []
    for ra, rb in zip(a, b, strict=False):
        va, vb = ra.get(key), rb.get(key)
        if va is not None and vb is not None and math.isfinite(va) and math.isfinite(vb):
            xa.append(float(va))
            xb.append(float(vb))
    return np.asarray(xa), np.asarray(xb)


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, EPS))


def ablation_verdicts(main: ClimbResult, ablations: dict[str, ClimbResult], c: GRPOStageConfig,
                      *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per ablation: what was measured against the same steps of the main run, the tests that
    decide the verdict (``RULES``; ``tests``: :class:`mai_repro.stats.Decision` as dicts) and
    the verdict (held / not held / inconclusive). ``accuracy_test``: held-out accuracy without
    minus with, paired over the held-out problems, when the main run was evaluated at the
    ablation's last step (shown beside the verdict, not part of it)."""
    out: dict[str, dict[str, Any]] = {}
    for name, ab in ablations.items():
        n = len(ab.history)
        first = ab.history[0].get("step", 1) - 1 if ab.history else 0  # ablation_from
        base = main.history[first:first + n]
        m = min(n, len(base))  # the steps both runs took
        kw = {"items": "steps", "seed": seed}
        if name == "outer_clip":  # without it the gradient norm spikes
            b = max((r["grad_norm"] for r in base), default=math.nan)
            a = max((r["grad_norm"] for r in ab.history), default=math.nan)
            xa, xb = _paired(ab.history, base, "grad_norm")
            tests = [stats.decide(_log(xa), _log(xb), scale="log",
                                  test="log(gradient norm without / with the outer clip)",
                                  **kw)]
            out[name] = {"measure": "largest gradient norm", "with": b, "without": a}
        elif name == "entropy_control":  # without it entropy falls further below H*
            q = max(1, n // 4)
            b, a = mean_over(base, "entropy", last=q), mean_over(ab.history, "entropy", last=q)
            xb, xa = _paired(base[max(0, m - q):m], ab.history[max(0, m - q):m], "entropy")
            # a difference under a tenth of the main run's distance from H* is a tie
            bar = 0.1 * abs(float(np.mean(xb)) - c.entropy_target) if xb.size else 0.0
            tests = [stats.decide(xb, xa, bar=bar, test=f"entropy with - without control, "
                                  f"last {q} steps (nats)", **kw)]
            out[name] = {"measure": f"mean entropy of the last {q} steps (H* = "
                                    f"{c.entropy_target})", "with": b, "without": a}
        elif name == "top_p_mask":  # without it the ratio is biased below 1 by the mass
            # outside the nucleus
            b, a = mean_over(base, "ratio_mean"), mean_over(ab.history, "ratio_mean")
            mass = mean_over(ab.history, "nucleus_mass")
            xa, xb = _paired(ab.history, base, "ratio_mean")
            both = [(r["ratio_mean"], r["nucleus_mass"]) for r in ab.history
                    if r.get("ratio_mean") is not None and r.get("nucleus_mass") is not None]
            ra = np.asarray([x[0] for x in both], dtype=float)
            km = np.asarray([x[1] for x in both], dtype=float)
            tests = [stats.decide(np.abs(_log(xa)), 2 * np.abs(_log(xb)),
                                  test="|log r| without - 2 |log r| with masking", **kw),
                     stats.decide(np.abs(_log(ra)), np.abs(_log(ra) - _log(km)),
                                  test="|log r| - |log(r / kept mass)| without masking", **kw)]
            out[name] = {"measure": "mean ratio pi_theta / pi_old", "with": b, "without": a,
                         "nucleus_mass": mass}
        elif name == "routing_replay":  # without it the learner's log-probs drift from the
            # inference ones
            b, a = mean_over(base, "mismatch_max"), mean_over(ab.history, "mismatch_max")
            xa, xb = _paired(ab.history, base, "mismatch_max")
            tests = [stats.decide(_log(xa), _log(xb), bar=math.log(1.5), scale="log",
                                  test="log(largest batch mismatch without / with replay)",
                                  **kw),
                     stats.decide(xa, np.zeros_like(xa), bar=1e-3,
                                  test="largest batch mismatch without replay (nats)", **kw)]
            out[name] = {"measure": "largest train/inference |log-prob diff| of a batch "
                                    "(mean over batches)", "with": b, "without": a,
                         "mean_with": mean_over(base, "mismatch"),
                         "mean_without": mean_over(ab.history, "mismatch")}
        else:
            raise ValueError(f"no verdict rule for ablation {name!r}")
        out[name]["acting"] = _acting(name, base[:m], c)
        out[name]["verdict"] = stats.all_of([t.verdict for t in tests])
        out[name]["tests"] = [dataclasses.asdict(t) for t in tests]
        out[name]["rule"] = RULES[name]
        out[name]["claim"] = CLAIMS[name]
        out[name]["steps"] = n
        out[name]["from_step"] = first
        out[name]["accuracy_with"] = _acc_at(main, first + n)
        out[name]["accuracy_without"] = ab.evals[-1]["accuracy"] if ab.evals else None
        acc = _accuracy_test(main, ab, c.eval_samples, seed)
        out[name]["accuracy_test"] = None if acc is None else dataclasses.asdict(acc)
    return out


def _acting(name: str, rows: list[dict], c: GRPOStageConfig) -> dict[str, Any] | None:
    """How much the stabiliser that an ablation removes acted in the main run over the same
    steps: an ablation of a stabiliser that never acted measures nothing. Outer clip: the
    steps where it removed gradient (``outer_bind``: a share of tokens above 0) and its
    largest share; entropy control: the steps with k > 0 and how far entropy fell below H*
    at most (nats). None for the others."""
    if name == "outer_clip":  # bound where it changes the gradient, not merely r outside
        # [r_min, r_max] (there the inner clip has mostly removed the gradient already)
        vals = [r["outer_bind"] for r in rows if r.get("outer_bind") is not None]
        return {"what": "outer clip removed gradient (share of tokens > 0)",
                "steps": len(vals), "steps_acting": sum(v > 0 for v in vals),
                "largest": max(vals, default=0.0)}
    if name == "entropy_control":
        ks = [r["k"] for r in rows if r.get("k") is not None]
        below = [c.entropy_target - r["entropy"] for r in rows if r.get("entropy") is not None]
        return {"what": "k > 0 (upper clip widened)", "steps": len(ks),
                "steps_acting": sum(k > 0 for k in ks), "largest": max(ks, default=0.0),
                "entropy_below_target_max": max(below, default=0.0)}
    return None


def _accuracy_test(main: ClimbResult, ab: ClimbResult, samples: int, seed: int
                   ) -> stats.Decision | None:
    """Held-out accuracy without minus with the stabiliser at the ablation's last evaluated
    step, paired over the held-out problems; None when the main run has no evaluation at that
    step or either lacks per-problem counts."""
    if not ab.evals:
        return None
    last = ab.evals[-1]
    with_ = next((e for e in main.evals if e["step"] == last["step"]), None)
    if with_ is None or "correct" not in with_ or "correct" not in last:
        return None
    return paired_accuracy(last["correct"], with_["correct"], samples, seed=seed,
                           test=f"held-out accuracy without - with, step {last['step']}")


def climb_gain(start: dict[str, Any], final: dict[str, Any], samples: int, seed: int) -> Gain:
    """Final minus start held-out accuracy, paired over the problems (see :class:`Gain`)."""
    d = paired_accuracy(final["correct"], start["correct"], samples, seed=seed,
                        test="held-out accuracy final - start")
    return Gain(d.mean, d.lo, d.hi, d.n, d.verdict)


def _acc_at(result: ClimbResult, step: int) -> float | None:
    rows = [e for e in result.evals if e["step"] <= step]
    return rows[-1]["accuracy"] if rows else None




def build(run: Run) -> GRPOResult:
    """Stage 09: the climb from the mid-trained checkpoint, then the ablations."""
    from tqdm.auto import tqdm

    from mai_repro.data.tokenizer import load as load_tokenizer

    cfg, c = run.cfg, run.cfg.grpo
    device = resolve_device(cfg.device)
    up = require(run, UPSTREAM)
    tok_stage = require(run, "tokenizer")
    with cpu_threads(c.threads), run.stage(STAGE) as st, \
            Background({}, c.ablation_workers) as bg:
        st.add_input("start_model", up.path("model.pt"))
        tok = load_tokenizer(tok_stage.path("tokenizer.json"))
        start = load_model_file(up.path("model.pt"), device)
        pool, held = task_sets(c, cfg.seed)
        choice = None
        if c.pool_samples > 0:  # keep the problems at the starting model's edge
            sel = select_pool(start, tok, pool, c, cfg.seed)
            choice = _pool_choice(sel)
            pool = sel.kept
        total = c.steps * (c.seeds + c.compare_base) + c.ablation_steps * len(c.ablations)
        bar = tqdm(total=total, desc="GRPO steps", leave=False)
        saved: list[dict[str, Any]] = []

        def keep(step: int, policy: Transformer) -> None:
            name = f"checkpoints/step_{step:06d}.pt"
            save_model_file(policy.cfg, policy.state_dict(), st.path(name))
            saved.append({"step": step, "file": name})

        # Other processes (grpo.ablation_workers) run the first of the other seeds' climbs
        # (grpo.seeds) from now, then the ablations, which start when the main climb reaches
        # grpo.ablation_from (they go on from its state there); the other seeds' remaining
        # climbs run here after the main climb. Without workers all of it runs here.
        seeds = [cfg.seed + i for i in range(1, c.seeds)]

        def other_seed(s_: int) -> None:
            bg.submit(f"seed {s_}", replica,
                      (start, tok, pool, held, c, s_, cfg.optim, cfg.distill))

        for s_ in seeds[:1] if bg.in_child else []:
            other_seed(s_)
        runs: list[Ablations] = []

        def branch(state: Branch) -> None:
            runs.append(Ablations(start, tok, pool, held, c, cfg.seed, cfg.optim, state, bg))

        if c.ablation_from == 0:
            runs.append(Ablations(start, tok, pool, held, c, cfg.seed, cfg.optim, None, bg))
        main = climb(start, tok, pool, held, c, steps=c.steps, seed=cfg.seed,
                     eval_every=c.eval_every, progress=bar.update, keep_model=True,
                     checkpoint_every=c.checkpoint_every, on_checkpoint=keep,
                     optim=cfg.optim, branch_at=c.ablation_from,
                     on_branch=branch if c.ablation_from > 0 else None)
        ablation_runs = runs[0]  # a climb that stopped early branched where it stopped
        save_model_file(main.model.cfg, main.model.state_dict(), st.path("model.pt"))
        saved.append({"step": len(main.history), "file": "model.pt"})
        samples = _samples(main.model, tok, held[:6], c, cfg.seed)
        mass = {"start": number_mass(start, tok, held), "final": number_mass(main.model, tok,
                                                                             held)}
        distilled = None
        if c.distill_steps > 0:  # the report's self-distillation, then the same evaluation
            student, info = after_climb(main.model, start, tok, pool, c, cfg.distill,
                                        seed=cfg.seed, optim=cfg.optim)
            save_model_file(student.cfg, student.state_dict(), st.path("distilled.pt"))
            distilled = _distilled(main, student, info, tok, held, c, cfg.seed)
        main.model = None
        without = None
        if c.compare_base:  # the same climb from the model never shown a worked solution
            without = _without_procedural(run, up, st, main, distilled, tok, pool, held, c,
                                          cfg, device, bar.update)
        others = {}
        for s_ in seeds:
            if f"seed {s_}" not in bg.calls:
                other_seed(s_)
            others[s_] = bg.result(f"seed {s_}")
            bar.update(c.steps)
        ablations = ablation_runs.results(progress=bar.update)
        bar.close()
        after = {cfg.seed: None if distilled is None else
                 {"accuracy": distilled.accuracy, "solved_any": distilled.solved_any},
                 **{k: r.distilled for k, r in others.items()}}
        gains = [SeedGain(seed=k, steps=len(r.history), accuracy_start=r.evals[0]["accuracy"],
                          accuracy_final=r.evals[-1]["accuracy"],
                          solved_any_start=r.evals[0]["solved_any"],
                          solved_any_final=r.evals[-1]["solved_any"],
                          accuracy_distilled=None if after[k] is None
                          else after[k]["accuracy"],
                          solved_any_distilled=None if after[k] is None
                          else after[k]["solved_any"])
                 for k, r in {cfg.seed: main, **others}.items()]
        over_seeds = stats.over_seeds(
            [g.accuracy_final - g.accuracy_start for g in gains],
            test="held-out accuracy final - start, Student-t interval over the seeds' climbs")
        distilled_over = None if distilled is None else dataclasses.asdict(stats.over_seeds(
            [g.accuracy_distilled - g.accuracy_start for g in gains],
            test="held-out accuracy distilled - start, Student-t interval over the seeds' "
                 "climbs and self-distillations"))
        verdicts = ablation_verdicts(main, ablations, c, seed=cfg.seed)
        figures = _figures(main, ablations, verdicts, c, st, others, distilled, without)
        if choice is not None:
            figures["pool"] = _pool_figure(choice, st)
        acc0, acc1 = main.evals[0]["accuracy"], main.evals[-1]["accuracy"]
        gain = climb_gain(main.evals[0], main.evals[-1], c.eval_samples, cfg.seed)
        third = max(1, len(main.history) // 3)
        metrics = GRPOMetrics(
            task=TaskSetup(kinds=list(c.kinds), train_difficulties=list(c.difficulties),
                           eval_difficulty=c.eval_difficulty, n_train_pool=len(pool),
                           n_eval=len(held), eval_samples=c.eval_samples),
            pool=choice, steps=len(main.history), accuracy_start=acc0, accuracy_final=acc1,
            accuracy_best=max(e["accuracy"] for e in main.evals),
            accuracy_gain=acc1 - acc0, gain=gain, seed_gains=gains,
            gain_over_seeds=dataclasses.asdict(over_seeds), number_mass=NumberMass(**mass),
            # the task reward of every rollout drawn (before the filters select groups)
            reward_first_third=mean_over(main.history, "pass_rate_drawn", first=third),
            reward_last_third=mean_over(main.history, "pass_rate_drawn", last=third),
            reward_gain=mean_over(main.history, "pass_rate_drawn", last=third)
            - mean_over(main.history, "pass_rate_drawn", first=third),
            main_wall_s=main.wall_s,
            ablation_wall_s={k: v.wall_s for k, v in ablations.items()},
            empty_batches=main.empty_batches, collapsed_at=main.collapsed_at,
            dropped_stale=main.dropped_stale,
            rollouts=main.rollouts,
            evals=[Evaluation(**e) for e in main.evals], verdicts=verdicts,
            # the policy along the climb (the last is model.pt): self-distillation's sources
            checkpoints=[Checkpoint(**x) for x in saved], distilled=distilled,
            distilled_over_seeds=distilled_over, without_procedural=without,
        )
        st.metrics.update(result_dict(metrics))
        st.path("history.json").write_text(
            json.dumps({"main": main.history,
                                      **{k: v.history for k, v in ablations.items()}}))
    return GRPOResult(main, ablations, figures, metrics, samples)


def _pool_choice(sel: PoolSelection) -> PoolChoice:
    return PoolChoice(candidates=len(sel.rates), kept=len(sel.kept), samples=sel.samples,
                      lo=sel.lo, hi=sel.hi, histogram=sel.histogram,
                      solved_any=float(np.mean([r > 0 for r in sel.rates])))


def _pool_figure(p: PoolChoice, st) -> Any:
    """Bar chart: candidate problems per pass rate of the starting model; the kept window."""
    fig, ax = plots.new(width=6.0, height=3.2)
    labels = list(p.histogram)
    rates = [int(k.split("/")[0]) / p.samples for k in labels]
    colours = [plots.OURS if p.lo <= r <= p.hi else "0.7" for r in rates]
    ax.bar(range(len(labels)), list(p.histogram.values()), color=colours)
    ax.set_xticks(range(len(labels)), labels)
    ax.set(title=f"the starting model's pass rate per training problem ({p.samples} samples); "
                 f"kept {p.kept} of {p.candidates} (coloured)",
           xlabel="samples right", ylabel="problems")
    ax.title.set_fontsize(9)
    return plots.save(fig, st.path("figures", "pool"))


@torch.no_grad()
def _samples(model: torch.nn.Module, tok, problems: list[tasks.Task], c: GRPOStageConfig,
             seed: int) -> list[dict[str, Any]]:
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 7)
    cap = c.final_cap
    groups = sample_groups(model, tok, problems, 2, cap, temperature=c.temperature,
                           top_p=c.top_p, generator=g, keep_extras=False, sampler=c.sampler)
    return [{"prompt": tasks.rl_prompt(gr.task), "answer": gr.task.answer,
             "completions": gr.texts, "correct": gr.correct} for gr in groups]


def _without_procedural(run: Run, up, st, main: ClimbResult, distilled: Distilled | None, tok,
                        pool: list[tasks.Task], held: list[tasks.Task], c: GRPOStageConfig,
                        cfg, device: str, progress) -> BaseComparison:
    """``grpo.compare_base``: the main climb's settings and seed from notebook 08's model
    without the procedural family (its compute-matched control with
    ``midtrain.bootstrap_control``, else the model before the reasoning bootstrap), and its
    gain against the main climb's; with the main climb's self-distillation (``distilled``)
    the same follows this climb, and the gains after it compare too (the recipe's result
    against the recipe's result)."""
    base = "control" if cfg.midtrain.bootstrap_control else "before_bootstrap"
    path = up.path(BASES[base][0])
    if not path.is_file():
        raise FileNotFoundError(
            f"grpo.compare_base climbs from {path.name}, which notebook 08 saves when "
            f"midtrain.bootstrap_steps > 0" + (" and midtrain.bootstrap_control is on"
                                               if base == "control" else "")
            + f"; this run's midtraining stage has none (built before it was saved?): rerun "
              f"notebook 08 for {run.dir}")
    st.add_input(path.stem, path)
    # the main climb's settings and seed, and its self-distillation after it when it had one
    res = replica(load_model_file(path, device), tok, pool, held, c, cfg.seed, cfg.optim,
                  cfg.distill if distilled is not None else None, name="without procedural",
                  progress=progress)
    n = c.eval_samples

    def per(start: dict[str, Any], end: dict[str, Any]) -> np.ndarray:  # samples gained
        return np.asarray(end["correct"]) - np.asarray(start["correct"])

    diff = paired_accuracy(per(main.evals[0], main.evals[-1]), per(res.evals[0], res.evals[-1]),
                           n, seed=cfg.seed,
                           test=f"held-out gain of the main climb minus the gain of the "
                                f"climb from {BASES[base][1]}")
    out = BaseComparison(steps=len(res.history), collapsed_at=res.collapsed_at,
                         rollouts=res.rollouts, evals=[Evaluation(**e) for e in res.evals],
                         gain=climb_gain(res.evals[0], res.evals[-1], n, cfg.seed),
                         difference=dataclasses.asdict(diff), base=base)
    if distilled is not None and res.distilled is not None:
        after = {"correct": distilled.correct}
        d2 = paired_accuracy(per(main.evals[0], after), per(res.evals[0], res.distilled), n,
                             seed=cfg.seed,
                             test=f"held-out gain of the main climb and its "
                                  f"self-distillation minus the same from {BASES[base][1]}")
        out = dataclasses.replace(
            out, traces_distilled=res.distilled_traces,
            accuracy_distilled=res.distilled["accuracy"],
            solved_any_distilled=res.distilled["solved_any"],
            gain_distilled=climb_gain(res.evals[0], res.distilled, n, cfg.seed),
            difference_distilled=dataclasses.asdict(d2))
    return out


def _distilled(main: ClimbResult, student: Transformer, info: dict[str, Any], tok,
               held: list[tasks.Task], c: GRPOStageConfig, seed: int) -> Distilled:
    """The distilled model evaluated as the climb's checkpoints were (same problems, same
    random numbers), with its paired gains over the start and over the climbed model."""
    final = evaluate(student, tok, held, c, c.final_cap, seed, stop_ids(tok))
    climb_s = main.wall_s - sum(e.get("eval_s", 0.0) for e in main.evals)
    losses = info["losses"]
    return Distilled(
        student=info["student"], steps=c.distill_steps, lr=c.distill_lr,
        temperature=c.distill_temperature, problems=info["problems"], traces=info["traces"],
        loss_first=losses[0] if losses else None, loss_last=losses[-1] if losses else None,
        accuracy=final["accuracy"], solved_any=final["solved_any"],
        correct=list(final["correct"]),
        gain=climb_gain(main.evals[0], final, c.eval_samples, seed),
        gain_over_climbed=climb_gain(main.evals[-1], final, c.eval_samples, seed),
        climb_s=climb_s, collect_s=info["collect_s"], sft_s=info["sft_s"],
        total_s=climb_s + info["collect_s"] + info["sft_s"])


def _figures(main: ClimbResult, ablations: dict[str, ClimbResult],
             verdicts: dict[str, dict], c: GRPOStageConfig, st,
             others: dict[int, ClimbResult] | None = None,
             distilled: Distilled | None = None,
             without: BaseComparison | None = None) -> dict[str, Any]:
    h = main.history
    fig, ax = plots.new(width=9.6, height=3.6)
    ex = [e["step"] for e in main.evals]
    ax.plot(ex, [e["accuracy"] for e in main.evals], marker="o", ms=3, color=plots.OURS,
            label=f"held-out accuracy ({c.eval_samples} samples per problem, T="
                  f"{c.temperature}, top-p {c.top_p})")
    ax.plot(ex, [e["solved_any"] for e in main.evals], marker="s", ms=3, lw=1,
            color=plots.PALETTE[1], label=f"held-out pass@{c.eval_samples}")
    for i, res in enumerate((others or {}).values()):  # grpo.seeds: start and end
        ax.plot([e["step"] for e in res.evals], [e["accuracy"] for e in res.evals], ls="",
                marker="^", ms=5, color=plots.PALETTE[2],
                label="other seeds' climbs (pass@1 at start and end)" if i == 0 else None)
    if distilled is not None:  # after the climb: drawn at its last step, in each line's colour
        for y, colour, what in ((distilled.accuracy, plots.OURS, "pass@1"),
                                (distilled.solved_any, plots.PALETTE[1],
                                 f"pass@{c.eval_samples}")):
            ax.plot([ex[-1]], [y], ls="", marker="*", ms=11, color=colour,
                    label=f"after self-distillation ({distilled.steps} steps): {what}")
        later = [r.distilled["accuracy"] for r in (others or {}).values() if r.distilled]
        if later:
            ax.plot([ex[-1]] * len(later), later, ls="", marker="*", ms=7,
                    color=plots.PALETTE[2], label="other seeds, self-distilled (pass@1)")
    if without is not None:  # grpo.compare_base: from the base without the family
        short = BASES[without.base][2]
        ax.plot([e.step for e in without.evals], [e.accuracy for e in without.evals],
                marker="x", ms=5, lw=1, color="0.5", label=f"from {short} (pass@1)")
        if without.accuracy_distilled is not None:
            ax.plot([without.evals[-1].step], [without.accuracy_distilled], ls="", marker="*",
                    ms=9, color="0.5", label=f"{short}, self-distilled (pass@1)")
    ax.axhline(main.evals[0]["accuracy"], color="0.4", ls="--", lw=1,
               label="starting checkpoint")
    ax.axhline(main.evals[0]["accuracy"] + c.min_gain, color=plots.REPORT, ls=":", lw=1,
               label=f"start + {c.min_gain:.0%}")
    top = max([e["solved_any"] for e in main.evals]  # pass@k >= pass@1
              + ([distilled.solved_any] if distilled is not None else []))
    ax.set(title="the climb: held-out accuracy (pass@1) and pass@k", xlabel="optimizer step",
           ylabel="accuracy", ylim=(0, max(0.05, top * 1.15)))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))  # beside the lines
    climb_fig = plots.save(fig, st.path("figures", "climb"))

    panels = [("reward", ["reward", "r_task"], "reward (total, task)"),
              ("pass rate", ["pass_rate_drawn", "pass_rate_kept"], "pass rate (drawn, kept)"),
              ("entropy", ["entropy"], f"entropy (H* = {c.entropy_target})"),
              ("k", ["k"], "entropy controller k"),
              ("clip", ["clip_low", "clip_high", "outer_clip", "neg_high"],
               "clip fraction per branch"),
              ("grad", ["grad_norm"], "gradient norm (before clipping)"),
              ("ratio", ["ratio_mean", "ratio_min", "ratio_max"], "ratio r (mean, min, max)"),
              ("length", ["length"], "response length (tokens)"),
              ("mismatch", ["mismatch", "mismatch_max"],
               "train/inference |log-prob diff| (mean, max)")]
    fig, axes = plots.new(3, 3, width=3.6, height=2.6)
    for ax, (_, keys, title) in zip(axes.ravel(), panels, strict=True):
        for key, colour in zip(keys, plots.PALETTE, strict=False):
            pts = [(r["step"], r[key]) for r in h if r[key] is not None]  # mismatch: some steps
            ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1, color=colour, label=key)
        if title.startswith("entropy ("):
            ax.axhline(c.entropy_target, color=plots.REPORT, ls=":", lw=1, label="H*")
        if len(keys) > 1:
            ax.legend(fontsize=7)
        ax.set(title=title, xlabel="step")
    metrics_fig = plots.save(fig, st.path("figures", "metrics"))

    spec = {"outer_clip": ("grad_norm", "gradient norm", None),
            "entropy_control": ("entropy", "entropy (nats)", c.entropy_target),
            "top_p_mask": ("ratio_mean", "mean ratio", None),
            "routing_replay": ("mismatch_max", "largest |log-prob diff| of a batch", None)}
    names = list(ablations)
    fig, axes = plots.new(1, max(1, len(names)), width=3.8, height=3.2, squeeze=False)
    for ax, name in zip(axes[0], names, strict=False):
        key, label, ref = spec[name]
        first, n = verdicts[name]["from_step"], len(ablations[name].history)
        for res, colour, lab in ((main, plots.OURS, "all stabilisers"),
                                 (ablations[name], plots.REPORT, f"no {name}")):
            rows = [r for r in res.history if first < r["step"] <= first + n
                    and r[key] is not None]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], lw=1.2, color=colour,
                    label=lab)
        if ref is not None:
            ax.axhline(ref, color="0.4", ls=":", lw=1, label="H*")
        if name == "top_p_mask":
            rows = ablations[name].history
            ax.plot([r["step"] for r in rows], [r["nucleus_mass"] for r in rows], lw=1,
                    ls="--", color="0.3", label="kept nucleus mass")
        v = verdicts[name]
        ax.set(title=f"no {name}: claim {v['verdict']}",
               xlabel="step", ylabel=label)
        ax.legend(fontsize=7)
    ablation_fig = plots.save(fig, st.path("figures", "ablations"))
    return {"climb": climb_fig, "metrics": metrics_fig, "ablations": ablation_fig}
