"""Stage ``self_distillation`` (notebook 10): multi-checkpoint vs final-only traces, specialists."""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mai_repro import plots, stats
from mai_repro.artifacts import Run, require
from mai_repro.config import DistillConfig, GRPOStageConfig, resolve_device
from mai_repro.model.transformer import Transformer
from mai_repro.rl import tasks
from mai_repro.rl.climb import climb, task_sets
from mai_repro.rl.distill import (
    Trace,
    collect_traces,
    evaluate,
    rl_config,
    round_robin,
    sft,
    spread,
    token_share,
    token_weights,
    trace_stats,
    weighted_mix,
)
from mai_repro.rl.evaluate import paired_accuracy
from mai_repro.schema import cpu_threads, load_result, result_dict
from mai_repro.stages.grpo import GRPOMetrics
from mai_repro.train.checkpoint import load_model_file, save_model_file
from mai_repro.train.config import OptimConfig
from mai_repro.train.sweep import Background

STAGE = "self_distillation"
UPSTREAM = "grpo"
PRE_RL = "midtraining"



@dataclass
class TraceStats:
    """A set of verified traces: how many, from where, over how many problems."""

    n: int
    sources: dict[str, int]  # checkpoint ("step <k>") or task kind -> traces
    problems: int
    distinct: int  # distinct (problem, completion) pairs
    tokens: int


@dataclass
class Traces:
    """The traces of the two students, drawn at the same budget."""

    budget: int  # traces per student
    drawn_per_checkpoint: int  # samples drawn from each checkpoint
    verified: dict[str, int]  # checkpoint step -> verified traces
    multi_checkpoint: TraceStats
    final_only: TraceStats


@dataclass
class KindTests:
    """The consolidation finding on one task kind: paired bootstrap intervals over that kind's
    held-out problems (every model is evaluated on the same problems with the same random
    numbers), each held against 0."""

    specialist_gain: stats.Decision  # specialist - pre-RL: held = the specialist learned
    consolidated_gain: stats.Decision  # consolidated - pre-RL: held = the skill is in the merge
    consolidated_loss: stats.Decision  # specialist - consolidated: held = skill lost in it


@dataclass
class SpecialistsMetrics:
    """One specialist per task kind, their consolidation and joint RL; model names
    ("pre_rl", "specialist <kind>", "consolidated", "joint RL") key ``accuracy``."""

    kinds: list[str]
    steps: int  # GRPO steps per specialist
    joint_steps: int  # of joint RL: the specialists' steps summed
    sample_weights: list[float]  # share of the consolidation mix per kind, as configured
    sample_weights_used: list[float]  # ... with a kind that has no traces left out
    token_weights: list[float] | None
    verified: dict[str, int]  # verified traces per kind
    mix: TraceStats  # the consolidation mix
    token_share: dict[str, float]  # measured share of the SFT loss per kind
    n_eval: int  # held-out problems per kind
    accuracy: dict[str, dict[str, float]]  # model -> kind -> held-out accuracy
    correct: dict[str, dict[str, list[int]]]  # model -> kind -> samples right per problem
    tests: dict[str, KindTests]  # kind -> the consolidation finding's paired intervals


