"""The RL climb (notebook 09; RECIPE.md section 6): GRPO with MAI's stabilisers, measured.

One iteration of the loop:

1. **Sample** (the inference side, its own copy of the weights): draw problems from the
   training pool, ``G_early`` rollouts each; keep drawing (up to ``G``) only for problems whose
   pass rate lies in the early-exit window [0.05, 0.8]; keep the groups whose pass rate over
   all ``G`` lies in the regular window [0.1, 0.8]. Both filters read the binary task outcome.
2. **Score**: R = R_task + w_lang R_lang - w_len R_len, group-relative advantages.
3. **Learn** (the learner, float32): ``updates_per_batch`` optimizer steps on the batch, each
   with the GRPO loss (outer ratio clip, clip widened by the entropy controller's k, top-p
   masking with the inference nucleus, routing replay of the inference experts); k is
   updated once per optimizer step, whatever the gradient accumulation.
4. **Sync**: every ``sync_every`` optimizer steps the inference weights are replaced by the
   learner's; a rollout batch more than ``max_staleness`` updates old is dropped.

The length cap doubles per curriculum stage and w_len is dropped in the last stage. Each
stabiliser can be switched off (:class:`Stabilisers`) for the ablations, run from the same
checkpoint with the same seeds.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mai_repro import plots
from mai_repro.artifacts import Run, require
from mai_repro.config import GRPOStageConfig, resolve_device
from mai_repro.eval.metrics import sample_accuracy
from mai_repro.model.transformer import Transformer, with_config
from mai_repro.rl import rewards, tasks
from mai_repro.rl.grpo import EntropyController, GRPOConfig, group_advantages, grpo_loss
from mai_repro.rl.rollout import (
    Group,
    LearnerBatch,
    completion_logits,
    learner_batch,
    sample_groups,
    stop_ids,
)
from mai_repro.train.checkpoint import load_model_file, save_model_file
from mai_repro.train.loop import make_optimizer

STAGE = "grpo"
UPSTREAM = "midtraining"


@dataclass(frozen=True)
class Stabilisers:
    """Which of the report's stabilisers are on (all, except in an ablation)."""

    outer_clip: bool = True
    entropy_control: bool = True
    top_p_mask: bool = True
    routing_replay: bool = True

    def without(self, name: str) -> Stabilisers:
        return dataclasses.replace(self, **{name: False})


# -- data -------------------------------------------------------------------------------------

def task_sets(c: GRPOStageConfig, seed: int) -> tuple[list[tasks.Task], list[tasks.Task]]:
    """(training pool mixed over the difficulties and shuffled, held-out evaluation set)."""
    kinds = tuple(c.kinds)
    held = tasks.generate(c.n_eval, kinds=kinds, difficulty=c.eval_difficulty, seed=seed,
                          split="eval")
    banned = {t.prompt for t in held}
    pool = [t for d in c.difficulties
            for t in tasks.generate(c.n_train, kinds=kinds, difficulty=d, seed=seed)
            if t.prompt not in banned]
    random.Random(seed).shuffle(pool)
    return pool, held


class ProblemStream:
    """Endless passes over the training pool, reshuffled each pass."""

    def __init__(self, pool: list[tasks.Task], seed: int):
        self.pool, self.rng, self.i = list(pool), random.Random(seed), 0

    def take(self, n: int) -> list[tasks.Task]:
        out = []
        for _ in range(n):
            if self.i == len(self.pool):
                self.rng.shuffle(self.pool)
                self.i = 0
            out.append(self.pool[self.i])
            self.i += 1
        return out


# -- the learner step -------------------------------------------------------------------------

@dataclass
class StepStats:
    loss: float
    entropy: float
    k: float
    grad_norm: float
    clip_low: float
    clip_high: float
    outer_clip: float
    neg_high: float
    ratio_mean: float
    ratio_min: float
    ratio_max: float
    nucleus_mass: float
    mismatch: float | None  # mean |learner - inference| log-prob, when their weights agree
    mismatch_max: float | None  # the largest over the batch's tokens


