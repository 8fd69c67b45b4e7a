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

With ``grpo.kl_coef`` > 0 (off by default: the report's recipe has no KL term) a frozen copy of
the policy at the start of the climb, the pre-RL model, scores the sampled tokens in each
learner step, and the loss adds ``kl_coef`` times the k3 estimate of the KL to it
(:func:`mai_repro.rl.grpo.kl_k3`); the step history records it as ``kl_ref``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mai_repro.model.transformer import Transformer, with_config
from mai_repro.rl import rewards, tasks
from mai_repro.rl.config import DistillConfig, GRPOStageConfig
from mai_repro.rl.credit import token_advantages
from mai_repro.rl.distill import after_climb
from mai_repro.rl.evaluate import sample_accuracy
from mai_repro.rl.grpo import (
    EntropyController,
    GRPOConfig,
    action_logp,
    group_advantages,
    grpo_loss,
    weight_negatives,
)
from mai_repro.rl.rollout import (
    Group,
    LearnerBatch,
    completion_logits,
    learner_batch,
    sample_groups,
    stop_ids,
)
from mai_repro.train.config import OptimConfig
from mai_repro.train.loop import make_optimizer
from mai_repro.train.step import LossOut, train_step
from mai_repro.train.sweep import Background


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

def heldout_set(c: GRPOStageConfig, seed: int) -> list[tasks.Task]:
    """The held-out evaluation problems of a climb (what mid-training must never show)."""
    return tasks.generate(c.n_eval, kinds=tuple(c.kinds), difficulty=c.eval_difficulty,
                          seed=seed, split="eval", fmt=c.answer_format)


def task_sets(c: GRPOStageConfig, seed: int) -> tuple[list[tasks.Task], list[tasks.Task]]:
    """(training pool mixed over the difficulties and shuffled, held-out evaluation set)."""
    kinds = tuple(c.kinds)
    held = heldout_set(c, seed)
    banned = {t.prompt for t in held}
    pool = [t for d in c.difficulties
            for t in tasks.generate(c.n_train, kinds=kinds, difficulty=d, seed=seed,
                                    fmt=c.answer_format)
            if t.prompt not in banned]
    random.Random(seed).shuffle(pool)
    return pool, held


@dataclass
class PoolSelection:
    """The training pool at the starting model's edge of competence: each candidate problem's
    pass rate over ``samples`` samples, and the problems kept (rate inside [lo, hi])."""

    rates: list[float]  # per candidate problem, in pool order
    kept: list[tasks.Task]
    samples: int
    lo: float
    hi: float

    @property
    def histogram(self) -> dict[str, int]:
        """Problems per pass rate (``"3/8"`` -> count), every rate from 0 to ``samples``."""
        counts = {f"{i}/{self.samples}": 0 for i in range(self.samples + 1)}
        for r in self.rates:
            counts[f"{round(r * self.samples)}/{self.samples}"] += 1
        return counts


def select_pool(model: torch.nn.Module, tok, pool: list[tasks.Task], c: GRPOStageConfig,
                seed: int, stops: set[int] | None = None) -> PoolSelection:
    """Measure the starting model on every candidate (``c.pool_samples`` samples at the
    climb's temperature, top-p and final cap) and keep those with a pass rate in
    [``c.pool_lo``, ``c.pool_hi``]: problems it always fails or always solves give GRPO no
    signal. Raises when nothing is kept (the tasks are out of the model's reach)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed + 1234)
    stops = stops if stops is not None else stop_ids(tok)
    groups = []
    for i in range(0, len(pool), c.draw):  # a draw's worth of prompts per call
        groups += sample_groups(model, tok, pool[i:i + c.draw], c.pool_samples, c.final_cap,
                                temperature=c.temperature, top_p=c.top_p, generator=g,
                                stops=stops, keep_extras=False, sampler=c.sampler)
    rates = [gr.pass_rate for gr in groups]
    kept = [t for t, r in zip(pool, rates, strict=True) if c.pool_lo <= r <= c.pool_hi]
    if not kept:
        raise ValueError(
            f"no training problem has a pass rate in [{c.pool_lo}, {c.pool_hi}] over "
            f"{c.pool_samples} samples (solved at all: {sum(r > 0 for r in rates)} of "
            f"{len(rates)}): the tasks are out of the starting model's reach; lower the "
            "difficulties or widen the window")
    return PoolSelection(rates, kept, c.pool_samples, c.pool_lo, c.pool_hi)


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
    kl_ref: float | None = None  # token mean of the k3 KL to the reference, when there is one
    outer_bind: float = 0.0  # share of tokens whose gradient the outer clip removed

    def row(self) -> dict[str, Any]:
        """The step-history fields: ``kl_ref`` only when a reference model scored the step."""
        d = dataclasses.asdict(self)
        if d["kl_ref"] is None:
            del d["kl_ref"]
        return d


def loss_config(c: GRPOStageConfig, s: Stabilisers) -> GRPOConfig:
    """The loss settings of a run, with the KL weight of ``c.kl_coef`` and the entropy
    penalty's ``c.entropy_penalty`` (0: off)."""
    r_min, r_max = (c.r_min, c.r_max) if s.outer_clip else (0.0, math.inf)
    return GRPOConfig(eps=c.eps, r_min=r_min, r_max=r_max, kl_coef=c.kl_coef,
                      entropy_penalty=c.entropy_penalty,
                      nucleus_only=c.vocab_work == "needed")


def reference_model(policy: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of ``policy`` (eval mode, no gradients): the KL penalty's reference."""
    ref = copy.deepcopy(policy).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


STAT_NAMES = ("loss", "entropy", "clip_low_frac", "clip_high_frac", "outer_clip_frac",
              "neg_high_frac", "ratio_mean", "nucleus_mass", "outer_bind_frac")


def learner_optimizer(policy: torch.nn.Module, c: GRPOStageConfig, optim: OptimConfig
                      ) -> torch.optim.Optimizer:
    """The learner's optimizer (``grpo.optimizer``): AdamW at ``optim.rl_weight_decay``, or SGD
    with ``grpo.momentum`` over every trainable parameter, at ``grpo.lr``."""
    if c.optimizer == "sgd":
        return torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=c.lr,
                               momentum=c.momentum)
    return make_optimizer(policy, c.lr, optim, weight_decay=optim.rl_weight_decay)


def optimizer_step(policy: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   batch: LearnerBatch, controller: EntropyController, lcfg: GRPOConfig,
                   s: Stabilisers, *, micro_batch: int = 0, grad_clip: float = 0.0,
                   temperature: float = 1.0, measure_mismatch: bool = False,
                   ref: torch.nn.Module | None = None) -> StepStats:
    """One optimizer step over ``batch``, accumulated over micro-batches of rows.

    Each micro-batch's token-mean loss is weighted by its share of the batch's tokens, so the
    gradient is the token-level loss of the whole batch. The entropy controller moves k once,
    after the optimizer step, with the entropy of the whole batch.

    ``ref`` (needed when ``lcfg.kl_coef`` > 0): the reference model. Its log-probs of the
    sampled tokens are computed without gradients, at the same temperature and (with top-p
    masking) over the same nucleus as the learner's, with its own routing (no replay: it is
    the reference distribution itself), and feed the KL term of the loss.
    """
    if lcfg.kl_coef > 0 and ref is None:
        raise ValueError("kl_coef > 0 needs a reference model (ref=...)")
    device = next(policy.parameters()).device
    total = batch.mask.sum().clamp_min(1)
    rows = len(batch)
    step = micro_batch if micro_batch > 0 else rows
    k = controller.k if s.entropy_control else 0.0
    micros = [mb for mb in (batch.rows(slice(i, i + step)) for i in range(0, rows, step))
              if float(mb.mask.sum() / total) > 0]
    lo, hi, diffs = math.inf, -math.inf, []

    # x / 1.0 is x bit for bit: the copy (and its backward) is skipped at T = 1
    scale = (lambda x: x) if temperature == 1.0 else (lambda x: x / temperature)

    def loss_fn(mb: LearnerBatch) -> LossOut:
        nonlocal lo, hi
        logits, aux = completion_logits(policy, _to(mb, device), replay=s.routing_replay,
                                        head_at_completions=lcfg.nucleus_only)
        nucleus = None if mb.nucleus is None else mb.nucleus.to(device)
        ref_logp = None
        if ref is not None:
            with torch.no_grad():
                ref_logits, _ = completion_logits(ref, _to(mb, device), replay=False)
                ref_logp = action_logp(scale(ref_logits), mb.actions.to(device),
                                       nucleus if s.top_p_mask else None)
        out = grpo_loss(scale(logits), mb.actions.to(device), mb.old_logp.to(device),
                        mb.advantages.to(device), mb.mask.to(device), lcfg, k=k,
                        nucleus=nucleus, top_p_mask=s.top_p_mask, ref_logp=ref_logp)
        lo, hi = min(lo, out.ratio_min), max(hi, out.ratio_max)
        if measure_mismatch:
            m = mb.mask.to(device)
            diffs.append((out.logp - mb.old_logp.to(device)).abs()[m].cpu())
        stats = {name: float(v.detach() if isinstance(v, torch.Tensor) else v)
                 for name in STAT_NAMES for v in [getattr(out, name)]}
        if out.kl is not None:
            stats["kl"] = out.kl
        # each micro-batch's token-mean loss weighted by its share of the batch's tokens
        return LossOut(out.loss + aux, out.loss, weight=float(mb.mask.sum() / total),
                       stats=stats)

    r = train_step(policy, optimizer, micros, loss_fn, grad_clip=grad_clip)
    acc = r.stats
    if s.entropy_control:
        controller.update(acc["entropy"])  # once per optimizer step
    d = torch.cat(diffs) if diffs else None
    return StepStats(acc["loss"], acc["entropy"], k, r.grad_norm, acc["clip_low_frac"],
                     acc["clip_high_frac"], acc["outer_clip_frac"], acc["neg_high_frac"],
                     acc["ratio_mean"], lo, hi, acc["nucleus_mass"],
                     None if d is None else float(d.mean()),
                     None if d is None else float(d.max()), acc.get("kl"),
                     acc["outer_bind_frac"])


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
                               stops=stops, version=version, sampler=c.sampler)
        drawn += len(problems)
        n_rollouts += c.group_early * len(problems)
        n_correct += sum(sum(g.correct) for g in groups)
        go_on = [g for g in groups if rewards.early_exit_keep(g.correct, c.early_lo, c.early_hi)]
        early += len(go_on)
        if go_on and c.group > c.group_early:
            sample_groups(engine, tok, [], c.group - c.group_early, cap,
                          temperature=c.temperature, top_p=c.top_p, generator=generator,
                          stops=stops, groups=go_on, version=version, sampler=c.sampler)
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
    """Held-out accuracy (pass@1) and ``solved_any`` (pass@k for k = ``eval_samples``):
    ``eval_samples`` samples per problem at the climb's temperature and top-p, with a fixed
    generator (every evaluation sees the same random numbers); the evaluation module's protocol
    (:func:`mai_repro.eval.metrics.sample_accuracy`). ``correct``: samples right per problem,
    in ``held``'s order, for paired intervals between two evaluations."""
    r = sample_accuracy(model, tok, held, samples=c.eval_samples, max_new_tokens=cap,
                        temperature=c.temperature, top_p=c.top_p, seed=seed, stops=stops,
                        sampler=c.sampler)
    return {"accuracy": r.accuracy, "solved_any": r.solved_any, "length": r.length,
            "correct": list(r.correct)}  # per problem: samples right (paired comparisons)


