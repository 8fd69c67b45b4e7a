"""Self-distillation from RL checkpoints and specialist consolidation (notebook 10; RECIPE.md
section 6).

**Self-distillation.** The report fine-tunes (SFT) the pre-RL model on traces the model itself
produced during the climb, then climbs again. Traces sampled from *several* checkpoints across
the climb beat traces from the final checkpoint only; dropout 0.15 and a load-balancing weight
of 1e-2 in that SFT keep entropy up for the next climb. Here:

1. **Collect**: each checkpoint the GRPO stage kept (``grpo/checkpoints/``, then
   ``grpo/model.pt``) samples ``trace_samples`` completions of every training problem at the
   climb's temperature and top-p; a trace is kept only when its answer is verified correct.
2. **Select** the same number of traces for both students (the same budget): round-robin over
   the checkpoints for the multi-checkpoint student, the final checkpoint's alone for the other.
3. **SFT** the pre-RL (mid-trained) model on each set: loss on the completion tokens only.
4. **Climb** a short GRPO run from each student, with the stage-09 settings and seeds.

**Specialists.** One RL specialist per task kind climbs from the pre-RL model on its kind
only; their verified traces are mixed with *sample weights* (each specialist's share of the
traces) and *token weights* (each specialist's share of the SFT loss: a token of specialist f
weighs ``token_weight_f / tokens_f``); the pre-RL model is fine-tuned on the mix
(consolidation). Joint RL on every kind at once, with the specialists' steps summed, is the
baseline. Every model is evaluated on every kind's held-out set.

Every filter and selection reads the binary task outcome only.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mai_repro.model.transformer import Transformer, with_config
from mai_repro.rl import evaluate as ev
from mai_repro.rl import tasks
from mai_repro.rl.config import DistillConfig, GRPOStageConfig
from mai_repro.rl.credit import reference_lines
from mai_repro.rl.rollout import sample_groups, stop_ids
from mai_repro.train.config import OptimConfig
from mai_repro.train.loop import make_optimizer, weighted_nll
from mai_repro.train.step import LossOut, train_step


@dataclass(frozen=True)
class Trace:
    """One verified completion: the prompt's and the completion's token ids, and its source."""

    task: tasks.Task
    prompt: tuple[int, ...]
    completion: tuple[int, ...]
    source: str  # the checkpoint (or specialist) that sampled it


# -- collecting and selecting traces ----------------------------------------------------------

@torch.no_grad()
def collect_traces(model: torch.nn.Module, tok, problems: Sequence[tasks.Task], samples: int,
                   max_new_tokens: int, *, temperature: float, top_p: float, seed: int,
                   source: str, sampler: str = "vocabulary") -> tuple[list[Trace], int]:
    """The verified traces among ``samples`` completions of each problem, and how many
    completions were drawn."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    groups = sample_groups(model, tok, list(problems), samples, max_new_tokens,
                           temperature=temperature, top_p=top_p, generator=g,
                           stops=stop_ids(tok), keep_extras=False, sampler=sampler)
    out = [Trace(gr.task, tuple(gr.prompt), tuple(comp), source)
           for gr in groups for comp, ok in zip(gr.completions, gr.correct, strict=True)
           if ok and comp]
    return out, samples * len(problems)


def program_traces(tok, problems: Sequence[tasks.Task]) -> list[Trace]:
    """The program's worked solution of each problem as a trace, ending with EOT as a sampled
    completion does (:func:`mai_repro.rl.credit.reference_lines`): a supervised control for
    self-distillation, with no sampling and no reward. In the worked format a verified sample
    is usually this very text. Problems the program does not solve are left out."""
    out = []
    for t in problems:
        lines = reference_lines(t)
        if lines is not None:
            out.append(Trace(t, tuple(tok.encode(tasks.rl_prompt(t))),
                             tuple(tok.encode("\n".join(lines))) + (tok.eot_id,), "program"))
    return out


def round_robin(sources: Sequence[Sequence[Trace]], n: int, seed: int) -> list[Trace]:
    """``n`` traces taken in turn from each source (each shuffled), skipping exhausted ones."""
    rng = random.Random(seed)
    queues = [list(s) for s in sources]
    for q in queues:
        rng.shuffle(q)
    out: list[Trace] = []
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