@dataclass
class SelfDistillationMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Student names
    ("multi_checkpoint", "final_only") and evaluation keys stay dict keys."""

    n_eval: int  # held-out problems
    eval_samples: int
    checkpoints: list[int]  # steps of the climb the traces come from
    traces: Traces
    accuracy: dict[str, float]  # after each student's climb, and pre_rl / rl_final
    # the finding: multi_checkpoint - final_only after the climbs, paired over the held-out
    # problems (both students are evaluated on the same problems with the same random numbers)
    multi_vs_final: stats.Decision
    reference: dict[str, dict[str, Any]]  # pre_rl / rl_final evaluations
    students: dict[str, dict[str, Any]]  # each student after SFT
    after_climb: dict[str, dict[str, Any]]  # each student after its short GRPO climb
    rl_steps: int
    sft_steps: int
    sft_loss: dict[str, list[float]]  # student -> [first, last] SFT loss
    specialists: SpecialistsMetrics
    timings_s: dict[str, float]
    wall_s: float


METRICS = SelfDistillationMetrics


@dataclass
class DistillResult:
    metrics: SelfDistillationMetrics
    figures: dict[str, Any]


def build(run: Run) -> DistillResult:
    """Stage 10: self-distillation (multi-checkpoint vs final-only) and consolidation."""
    from tqdm.auto import tqdm

    from mai_repro.data.tokenizer import load as load_tokenizer

    cfg, c, d, optim = run.cfg, run.cfg.grpo, run.cfg.distill, run.cfg.optim
    device = resolve_device(cfg.device)
    up = require(run, UPSTREAM)
    pre = require(run, PRE_RL)
    tok = load_tokenizer(require(run, "tokenizer").path("tokenizer.json"))
    seed = cfg.seed
    cap = c.final_cap
    climbed = load_result(GRPOMetrics, up.metrics)
    kept = ([{"step": ck.step, "file": ck.file} for ck in climbed.checkpoints]
            or [{"step": climbed.steps, "file": "model.pt"}])
    chosen = spread(kept, d.checkpoints)
    n_sft = 3  # two students and the consolidated model
    n_rl = 2 * d.rl_steps + 2 * d.specialist_steps * len(d.specialists)  # + joint RL
    t0 = time.time()
    with cpu_threads(c.threads), run.stage(STAGE) as st:
        st.add_input("pre_rl_model", pre.path("model.pt"))
        for ck in chosen:
            st.add_input(f"checkpoint_{ck['step']}", up.path(ck["file"]))
        start = load_model_file(pre.path("model.pt"), device)
        pool, held = task_sets(c, seed)
        # the specialists' climbs start now in a child process (distill.workers), or later
        climbs = SpecialistsRun(start, tok, c, d, seed=seed, optim=optim)
        bar = tqdm(total=n_sft * d.sft_steps + n_rl, desc="self-distillation", leave=False)
        timings: dict[str, float] = {}

        # 1. traces from each chosen checkpoint (the same problems and seeds for each)
        t = time.time()
        per_ckpt: dict[int, list[Trace]] = {}
        drawn = 0
        for ck in chosen:
            model = load_model_file(up.path(ck["file"]), device)
            per_ckpt[ck["step"]], n = collect_traces(
                model, tok, pool, d.trace_samples, cap, temperature=c.temperature,
                top_p=c.top_p, seed=seed + 11, source=f"step {ck['step']}", sampler=c.sampler)
            drawn += n
        final_step = chosen[-1]["step"]
        budget = min(d.traces, len(per_ckpt[final_step]),
                     sum(len(v) for v in per_ckpt.values()))
        sets = {"multi_checkpoint": round_robin(list(per_ckpt.values()), budget, seed),
                "final_only": round_robin([per_ckpt[final_step]], budget, seed)}
        timings["traces"] = time.time() - t

        # 2. SFT the pre-RL model on each set, then a short climb from each student
        t = time.time()
        cr = rl_config(c, d)
        reference = {"pre_rl": evaluate(start, tok, held, c, seed),
                     "rl_final": evaluate(load_model_file(up.path("model.pt"), device), tok,
                                          held, c, seed)}
        students, losses, after = {}, {}, {}
        for name, traces in sets.items():
            model, losses[name] = sft(start, traces, d, seed=seed, pad_id=tok.pad_id,
                                      progress=bar.update, optim=optim)
            save_model_file(model.cfg, model.state_dict(), st.path("students", f"{name}.pt"))
            students[name] = evaluate(model, tok, held, c, seed)
            if d.rl_steps:
                res = climb(model, tok, pool, held, cr, steps=d.rl_steps, seed=seed,
                            name=name, progress=bar.update, keep_model=True, optim=optim)
                after[name] = evaluate(res.model, tok, held, c, seed)
            else:
                after[name] = students[name]
        timings["self_distillation"] = time.time() - t

        # 3. specialists, their consolidation, and joint RL
        t = time.time()
        spec = specialists(start, tok, c, d, seed=seed, progress=bar.update, st=st,
                           optim=optim, climbs=climbs)
        timings["specialists"] = time.time() - t
        bar.close()

        sd_fig = _self_distillation_figure(reference, students, after, losses, sets, st)
        sp_fig = _specialist_figure(spec, st)
        metrics = SelfDistillationMetrics(
            n_eval=len(held), eval_samples=c.eval_samples,
            checkpoints=[ck["step"] for ck in chosen],
            traces=Traces(budget=budget, drawn_per_checkpoint=drawn // len(chosen),
                          verified={str(k): len(v) for k, v in per_ckpt.items()},
                          **{name: TraceStats(**trace_stats(ts)) for name, ts in sets.items()}),
            # the finding of the report card: held-out accuracy after each student's climb
            accuracy={name: after[name]["accuracy"] for name in sets}
            | {"pre_rl": reference["pre_rl"]["accuracy"],
               "rl_final": reference["rl_final"]["accuracy"]},
            multi_vs_final=paired_accuracy(
                after["multi_checkpoint"]["correct"], after["final_only"]["correct"],
                c.eval_samples, seed=seed,
                test="held-out accuracy multi-checkpoint - final-only student, after the "
                     "climbs"),
            reference=reference, students=students, after_climb=after,
            rl_steps=d.rl_steps, sft_steps=d.sft_steps,
            sft_loss={k: [v[0], v[-1]] if v else [] for k, v in losses.items()},
            specialists=spec,
            timings_s=timings, wall_s=time.time() - t0,
        )
        st.metrics.update(result_dict(metrics))
    return DistillResult(metrics, {"self_distillation": sd_fig, "specialists": sp_fig})



def _specialist_sets(c: GRPOStageConfig, d: DistillConfig, seed: int
                     ) -> tuple[dict[str, GRPOStageConfig], dict[str, tuple[list, list]]]:
    """Per specialist kind: its climb settings and its (training pool, held-out set). The
    operations ``add`` and ``sub`` split grpo's own ``addsub`` sets (tasks.OPERATIONS)."""
    if all(k in tasks.OPERATIONS for k in d.specialists):
        pool, held = task_sets(rl_config(c, d), seed)
        return ({k: rl_config(c, d) for k in d.specialists},
                {k: (tasks.of_operation(pool, k), tasks.of_operation(held, k))
                 for k in d.specialists})
    cf = {k: dataclasses.replace(rl_config(c, d), kinds=[k]) for k in d.specialists}
    return cf, {k: task_sets(cf[k], seed) for k in d.specialists}