@torch.no_grad()
def number_mass(model: torch.nn.Module, tok, problems: list[tasks.Task]) -> float:
    """Mean probability that the completion of ``Answer:`` starts a number (``7``, ``-1``,
    or a space and then one): how much the model expects the answer format at all. Digits are
    tokens of their own, so a number after the space is two decisions: the space, then a digit
    or a minus sign."""
    import re

    device = next(model.parameters()).device
    pieces = [tok.decode([i]) for i in range(tok.vocab_size)]
    starts = torch.tensor([bool(re.fullmatch(r" ?-?\d+", p)) for p in pieces], device=device)
    space = [i for i, p in enumerate(pieces) if p == " "]
    model.eval()
    total = 0.0
    for t in problems:
        ids = tok.encode(tasks.answer_prompt(t))
        p = model(torch.tensor([ids], device=device)).logits[0, -1].float().softmax(-1)
        mass = float(p[starts].sum())
        for s_id in space:  # the space first, then the number
            q = model(torch.tensor([ids + [s_id]], device=device)).logits[0, -1].float()
            mass += float(p[s_id]) * float(q.softmax(-1)[starts].sum())
        total += mass
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
    # the step at which the climb stopped early: max_empty_draws batches in a row kept nothing
    collapsed_at: int | None = None
    # another seed's climb followed by the report's self-distillation (replica): the distilled
    # model's evaluation, as the climb's evals are, and how many traces it was fine-tuned on
    distilled: dict[str, Any] | None = None
    distilled_traces: int | None = None