def weighted_mix(sources: Sequence[Sequence[Trace]], weights: Sequence[float], n: int,
                 seed: int) -> list[Trace]:
    """``n`` traces with source i's share ``weights[i] / sum(weights)`` (largest remainders;
    a source short of its share is drawn with replacement: weights are a target, not a cap)."""
    w = np.asarray(weights, dtype=float)
    if len(w) != len(sources) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per source with a positive sum, got "
                         f"{list(weights)} for {len(sources)} sources")
    exact = n * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts))[: n - counts.sum()]:
        counts[i] += 1
    rng = random.Random(seed)
    out: list[Trace] = []
    for src, k in zip(sources, counts, strict=True):
        if k and not src:
            raise ValueError(f"a source with weight > 0 has no verified traces (source "
                             f"{len(out)}); lower its weight or collect more")
        pool = list(src)
        rng.shuffle(pool)
        out += [pool[j % len(pool)] for j in range(k)]
    rng.shuffle(out)
    return out


def token_weights(traces: Sequence[Trace], sources: Sequence[str],
                  shares: Sequence[float] | None) -> list[float]:
    """The loss weight of a completion token of each trace, so that the tokens of source i
    carry ``shares[i] / sum(shares)`` of the SFT loss (over the whole set); ``None``: every
    token weighs 1 (the shares then follow the sampled token counts)."""
    if not shares:
        return [1.0] * len(traces)
    if len(shares) != len(sources):
        raise ValueError(f"{len(shares)} token weights for {len(sources)} sources")
    tokens = Counter()
    for t in traces:
        tokens[t.source] += len(t.completion)
    total = sum(tokens.values())
    s = np.asarray(shares, dtype=float) / float(np.sum(shares))
    per = {src: (s[i] * total / tokens[src] if tokens[src] else 0.0)
           for i, src in enumerate(sources)}
    return [per[t.source] for t in traces]


def token_share(traces: Sequence[Trace], weights: Sequence[float]) -> dict[str, float]:
    """Each source's share of the total loss weight (measured on the set)."""
    mass = Counter()
    for t, w in zip(traces, weights, strict=True):
        mass[t.source] += w * len(t.completion)
    total = sum(mass.values()) or 1.0
    return {k: v / total for k, v in mass.items()}


# -- supervised fine-tuning on traces ---------------------------------------------------------