def loss_config(c: GRPOStageConfig, s: Stabilisers) -> GRPOConfig:
    """The loss settings of a run (the optional KL to a reference policy is not used here)."""
    if s.outer_clip:
        return GRPOConfig(eps=c.eps, r_min=c.r_min, r_max=c.r_max)
    return GRPOConfig(eps=c.eps, r_min=0.0, r_max=math.inf)


def optimizer_step(policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   batch: LearnerBatch, controller: EntropyController, lcfg: GRPOConfig,
                   s: Stabilisers, *, micro_batch: int = 0, grad_clip: float = 0.0,
                   temperature: float = 1.0, measure_mismatch: bool = False) -> StepStats:
    """One optimizer step over ``batch``, accumulated over micro-batches of rows.

    Each micro-batch's token-mean loss is weighted by its share of the batch's tokens, so the
    gradient is the token-level loss of the whole batch. The entropy controller moves k once,
    after the optimizer step, with the entropy of the whole batch.
    """
    policy.train()
    optimizer.zero_grad(set_to_none=True)
    device = next(policy.parameters()).device
    total = batch.mask.sum().clamp_min(1)
    rows = len(batch)
    step = micro_batch if micro_batch > 0 else rows
    k = controller.k if s.entropy_control else 0.0
    acc: dict[str, float] = {}
    lo, hi, diffs = math.inf, -math.inf, []
    for start in range(0, rows, step):
        mb = batch.rows(slice(start, start + step))
        w = float(mb.mask.sum() / total)
        if w == 0:
            continue
        logits, aux = completion_logits(policy, _to(mb, device), replay=s.routing_replay)
        out = grpo_loss(logits / temperature, mb.actions.to(device), mb.old_logp.to(device),
                        mb.advantages.to(device), mb.mask.to(device), lcfg, k=k,
                        nucleus=None if mb.nucleus is None else mb.nucleus.to(device),
                        top_p_mask=s.top_p_mask)
        ((out.loss + aux) * w).backward()
        for name in ("loss", "entropy", "clip_low_frac", "clip_high_frac", "outer_clip_frac",
                     "neg_high_frac", "ratio_mean", "nucleus_mass"):
            value = getattr(out, name)
            value = value.detach() if isinstance(value, torch.Tensor) else value
            acc[name] = acc.get(name, 0.0) + w * float(value)
        lo, hi = min(lo, out.ratio_min), max(hi, out.ratio_max)
        if measure_mismatch:
            m = mb.mask.to(device)
            diffs.append((out.logp - mb.old_logp.to(device)).abs()[m].cpu())
    params = [p for p in policy.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    optimizer.step()
    if hasattr(policy, "update_balance"):
        policy.update_balance()
    if s.entropy_control:
        controller.update(acc["entropy"])  # once per optimizer step
    d = torch.cat(diffs) if diffs else None
    return StepStats(acc["loss"], acc["entropy"], k, float(norm), acc["clip_low_frac"],
                     acc["clip_high_frac"], acc["outer_clip_frac"], acc["neg_high_frac"],
                     acc["ratio_mean"], lo, hi, acc["nucleus_mass"],
                     None if d is None else float(d.mean()),
                     None if d is None else float(d.max()))


def _to(b: LearnerBatch, device: torch.device) -> LearnerBatch:
    if str(device) == "cpu":
        return b
    return dataclasses.replace(
        b, inputs=b.inputs.to(device), start=b.start.to(device),
        routing=None if b.routing is None else [r.to(device) for r in b.routing])


# -- sampling with the filters -----------------------------------------------------------------

@dataclass
class Draw:
    groups: list[Group]
    drawn: int  # problems drawn
    early_kept: int  # problems past the early exit
    rollouts: int
    pass_rate: float  # over every rollout drawn


def draw_batch(engine: torch.nn.Module, tok, stream: ProblemStream, c: GRPOStageConfig,
               cap: int, generator: torch.Generator, stops: set[int], version: int) -> Draw:
    """Up to ``c.problems`` kept groups: early exit after G_early, pass-rate filter after G."""
    kept: list[Group] = []
    drawn = early = n_rollouts = n_correct = 0
    for _ in range(c.max_rounds):
        problems = stream.take(c.draw)
        groups = sample_groups(engine, tok, problems, c.group_early, cap,
                               temperature=c.temperature, top_p=c.top_p, generator=generator,
                               stops=stops, version=version)
        drawn += len(problems)
        n_rollouts += c.group_early * len(problems)
        n_correct += sum(sum(g.correct) for g in groups)
        go_on = [g for g in groups if rewards.early_exit_keep(g.correct, c.early_lo, c.early_hi)]
        early += len(go_on)
        if go_on and c.group > c.group_early:
            sample_groups(engine, tok, [], c.group - c.group_early, cap,
                          temperature=c.temperature, top_p=c.top_p, generator=generator,
                          stops=stops, groups=go_on, version=version)
            n_rollouts += (c.group - c.group_early) * len(go_on)
            n_correct += sum(sum(g.correct[c.group_early:]) for g in go_on)
        kept += [g for g in go_on if rewards.pass_rate_keep(g.correct, c.keep_lo, c.keep_hi)]
        if len(kept) >= c.problems:
            break
    return Draw(kept[: c.problems], drawn, early, n_rollouts, n_correct / max(1, n_rollouts))


def score(groups: list[Group], cap: int, w: rewards.RewardWeights
          ) -> tuple[torch.Tensor, dict[str, float]]:
    """Rewards of every completion (group by group) and the mean of each part."""
    R, parts = [], {"task": 0.0, "lang": 0.0, "len": 0.0}
    for g in groups:
        for ok, text, comp in zip(g.correct, g.texts, g.completions, strict=True):
            r, p = rewards.total_reward(ok, text, len(comp), cap, g.pass_rate, w)
            R.append(r)
            for key in parts:
                parts[key] += p[key]
    n = max(1, len(R))
    return torch.tensor(R), {k: v / n for k, v in parts.items()} | {"total": sum(R) / n}


def evaluate(model: torch.nn.Module, tok, held: list[tasks.Task], c: GRPOStageConfig,
             cap: int, seed: int, stops: set[int]) -> dict[str, float]:
    """Held-out accuracy: ``eval_samples`` samples per problem at the climb's temperature and
    top-p, with a fixed generator (every evaluation sees the same random numbers); the
    evaluation module's protocol (:func:`mai_repro.eval.metrics.sample_accuracy`)."""
    r = sample_accuracy(model, tok, held, samples=c.eval_samples, max_new_tokens=cap,
                        temperature=c.temperature, top_p=c.top_p, seed=seed, stops=stops)
    return {"accuracy": r.accuracy, "solved_any": r.solved_any, "length": r.length}


@torch.no_grad()
def number_mass(model: torch.nn.Module, tok, problems: list[tasks.Task]) -> float:
    """Mean probability of a number token (``-12``, `` 7``) right after ``Answer:``: how much
    the model expects the answer format at all."""
    import re

    device = next(model.parameters()).device
    is_num = torch.tensor([bool(re.fullmatch(r" ?-?\d+", tok.decode([i])))
                           for i in range(tok.vocab_size)], device=device)
    model.eval()
    total = 0.0
    for t in problems:
        ids = torch.tensor([tok.encode(tasks.rl_prompt(t))], device=device)
        p = model(ids).logits[0, -1].float().softmax(-1)
        total += float(p[is_num].sum())
    return total / max(1, len(problems))


# -- the loop ---------------------------------------------------------------------------------

@dataclass
class ClimbResult:
    name: str
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per optimizer step
    evals: list[dict[str, Any]] = field(default_factory=list)  # step, accuracy, ...
    wall_s: float = 0.0
    dropped_stale: int = 0
    empty_batches: int = 0
    rollouts: int = 0
    model: torch.nn.Module | None = None


def learner_model(start: Transformer, balance_coef: float) -> Transformer:
    """A float32 copy of ``start`` with RL's load-balancing weight and no dropout."""
    cfg = dataclasses.replace(start.cfg, aux_loss_coef=balance_coef, dropout=0.0)
    return with_config(start, cfg).float()


def engine_model(policy: Transformer, dtype: str) -> Transformer:
    engine = copy.deepcopy(policy).eval()
    return engine.to(torch.bfloat16) if dtype == "bfloat16" else engine


def climb(start: Transformer, tok, pool: list[tasks.Task], held: list[tasks.Task],
          c: GRPOStageConfig, *, steps: int, seed: int, s: Stabilisers = Stabilisers(),
          eval_every: int | None = None, name: str = "main",
          progress: Callable[[int], None] | None = None, keep_model: bool = False,
          schedule_steps: int | None = None, checkpoint_every: int = 0,
          on_checkpoint: Callable[[int, Transformer], None] | None = None) -> ClimbResult:
    """Run ``steps`` optimizer steps of GRPO from ``start``; evaluate every ``eval_every``.
    The length curriculum spreads its stages over ``schedule_steps`` (default ``steps``), so a
    shorter ablation follows the main run's schedule. Every ``checkpoint_every`` steps (before
    the last) ``on_checkpoint(step, policy)`` is called: self-distillation samples from those."""
    t0 = time.time()
    torch.manual_seed(seed)
    policy = learner_model(start, c.balance_coef)
    engine = engine_model(policy, c.rollout_dtype)
    optimizer = make_optimizer(policy, c.lr, 0.0)
    controller = EntropyController(c.entropy_target, c.entropy_delta, c.k_max)
    lcfg = loss_config(c, s)
    stream = ProblemStream(pool, seed)
    gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    stops = stop_ids(tok)
    final_cap = c.final_cap
    result = ClimbResult(name)
    if eval_every:
        result.evals.append({"step": 0, **evaluate(policy, tok, held, c, final_cap, seed,
                                                   stops)})
    step = version = engine_version = 0
    iterations = 0
    total = schedule_steps or steps
    while step < steps and iterations < 3 * steps:  # bounded even if nothing is ever kept
        iterations += 1
        stage = min(c.curriculum_stages - 1, step * c.curriculum_stages // total)
        cap, w_len = rewards.curriculum(stage, c.curriculum_stages, c.max_new_tokens, c.w_len)
        draw = draw_batch(engine, tok, stream, c, cap, gen, stops, engine_version)
        result.rollouts += draw.rollouts
        if not draw.groups:
            result.empty_batches += 1
            continue
        R, parts = score(draw.groups, cap, rewards.RewardWeights(c.w_lang, w_len))
        adv = group_advantages(R, c.group)
        batch = learner_batch(draw.groups, adv, policy.cfg.vocab_size, tok.pad_id)
        lengths = [len(x) for g in draw.groups for x in g.completions]
        for u in range(c.updates_per_batch):
            if rewards.is_stale(batch.version, version, c.max_staleness):
                result.dropped_stale += 1
                break
            st = optimizer_step(policy, optimizer, batch, controller, lcfg, s,
                                micro_batch=c.micro_batch, grad_clip=c.grad_clip,
                                temperature=c.temperature,
                                measure_mismatch=(u == 0 and engine_version == version))
            step += 1
            version += 1
            if step % c.sync_every == 0:
                engine.load_state_dict(policy.state_dict())
                engine_version = version
            result.history.append({
                "step": step, "stage": stage, "cap": cap, "w_len": w_len,
                "reward": parts["total"], "r_task": parts["task"], "r_lang": parts["lang"],
                "r_len": parts["len"], "pass_rate_drawn": draw.pass_rate,
                "pass_rate_kept": float(np.mean([g.pass_rate for g in draw.groups])),
                "problems_drawn": draw.drawn, "problems_early_kept": draw.early_kept,
                "problems_kept": len(draw.groups), "rollouts": draw.rollouts,
                "length": float(np.mean(lengths)), "staleness": version - 1 - batch.version,
                **dataclasses.asdict(st), "time_s": time.time() - t0})
            if progress is not None:
                progress(1)
            if on_checkpoint and checkpoint_every and step % checkpoint_every == 0 \
                    and step < steps:
                on_checkpoint(step, policy)
            if eval_every and (step % eval_every == 0 or step == steps):
                result.evals.append({"step": step, **evaluate(policy, tok, held, c, final_cap,
                                                              seed, stops)})
            if step >= steps:
                break
    if eval_every and result.evals[-1]["step"] != step:  # the loop ran out of iterations
        result.evals.append({"step": step, **evaluate(policy, tok, held, c, final_cap, seed,
                                                      stops)})
    result.wall_s = time.time() - t0
    if keep_model:
        result.model = policy
    return result


# -- the stage --------------------------------------------------------------------------------

@dataclass
class GRPOResult:
    main: ClimbResult
    ablations: dict[str, ClimbResult]
    figures: dict[str, Any]
    metrics: dict[str, Any]
    samples: list[dict[str, Any]]


def mean_over(history: list[dict], key: str, first: int | None = None,
              last: int | None = None) -> float:
    rows = history[:first] if first else history[-last:] if last else history
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(vals)) if vals else float("nan")


def ablation_verdicts(main: ClimbResult, ablations: dict[str, ClimbResult], c: GRPOStageConfig
                      ) -> dict[str, dict[str, Any]]:
    """Per ablation: what was measured against the same steps of the main run, and whether the
    report's claim held here."""
    out: dict[str, dict[str, Any]] = {}
    for name, ab in ablations.items():
        n = len(ab.history)
        base = main.history[:n]
        if name == "outer_clip":
            b = max((r["grad_norm"] for r in base), default=math.nan)
            a = max((r["grad_norm"] for r in ab.history), default=math.nan)
            out[name] = {"measure": "largest gradient norm", "with": b, "without": a,
                         "claim": "without the outer clip the gradient norm spikes",
                         "held": bool(a > 2 * b)}
        elif name == "entropy_control":
            q = max(1, n // 4)
            b, a = mean_over(base, "entropy", last=q), mean_over(ab.history, "entropy", last=q)
            out[name] = {"measure": f"mean entropy of the last {q} steps (H* = "
                                    f"{c.entropy_target})", "with": b, "without": a,
                         "claim": "without adaptive entropy control entropy falls further "
                                  "below H*",
                         # a difference under a tenth of the main run's distance from H*
                         # is a tie, not a finding
                         "held": bool(b - a > 0.1 * abs(b - c.entropy_target))}
        elif name == "top_p_mask":
            b, a = mean_over(base, "ratio_mean"), mean_over(ab.history, "ratio_mean")
            mass = mean_over(ab.history, "nucleus_mass")
            out[name] = {"measure": "mean ratio pi_theta / pi_old", "with": b, "without": a,
                         "nucleus_mass": mass,
                         "claim": "without top-p masking the ratio is biased below 1 by the "
                                  "mass outside the nucleus",
                         "held": bool(abs(a - 1) > 2 * abs(b - 1) and abs(a - mass)
                                      < abs(a - 1))}
        elif name == "routing_replay":
            b, a = mean_over(base, "mismatch_max"), mean_over(ab.history, "mismatch_max")
            out[name] = {"measure": "largest train/inference |log-prob diff| of a batch "
                                    "(mean over batches)", "with": b, "without": a,
                         "mean_with": mean_over(base, "mismatch"),
                         "mean_without": mean_over(ab.history, "mismatch"),
                         "claim": "without routing replay the learner's log-probs drift from "
                                  "the inference ones",
                         "held": bool(a > 1.5 * b and a > 1e-3)}
        out[name]["steps"] = n
        out[name]["accuracy_with"] = _acc_at(main, n)
        out[name]["accuracy_without"] = ab.evals[-1]["accuracy"] if ab.evals else None
    return out


def _acc_at(result: ClimbResult, step: int) -> float | None:
    rows = [e for e in result.evals if e["step"] <= step]
    return rows[-1]["accuracy"] if rows else None


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` inside the block (0: unchanged), then restored.
    Small matrices gain nothing from a second thread, and on shared cores a thread waiting for
    a busy sibling stalls every parallel kernel."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build(run: Run) -> GRPOResult:
    """Stage 09: the climb from the mid-trained checkpoint, then the ablations."""
    from tqdm.auto import tqdm

    from mai_repro.data.tokenizer import load as load_tokenizer

    cfg, c = run.cfg, run.cfg.grpo
    device = resolve_device(cfg.device)
    up = require(run, UPSTREAM)
    tok_stage = require(run, "tokenizer")
    with cpu_threads(c.threads), run.stage(STAGE) as st:
        st.add_input("start_model", up.path("model.pt"))
        tok = load_tokenizer(tok_stage.path("tokenizer.json"))
        start = load_model_file(up.path("model.pt"), device)
        pool, held = task_sets(c, cfg.seed)
        total = c.steps + c.ablation_steps * len(c.ablations)
        bar = tqdm(total=total, desc="GRPO steps", leave=False)
        saved: list[dict[str, Any]] = []

        def keep(step: int, policy: Transformer) -> None:
            name = f"checkpoints/step_{step:06d}.pt"
            save_model_file(policy.cfg, policy.state_dict(), st.path(name))
            saved.append({"step": step, "file": name})

        main = climb(start, tok, pool, held, c, steps=c.steps, seed=cfg.seed,
                     eval_every=c.eval_every, progress=bar.update, keep_model=True,
                     checkpoint_every=c.checkpoint_every, on_checkpoint=keep)
        save_model_file(main.model.cfg, main.model.state_dict(), st.path("model.pt"))
        saved.append({"step": len(main.history), "file": "model.pt"})
        samples = _samples(main.model, tok, held[:6], c, cfg.seed)
        mass = {"start": number_mass(start, tok, held), "final": number_mass(main.model, tok,
                                                                             held)}
        main.model = None
        ablations = {}
        for name in c.ablations:
            ablations[name] = climb(start, tok, pool, held, c, steps=c.ablation_steps,
                                    seed=cfg.seed, s=Stabilisers().without(name),
                                    eval_every=c.ablation_steps, name=f"no {name}",
                                    progress=bar.update, schedule_steps=c.steps)
        bar.close()
        verdicts = ablation_verdicts(main, ablations, c)
        figures = _figures(main, ablations, verdicts, c, st)
        acc0, acc1 = main.evals[0]["accuracy"], main.evals[-1]["accuracy"]
        third = max(1, len(main.history) // 3)
        st.metrics.update({
            "task": {"kinds": list(c.kinds), "train_difficulties": list(c.difficulties),
                     "eval_difficulty": c.eval_difficulty, "n_train_pool": len(pool),
                     "n_eval": len(held), "eval_samples": c.eval_samples},
            "steps": len(main.history), "accuracy_start": acc0, "accuracy_final": acc1,
            "accuracy_best": max(e["accuracy"] for e in main.evals),
            "accuracy_gain": acc1 - acc0, "number_mass": mass,
            # the task reward of every rollout drawn (before the filters select groups)
            "reward_first_third": mean_over(main.history, "pass_rate_drawn", first=third),
            "reward_last_third": mean_over(main.history, "pass_rate_drawn", last=third),
            "reward_gain": mean_over(main.history, "pass_rate_drawn", last=third)
            - mean_over(main.history, "pass_rate_drawn", first=third),
            "main_wall_s": main.wall_s,
            "ablation_wall_s": {k: v.wall_s for k, v in ablations.items()},
            "empty_batches": main.empty_batches, "dropped_stale": main.dropped_stale,
            "rollouts": main.rollouts,
            "evals": main.evals, "verdicts": verdicts,
            # the policy along the climb (the last is model.pt): self-distillation's sources
            "checkpoints": saved,
        })
        st.path("history.json").write_text(
            json.dumps({"main": main.history,
                                      **{k: v.history for k, v in ablations.items()}}))
        metrics = dict(st.metrics)
    return GRPOResult(main, ablations, figures, metrics, samples)


@torch.no_grad()
def _samples(model: torch.nn.Module, tok, problems: list[tasks.Task], c: GRPOStageConfig,
             seed: int) -> list[dict[str, Any]]:
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 7)
    cap = c.final_cap
    groups = sample_groups(model, tok, problems, 2, cap, temperature=c.temperature,
                           top_p=c.top_p, generator=g, keep_extras=False)
    return [{"prompt": tasks.rl_prompt(gr.task), "answer": gr.task.answer,
             "completions": gr.texts, "correct": gr.correct} for gr in groups]


def _figures(main: ClimbResult, ablations: dict[str, ClimbResult],
             verdicts: dict[str, dict], c: GRPOStageConfig, st) -> dict[str, Any]:
    h = main.history
    fig, ax = plots.new(width=6.4, height=3.6)
    ex = [e["step"] for e in main.evals]
    ax.plot(ex, [e["accuracy"] for e in main.evals], marker="o", ms=3, color=plots.OURS,
            label=f"held-out accuracy ({c.eval_samples} samples per problem, T="
                  f"{c.temperature}, top-p {c.top_p})")
    ax.axhline(main.evals[0]["accuracy"], color="0.4", ls="--", lw=1,
               label="starting checkpoint")
    ax.axhline(main.evals[0]["accuracy"] + c.min_gain, color=plots.REPORT, ls=":", lw=1,
               label=f"start + {c.min_gain:.0%}")
    ax.set(title="the climb: held-out accuracy", xlabel="optimizer step", ylabel="accuracy",
           ylim=(0, max(0.05, max(e["accuracy"] for e in main.evals) * 1.15)))
    ax.legend(fontsize=8)
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
        n = len(ablations[name].history)
        for res, colour, lab in ((main, plots.OURS, "all stabilisers"),
                                 (ablations[name], plots.REPORT, f"no {name}")):
            rows = [r for r in res.history[:n] if r[key] is not None]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], lw=1.2, color=colour,
                    label=lab)
        if ref is not None:
            ax.axhline(ref, color="0.4", ls=":", lw=1, label="H*")
        if name == "top_p_mask":
            rows = ablations[name].history
            ax.plot([r["step"] for r in rows], [r["nucleus_mass"] for r in rows], lw=1,
                    ls="--", color="0.3", label="kept nucleus mass")
        v = verdicts[name]
        ax.set(title=f"no {name}: claim {'held' if v['held'] else 'did NOT hold'}",
               xlabel="step", ylabel=label)
        ax.legend(fontsize=7)
    ablation_fig = plots.save(fig, st.path("figures", "ablations"))
    return {"climb": climb_fig, "metrics": metrics_fig, "ablations": ablation_fig}


def load_model(run: Run) -> Transformer:
    """The policy after the climb (``<run_dir>/grpo/model.pt``)."""
    return load_model_file(require(run, STAGE).path("model.pt"), resolve_device(run.cfg.device))