def specialist_climbs(start: Transformer, tok, c: GRPOStageConfig, d: DistillConfig, *,
                      seed: int, progress: Callable[[int], None] | None = None,
                      optim: OptimConfig | None = None, threads: int = 0
                      ) -> tuple[dict[str, Transformer], list[list[Trace]]]:
    """One RL specialist per task kind and its verified traces on its own pool (a
    module-level function: it runs in a child process under ``distill.workers``)."""
    if threads:
        torch.set_num_threads(threads)
    cf, sets = _specialist_sets(c, d, seed)
    models, traces = {}, []
    for k in d.specialists:
        res = climb(start, tok, sets[k][0], sets[k][1], cf[k], steps=d.specialist_steps,
                    seed=seed, name=f"specialist {k}", progress=progress, keep_model=True,
                    optim=optim)
        models[f"specialist {k}"] = res.model.eval()
        got, _ = collect_traces(models[f"specialist {k}"], tok, sets[k][0], d.trace_samples,
                                c.final_cap, temperature=c.temperature, top_p=c.top_p,
                                seed=seed + 13, source=k, sampler=c.sampler)
        traces.append(got)
    return models, traces


class SpecialistsRun:
    """The specialists' climbs, started at once in a child process when ``distill.workers``
    is 1 (they depend only on the pre-RL model and the seeds, so the numbers are the same as
    in this process), else run by :meth:`result` (:class:`mai_repro.train.sweep.Background`)."""

    def __init__(self, start: Transformer, tok, c: GRPOStageConfig, d: DistillConfig, *,
                 seed: int, optim: OptimConfig | None = None):
        self.steps = d.specialist_steps * len(d.specialists)
        self.run = Background({"specialists": (specialist_climbs, (start, tok, c, d),
                                               {"seed": seed, "optim": optim,
                                                "threads": c.threads})}, d.workers)

    def result(self, progress: Callable[[int], None] | None = None
               ) -> tuple[dict[str, Transformer], list[list[Trace]]]:
        try:
            out = self.run.result("specialists")
        finally:
            self.run.close()
        if progress is not None:
            progress(self.steps)
        return out