@dataclass
class Branch:
    """The loop's whole state after an optimizer step, as plain data (state dicts, generator
    states, counters): what a climb resumed from it needs to go on exactly as the climb it
    came from would. Picklable, so an ablation in a child process can start from it."""

    policy: dict[str, torch.Tensor]
    engine: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    controller: dict[str, float]
    pool: list[tasks.Task]  # the training pool in the stream's current order
    pool_rng: tuple
    pool_i: int
    generator: torch.Tensor  # the sampling generator's state
    torch_rng: torch.Tensor  # the global generator's state
    counters: tuple[int, int, int, int, int]  # step, version, engine version, iterations,
    #                                           empty draws in a row

    @classmethod
    def capture(cls, policy: torch.nn.Module, engine: torch.nn.Module,
                optimizer: torch.optim.Optimizer, controller: EntropyController,
                stream: ProblemStream, gen: torch.Generator, *counters: int) -> Branch:
        def own(sd: dict) -> dict:
            return {k: v.detach().clone() for k, v in sd.items()}

        return cls(own(policy.state_dict()), own(engine.state_dict()),
                   copy.deepcopy(optimizer.state_dict()), controller.state_dict(),
                   list(stream.pool), stream.rng.getstate(), stream.i, gen.get_state(),
                   torch.get_rng_state(), tuple(counters))

    def restore(self, policy: torch.nn.Module, engine: torch.nn.Module,
                optimizer: torch.optim.Optimizer, controller: EntropyController,
                stream: ProblemStream, gen: torch.Generator) -> tuple[int, ...]:
        """Load the state into a climb's freshly built parts; returns the counters."""
        policy.load_state_dict(self.policy)
        engine.load_state_dict(self.engine)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        controller.load_state_dict(self.controller)
        stream.pool, stream.i = list(self.pool), self.pool_i
        stream.rng.setstate(self.pool_rng)
        gen.set_state(self.generator)
        torch.set_rng_state(self.torch_rng)
        return self.counters


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
          on_checkpoint: Callable[[int, Transformer], None] | None = None,
          optim: OptimConfig | None = None, branch_at: int = 0,
          on_branch: Callable[[Branch], None] | None = None,
          resume: Branch | None = None) -> ClimbResult:
    """Run ``steps`` optimizer steps of GRPO from ``start``; evaluate every ``eval_every``.
    The length curriculum spreads its stages over ``schedule_steps`` (default ``steps``), so a
    shorter ablation follows the main run's schedule. Every ``checkpoint_every`` steps (before
    the last) ``on_checkpoint(step, policy)`` is called: self-distillation samples from those.
    The optimizer is ``grpo.optimizer`` (:func:`learner_optimizer`); the clip (and AdamW's
    settings) come from ``optim``, the config's shared section (default :class:`OptimConfig`).
    Each evaluation records its seconds (``eval_s``): ``wall_s`` minus their sum is climbing.

    Branching (the ablations from mid-climb, ``grpo.ablation_from``): at the end of the first
    rollout batch whose optimizer steps reach ``branch_at`` (with ``updates_per_batch`` 2 and
    no stale batch, step ``branch_at`` itself when it is even) the whole state of the loop is
    handed to ``on_branch`` as a :class:`Branch`;
    ``climb(..., resume=branch, steps=S)`` continues from it up to step S, with the same
    numbers as the climb it came from when the stabilisers are the same
    (tests/test_rl_loop.py). A resumed climb numbers its steps on from the branch's and is
    evaluated (``eval_every`` counted from the branch) but not at its first step."""
    t0 = time.time()
    torch.manual_seed(seed)
    policy = learner_model(start, c.balance_coef)
    engine = engine_model(policy, c.rollout_dtype)
    optim = optim or OptimConfig()
    optimizer = learner_optimizer(policy, c, optim)
    # the pre-RL model, frozen: only built when the KL penalty is on
    ref = reference_model(policy) if c.kl_coef > 0 else None
    controller = EntropyController(c.entropy_target, c.entropy_delta, c.k_max)
    lcfg = loss_config(c, s)
    stream = ProblemStream(pool, seed)
    gen = torch.Generator(device=next(policy.parameters()).device).manual_seed(seed)
    stops = stop_ids(tok)
    final_cap = c.final_cap
    result = ClimbResult(name)

    def held_out(at: int) -> None:  # timed: its seconds are evaluation, not climbing
        t = time.time()
        result.evals.append({"step": at, **evaluate(policy, tok, held, c, final_cap, seed,
                                                    stops), "eval_s": time.time() - t})

    if eval_every and resume is None:  # a resumed climb's start was evaluated in its parent
        held_out(0)
    step = version = engine_version = 0
    iterations = empty_run = 0
    if resume is not None:
        step, version, engine_version, iterations, empty_run = resume.restore(
            policy, engine, optimizer, controller, stream, gen)
    step0, branched = step, False

    def capture() -> Branch:
        return Branch.capture(policy, engine, optimizer, controller, stream, gen, step,
                              version, engine_version, iterations, empty_run)

    total = schedule_steps or steps
    while step < steps and iterations < 3 * steps:  # bounded even if nothing is ever kept
        iterations += 1
        stage = min(c.curriculum_stages - 1, step * c.curriculum_stages // total)
        cap, w_len = rewards.curriculum(stage, c.curriculum_stages, c.max_new_tokens, c.w_len)
        draw = draw_batch(engine, tok, stream, c, cap, gen, stops, engine_version)
        result.rollouts += draw.rollouts
        if not draw.groups:
            result.empty_batches += 1
            empty_run += 1
            if empty_run >= c.max_empty_draws:  # collapsed: no group carries a signal
                result.collapsed_at = step
                break
            continue
        empty_run = 0
        R, parts = score(draw.groups, cap, rewards.RewardWeights(c.w_lang, w_len))
        adv = weight_negatives(group_advantages(R, c.group), c.neg_weight)
        if c.credit != "outcome":  # a wrong answer's blame on the line that went wrong
            adv = token_advantages(draw.groups, adv, tok, c.credit)
        batch = learner_batch(draw.groups, adv, policy.cfg.vocab_size, tok.pad_id)
        lengths = [len(x) for g in draw.groups for x in g.completions]
        for u in range(c.updates_per_batch):
            if rewards.is_stale(batch.version, version, c.max_staleness):
                result.dropped_stale += 1
                break
            if c.warmup_steps:  # linear warm-up from lr / warmup_steps (by step: resumable)
                for pg in optimizer.param_groups:
                    pg["lr"] = c.lr * min(1.0, (step + 1) / c.warmup_steps)
            st = optimizer_step(policy, optimizer, batch, controller, lcfg, s,
                                micro_batch=c.micro_batch, grad_clip=optim.grad_clip,
                                temperature=c.temperature,
                                measure_mismatch=(u == 0 and engine_version == version),
                                ref=ref)
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
                "lr": optimizer.param_groups[0]["lr"], **st.row(), "time_s": time.time() - t0})
            if progress is not None:
                progress(1)
            if on_checkpoint and checkpoint_every and step % checkpoint_every == 0 \
                    and step < steps:
                on_checkpoint(step, policy)
            if eval_every and ((step - step0) % eval_every == 0 or step == steps):
                held_out(step)
            if step >= steps:
                break
        if on_branch is not None and not branched and step >= branch_at:
            branched = True  # at the end of a batch: a branch draws its own next batch
            on_branch(capture())
    if on_branch is not None and not branched:  # stopped before branch_at (collapsed): the
        # ablations go on from where it stopped, and find no main-climb steps to pair with
        on_branch(capture())
    if eval_every and (not result.evals or result.evals[-1]["step"] != step):  # ran out
        held_out(step)
    result.wall_s = time.time() - t0
    if keep_model:
        result.model = policy
    return result