def sft_batch(traces: Sequence[Trace], weights: Sequence[float], pad_id: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, L), targets (B, L), per-token loss weights (B, L), zero off completions)."""
    seqs = [t.prompt + t.completion for t in traces]
    L = max(len(s) for s in seqs) - 1
    B = len(seqs)
    inputs = torch.full((B, L), pad_id, dtype=torch.long)
    targets = torch.full((B, L), pad_id, dtype=torch.long)
    w = torch.zeros(B, L)
    for b, (t, s, wt) in enumerate(zip(traces, seqs, weights, strict=True)):
        inputs[b, : len(s) - 1] = torch.tensor(s[:-1])
        targets[b, : len(s) - 1] = torch.tensor(s[1:])
        w[b, len(t.prompt) - 1: len(s) - 1] = wt  # positions predicting completion tokens
    return inputs, targets, w


def sft(start: Transformer, traces: Sequence[Trace], d: DistillConfig, *, seed: int,
        pad_id: int, weights: Sequence[float] | None = None,
        progress: Callable[[int], None] | None = None, optim: OptimConfig | None = None
        ) -> tuple[Transformer, list[float]]:
    """Fine-tune a copy of ``start`` on ``traces`` (completion tokens only) with the report's
    dropout and load-balancing weight, AdamW (at ``optim.rl_weight_decay``) and the clip from
    ``optim``; returns the model (dropout off again) and the losses.
    With no traces there is nothing to learn: the copy is returned unchanged (no losses)."""
    if not traces:
        return with_config(start, start.cfg).eval(), []

    def sft_loss(batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> LossOut:
        x, y, w = batch  # completion tokens carry their token weight, the prompt none
        out = model(x)
        loss = weighted_nll(out.logits, y, w)
        return LossOut(loss + out.aux_loss, loss)

    weights = list(weights) if weights is not None else [1.0] * len(traces)
    cfg = dataclasses.replace(start.cfg, dropout=d.dropout, aux_loss_coef=d.balance_coef)
    model = with_config(start, cfg).float().train()
    optim = optim or OptimConfig()
    opt = make_optimizer(model, d.sft_lr, optim, weight_decay=optim.rl_weight_decay)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    order: list[int] = []
    losses = []
    device = next(model.parameters()).device
    for _ in range(d.sft_steps):
        if len(order) < d.sft_batch:
            more = list(range(len(traces)))
            rng.shuffle(more)
            order += more
        idx, order = order[: d.sft_batch], order[d.sft_batch:]
        x, y, w = sft_batch([traces[i] for i in idx], [weights[i] for i in idx], pad_id)
        x, y, w = x.to(device), y.to(device), w.to(device)
        r = train_step(model, opt, [(x, y, w)], sft_loss, grad_clip=optim.grad_clip)
        losses.append(r.loss)
        if progress is not None:
            progress(1)
    plain = dataclasses.replace(start.cfg, dropout=0.0)
    return with_config(model, plain).eval(), losses


def after_climb(climbed: Transformer, start: Transformer, tok, problems: Sequence[tasks.Task],
                c: GRPOStageConfig, d: DistillConfig, *, seed: int,
                optim: OptimConfig | None = None, samples: int = 1,
                student: str = "start", source: str = "verified",
                progress: Callable[[int], None] | None = None
                ) -> tuple[Transformer, dict[str, Any]]:
    """The report's self-distillation after a climb (``grpo.distill_steps``): the climbed model
    answers the first ``c.distill_problems`` of ``problems`` ``samples`` times each at
    ``c.distill_temperature`` (the climb's top-p and final length cap), its verified answers
    are the traces (``source`` "program": the program's worked solutions instead, a supervised
    control with no sampling and no reward), and ``student`` ("start": the pre-RL model, as
    the report; "climbed": the climbed one) is fine-tuned on them for ``c.distill_steps``
    steps of ``d.sft_batch`` traces at ``c.distill_lr``, without dropout (0.15 took the worked
    model from 45% to 8%: docs/rl.md, eighth round). Returns the student and a record (traces,
    completions drawn, losses, seconds of collecting and of fine-tuning)."""
    if student not in ("start", "climbed") or source not in ("verified", "program"):
        raise ValueError(f"student must be start or climbed, source verified or program; got "
                         f"{student!r}, {source!r}")
    t = time.time()
    chosen = list(problems[:c.distill_problems])
    if source == "program":
        traces, drawn = program_traces(tok, chosen), 0
    else:
        traces, drawn = collect_traces(climbed.eval(), tok, chosen, samples, c.final_cap,
                                       temperature=c.distill_temperature, top_p=c.top_p,
                                       seed=seed, source="climbed", sampler=c.sampler)
    collect_s = time.time() - t
    dd = dataclasses.replace(d, sft_steps=c.distill_steps, sft_lr=c.distill_lr, dropout=0.0,
                             balance_coef=c.balance_coef)
    model, losses = sft(climbed if student == "climbed" else start, traces, dd, seed=seed,
                        pad_id=tok.pad_id, optim=optim, progress=progress)
    return model, {"student": student, "source": source, "problems": len(chosen),
                   "traces": len(traces), "drawn": drawn, "losses": losses,
                   "collect_s": collect_s, "sft_s": time.time() - t - collect_s}


# -- evaluation --------------------------------------------------------------------------------

def evaluate(model: torch.nn.Module, tok, held: Sequence[tasks.Task], c: GRPOStageConfig,
             seed: int) -> dict[str, Any]:
    """The report's protocol (``eval_samples`` samples per problem at the climb's temperature
    and top-p; stage 09's seeds and length cap), pass@k, the first answer token's entropy and
    the diversity of the samples. ``correct``: samples right per problem, in ``held``'s order
    (two models evaluated on the same problems compare paired,
    :func:`mai_repro.rl.evaluate.paired_accuracy`)."""
    cap = c.final_cap
    r = ev.sample_accuracy(model, tok, list(held), samples=c.eval_samples, max_new_tokens=cap,
                           temperature=c.temperature, top_p=c.top_p, seed=seed,
                           stops=stop_ids(tok), sampler=c.sampler)
    return {**r.summary(), "correct": list(r.correct),
            "entropy": ev.answer_entropy(model, tok, list(held), temperature=c.temperature)}


def trace_stats(traces: Sequence[Trace]) -> dict[str, Any]:
    """How many traces, from where, over how many problems, with how many distinct answers."""
    return {"n": len(traces), "sources": dict(Counter(t.source for t in traces)),
            "problems": len({t.task.prompt for t in traces}),
            "distinct": len({(t.task.prompt, t.completion) for t in traces}),
            "tokens": sum(len(t.completion) for t in traces)}


# -- the stage --------------------------------------------------------------------------------

def rl_config(c: GRPOStageConfig, d: DistillConfig) -> GRPOStageConfig:
    """Stage 09's climb settings with this stage's learning rate (``distill.rl_lr``, when set):
    the short climbs here have a fraction of the main climb's steps."""
    return dataclasses.replace(c, lr=d.rl_lr) if d.rl_lr else c


def spread(items: Sequence[Mapping[str, Any]], n: int) -> list[Mapping[str, Any]]:
    """``n`` items evenly spaced over ``items``, always ending with the last (the final one)."""
    if n >= len(items):
        return list(items)
    idx = sorted({round((len(items) - 1) * (i + 1) / n) for i in range(n)})
    return [items[i] for i in idx]