def specialists(start: Transformer, tok, c: GRPOStageConfig, d: DistillConfig, *, seed: int,
                progress: Callable[[int], None] | None = None, st=None,
                optim: OptimConfig | None = None,
                climbs: SpecialistsRun | None = None) -> SpecialistsMetrics:
    """One specialist per task kind, their consolidation by weighted trace distillation, and
    joint RL on every kind (the specialists' steps summed); each evaluated on every kind. Returns
    the manifest's ``specialists`` metrics. ``climbs``: the specialists' climbs already started
    (in a child process); joint RL runs here meanwhile."""
    kinds = list(d.specialists)
    cf, sets = _specialist_sets(c, d, seed)
    held = {k: sets[k][1] for k in kinds}
    models: dict[str, torch.nn.Module] = {"pre_rl": start}
    climbs = climbs or SpecialistsRun(start, tok, c, d, seed=seed, optim=optim)
    joint_pool = [t for k in kinds for t in sets[k][0]]
    random.Random(seed).shuffle(joint_pool)
    # joint RL on every kind the specialists climb (addsub once for the operations)
    cj = dataclasses.replace(rl_config(c, d),
                             kinds=list(dict.fromkeys(k for x in cf.values() for k in x.kinds)))
    if climbs.run.in_child:  # joint RL while the child climbs
        joint = climb(start, tok, joint_pool, [], cj, steps=d.specialist_steps * len(kinds),
                      seed=seed, name="joint RL", progress=progress, keep_model=True,
                      optim=optim)
    spec_models, traces = climbs.result(progress=progress)
    models.update(spec_models)
    sample_w = list(d.sample_weights or [1.0] * len(kinds))
    # a specialist that solved none of its problems has no traces: its share goes to the rest
    used_w = [w if got else 0.0 for w, got in zip(sample_w, traces, strict=True)]
    mix = weighted_mix(traces, used_w, d.traces, seed) if sum(used_w) > 0 else []
    tw = token_weights(mix, kinds, d.token_weights or None)
    models["consolidated"], _ = sft(start, mix, d, seed=seed, pad_id=tok.pad_id, weights=tw,
                                    progress=progress, optim=optim)
    if not climbs.run.in_child:
        joint = climb(start, tok, joint_pool, [], cj, steps=d.specialist_steps * len(kinds),
                      seed=seed, name="joint RL", progress=progress, keep_model=True,
                      optim=optim)
    models["joint RL"] = joint.model.eval()
    if st is not None:
        save_model_file(models["consolidated"].cfg, models["consolidated"].state_dict(),
                        st.path("students", "consolidated.pt"))
    evals = {name: {k: evaluate(m, tok, held[k], cf[k], seed) for k in kinds}
             for name, m in models.items()}
    correct = {name: {k: e["correct"] for k, e in ev.items()} for name, ev in evals.items()}
    return SpecialistsMetrics(
        kinds=kinds, steps=d.specialist_steps, joint_steps=d.specialist_steps * len(kinds),
        sample_weights=sample_w, sample_weights_used=used_w,
        token_weights=list(d.token_weights) if d.token_weights else None,
        verified={k: len(t) for k, t in zip(kinds, traces, strict=True)},
        mix=TraceStats(**trace_stats(mix)), token_share=token_share(mix, tw),
        n_eval=len(held[kinds[0]]),
        accuracy={name: {k: e["accuracy"] for k, e in ev.items()} for name, ev in evals.items()},
        correct=correct,
        tests={k: consolidation_tests(correct, k, cf[k].eval_samples, seed) for k in kinds})