# -- ablations in other processes ---------------------------------------------------------------

def _ablation(start: Transformer, tok, pool: list[tasks.Task], held: list[tasks.Task],
              c: GRPOStageConfig, name: str, seed: int, optim: OptimConfig | None,
              branch: Branch | None = None) -> ClimbResult:
    """One ablation: ``c.ablation_steps`` steps with stabiliser ``name`` off, from ``start`` or
    from the main climb's ``branch``, on the main climb's schedule and seeds (a module-level
    function: it runs in a child process too)."""
    if c.threads:
        torch.set_num_threads(c.threads)
    first = branch.counters[0] if branch is not None else 0
    return climb(start, tok, pool, held, c, steps=first + c.ablation_steps, seed=seed,
                 s=Stabilisers().without(name), eval_every=c.ablation_steps,
                 name=f"no {name}", schedule_steps=c.steps, optim=optim, resume=branch)


def replica(start: Transformer, tok, pool: list[tasks.Task], held: list[tasks.Task],
            c: GRPOStageConfig, seed: int, optim: OptimConfig | None,
            distill: DistillConfig | None = None, name: str | None = None,
            progress: Callable[[int], None] | None = None) -> ClimbResult:
    """The main climb again with another seed (``grpo.seeds``) or from another start
    (``grpo.compare_base``), evaluated at its start and end only: the spread of the gain
    between seeds (a module-level function: it runs in a child process too). With
    ``grpo.distill_steps`` > 0 (and ``distill`` given) the self-distillation that follows the
    main climb follows this one too, with this seed, and its student is evaluated the same way
    (``distilled``; ``distilled_traces``: the verified answers it was fine-tuned on): the
    recipe's gain over seeds."""
    if c.threads:
        torch.set_num_threads(c.threads)
    distils = c.distill_steps > 0 and distill is not None
    res = climb(start, tok, pool, held, c, steps=c.steps, seed=seed, eval_every=c.steps,
                name=name or f"seed {seed}", optim=optim, keep_model=distils,
                progress=progress)
    if distils:
        student, info = after_climb(res.model, start, tok, pool, c, distill, seed=seed,
                                    optim=optim)
        res.distilled = evaluate(student, tok, held, c, c.final_cap, seed, stop_ids(tok))
        res.distilled_traces = info["traces"]
        res.model = None
    return res


class Ablations:
    """The ablations of a climb, in child processes when ``c.ablation_workers`` > 0 (queued in
    ``background`` behind what it already runs, or in their own processes), else one after
    another by :meth:`results` (:class:`mai_repro.train.sweep.Background`). They start from
    ``start`` or, given ``branch`` (``grpo.ablation_from``), from the main climb's state at
    that step. Each depends only on where it starts and the seeds, so either way gives the
    same numbers."""

    def __init__(self, start: Transformer, tok, pool: list[tasks.Task],
                 held: list[tasks.Task], c: GRPOStageConfig, seed: int,
                 optim: OptimConfig | None = None, branch: Branch | None = None,
                 background: Background | None = None):
        self.steps = c.ablation_steps
        self.owned = background is None
        self.runs = background if background is not None else Background({}, c.ablation_workers)
        self.names = list(c.ablations)
        for n in self.names:
            self.runs.submit(f"ablation {n}", _ablation,
                             (start, tok, pool, held, c, n, seed, optim, branch))

    def results(self, progress: Callable[[int], None] | None = None
                ) -> dict[str, ClimbResult]:
        out = {}
        try:
            for n in self.names:
                out[n] = self.runs.result(f"ablation {n}")
                if progress is not None:
                    progress(self.steps)
        finally:
            if self.owned:
                self.runs.close()
        return out


# -- the stage --------------------------------------------------------------------------------