def consolidation_tests(correct: dict[str, dict[str, list[int]]], kind: str, samples: int,
                        seed: int) -> KindTests:
    """The three paired comparisons of the consolidation finding on ``kind`` from per-problem
    counts of samples right (model -> kind -> counts, the models "pre_rl",
    "specialist <kind>" and "consolidated")."""
    pre, spec = correct["pre_rl"][kind], correct[f"specialist {kind}"][kind]
    cons = correct["consolidated"][kind]
    return KindTests(
        specialist_gain=paired_accuracy(spec, pre, samples, seed=seed,
                                        test=f"held-out {kind} accuracy specialist - pre-RL"),
        consolidated_gain=paired_accuracy(cons, pre, samples, seed=seed,
                                          test=f"held-out {kind} accuracy consolidated - "
                                               f"pre-RL"),
        consolidated_loss=paired_accuracy(spec, cons, samples, seed=seed,
                                          test=f"held-out {kind} accuracy specialist - "
                                               f"consolidated"))


# -- figures ----------------------------------------------------------------------------------

def _se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy over ``n`` problems (the card's unit)."""
    return float(np.sqrt(max(p * (1 - p), 0.0) / max(1, n)))


def _self_distillation_figure(reference, students, after, losses, sets, st) -> Any:
    fig, axes = plots.new(2, 2, width=5.0, height=3.2)
    ax = axes[0, 0]
    for (name, ls), colour in zip(losses.items(), plots.PALETTE, strict=False):
        ax.plot(ls, lw=1, color=colour, label=name.replace("_", " "))
    ax.set(title="student SFT loss (completion tokens)", xlabel="SFT step", ylabel="nats")
    ax.legend(fontsize=8)
    short = {"multi_checkpoint": "multi", "final_only": "final"}
    models = {"pre-RL": reference["pre_rl"], "RL final": reference["rl_final"]}
    for name in sets:
        models[f"{short.get(name, name)}\nSFT"] = students[name]
        models[f"{short.get(name, name)}\n+climb"] = after[name]
    labels = list(models)
    x = np.arange(len(labels))
    colours = ["0.6", "0.3"] + [plots.PALETTE[1], plots.OURS] * len(sets)
    for ax, key, title in ((axes[0, 1], "accuracy", "held-out accuracy (+- 1 se)"),
                           (axes[1, 0], "entropy", "first answer token's entropy (nats)"),
                           (axes[1, 1], "distinct", "distinct samples per problem (share)")):
        vals = [models[m][key] for m in labels]
        err = [_se(v, models[m]["n_problems"]) for v, m in zip(vals, labels, strict=True)] \
            if key == "accuracy" else None
        ax.bar(x, vals, 0.7, yerr=err, color=colours, capsize=3)
        ax.set_xticks(x, labels, fontsize=8)
        top = max(v + (e if err else 0.0) for v, e in zip(vals, err or vals, strict=True))
        ax.set(title=title, ylim=(0, max(0.05, top * 1.15)))
    return plots.save(fig, st.path("figures", "self_distillation"))


def _specialist_figure(spec, st) -> Any:
    acc, kinds, n = spec.accuracy, spec.kinds, spec.n_eval
    names = list(acc)
    fig, ax = plots.new(width=6.4, height=3.4)
    width = 0.8 / len(kinds)
    x = np.arange(len(names))
    for i, (k, colour) in enumerate(zip(kinds, plots.PALETTE, strict=False)):
        vals = [acc[m][k] for m in names]
        ax.bar(x + (i - (len(kinds) - 1) / 2) * width, vals, width, color=colour,
               yerr=[_se(v, n) for v in vals], capsize=3, label=f"held-out {k}")
    ax.set_xticks(x, [m.replace("pre_rl", "pre-RL") for m in names], fontsize=8)
    ax.set(title="specialists, their consolidation and joint RL (+- 1 se)", ylabel="accuracy",
           ylim=(0, max(0.05, max(acc[m][k] for m in names for k in kinds) * 1.4)))
    ax.legend(fontsize=8)
    return plots.save(fig, st.path("figures", "specialists"))
