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

from mai_repro import plots
from mai_repro.artifacts import Run, require
from mai_repro.config import DistillConfig, GRPOStageConfig, resolve_device
from mai_repro.eval import metrics as ev
from mai_repro.model.transformer import Transformer, with_config
from mai_repro.rl import tasks
from mai_repro.rl.climb import climb, cpu_threads, task_sets
from mai_repro.rl.rollout import sample_groups, stop_ids
from mai_repro.train.checkpoint import load_model_file, save_model_file
from mai_repro.train.loop import make_optimizer

STAGE = "self_distillation"
UPSTREAM = "grpo"
PRE_RL = "midtraining"


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
                   source: str) -> tuple[list[Trace], int]:
    """The verified traces among ``samples`` completions of each problem, and how many
    completions were drawn."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    groups = sample_groups(model, tok, list(problems), samples, max_new_tokens,
                           temperature=temperature, top_p=top_p, generator=g,
                           stops=stop_ids(tok), keep_extras=False)
    out = [Trace(gr.task, tuple(gr.prompt), tuple(comp), source)
           for gr in groups for comp, ok in zip(gr.completions, gr.correct, strict=True)
           if ok and comp]
    return out, samples * len(problems)


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
        progress: Callable[[int], None] | None = None) -> tuple[Transformer, list[float]]:
    """Fine-tune a copy of ``start`` on ``traces`` (completion tokens only) with the report's
    dropout and load-balancing weight; returns the model (dropout off again) and the losses.
    With no traces there is nothing to learn: the copy is returned unchanged (no losses)."""
    if not traces:
        return with_config(start, start.cfg).eval(), []
    weights = list(weights) if weights is not None else [1.0] * len(traces)
    cfg = dataclasses.replace(start.cfg, dropout=d.dropout, aux_loss_coef=d.balance_coef)
    model = with_config(start, cfg).float().train()
    opt = make_optimizer(model, d.sft_lr, 0.0)
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
        out = model(x)
        nll = torch.nn.functional.cross_entropy(out.logits.float().transpose(1, 2), y,
                                                reduction="none")
        loss = (nll * w).sum() / w.sum().clamp_min(1e-9)
        opt.zero_grad(set_to_none=True)
        (loss + out.aux_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        model.update_balance()
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(1)
    plain = dataclasses.replace(start.cfg, dropout=0.0)
    return with_config(model, plain).eval(), losses


# -- evaluation --------------------------------------------------------------------------------

def evaluate(model: torch.nn.Module, tok, held: Sequence[tasks.Task], c: GRPOStageConfig,
             seed: int) -> dict[str, Any]:
    """The report's protocol (``eval_samples`` samples per problem at the climb's temperature
    and top-p; stage 09's seeds and length cap), pass@k, the first answer token's entropy and
    the diversity of the samples."""
    cap = c.final_cap
    r = ev.sample_accuracy(model, tok, list(held), samples=c.eval_samples, max_new_tokens=cap,
                           temperature=c.temperature, top_p=c.top_p, seed=seed,
                           stops=stop_ids(tok))
    return {**r.summary(), "entropy": ev.answer_entropy(model, tok, list(held),
                                                        temperature=c.temperature)}


def trace_stats(traces: Sequence[Trace]) -> dict[str, Any]:
    """How many traces, from where, over how many problems, with how many distinct answers."""
    return {"n": len(traces), "sources": dict(Counter(t.source for t in traces)),
            "problems": len({t.task.prompt for t in traces}),
            "distinct": len({(t.task.prompt, t.completion) for t in traces}),
            "tokens": sum(len(t.completion) for t in traces)}


# -- the stage --------------------------------------------------------------------------------

@dataclass
class DistillResult:
    metrics: dict[str, Any]
    figures: dict[str, Any]


def build(run: Run) -> DistillResult:
    """Stage 10: self-distillation (multi-checkpoint vs final-only) and consolidation."""
    from tqdm.auto import tqdm

    from mai_repro.data.tokenizer import load as load_tokenizer

    cfg, c, d = run.cfg, run.cfg.grpo, run.cfg.distill
    device = resolve_device(cfg.device)
    up = require(run, UPSTREAM)
    pre = require(run, PRE_RL)
    tok = load_tokenizer(require(run, "tokenizer").path("tokenizer.json"))
    seed = cfg.seed
    cap = c.final_cap
    kept = up.manifest["metrics"].get("checkpoints") or [{"step": up.manifest["metrics"]
                                                          ["steps"], "file": "model.pt"}]
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
                top_p=c.top_p, seed=seed + 11, source=f"step {ck['step']}")
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
                                      progress=bar.update)
            save_model_file(model.cfg, model.state_dict(), st.path("students", f"{name}.pt"))
            students[name] = evaluate(model, tok, held, c, seed)
            if d.rl_steps:
                res = climb(model, tok, pool, held, cr, steps=d.rl_steps, seed=seed,
                            name=name, progress=bar.update, keep_model=True)
                after[name] = evaluate(res.model, tok, held, c, seed)
            else:
                after[name] = students[name]
        timings["self_distillation"] = time.time() - t

        # 3. specialists, their consolidation, and joint RL
        t = time.time()
        spec = specialists(start, tok, c, d, seed=seed, progress=bar.update, st=st)
        timings["specialists"] = time.time() - t
        bar.close()

        sd_fig = _self_distillation_figure(reference, students, after, losses, sets, st)
        sp_fig = _specialist_figure(spec, st)
        st.metrics.update({
            "n_eval": len(held), "eval_samples": c.eval_samples,
            "checkpoints": [ck["step"] for ck in chosen],
            "traces": {"budget": budget, "drawn_per_checkpoint": drawn // len(chosen),
                       "verified": {str(k): len(v) for k, v in per_ckpt.items()},
                       **{name: trace_stats(ts) for name, ts in sets.items()}},
            # the finding of the report card: held-out accuracy after each student's climb
            "accuracy": {name: after[name]["accuracy"] for name in sets}
            | {"pre_rl": reference["pre_rl"]["accuracy"],
               "rl_final": reference["rl_final"]["accuracy"]},
            "reference": reference, "students": students, "after_climb": after,
            "rl_steps": d.rl_steps, "sft_steps": d.sft_steps,
            "sft_loss": {k: [v[0], v[-1]] if v else [] for k, v in losses.items()},
            "specialists": spec,
            "timings_s": timings, "wall_s": time.time() - t0,
        })
        metrics = dict(st.metrics)
    return DistillResult(metrics, {"self_distillation": sd_fig, "specialists": sp_fig})


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


def specialists(start: Transformer, tok, c: GRPOStageConfig, d: DistillConfig, *, seed: int,
                progress: Callable[[int], None] | None = None, st=None) -> dict[str, Any]:
    """One specialist per task kind, their consolidation by weighted trace distillation, and
    joint RL on every kind (the specialists' steps summed); each evaluated on every kind. Returns
    the manifest's ``specialists`` metrics."""
    cap = c.final_cap
    kinds = list(d.specialists)
    cf = {k: dataclasses.replace(rl_config(c, d), kinds=[k]) for k in kinds}
    sets = {k: task_sets(cf[k], seed) for k in kinds}  # (pool, held) per kind
    held = {k: sets[k][1] for k in kinds}
    models: dict[str, torch.nn.Module] = {"pre_rl": start}
    traces = []
    for k in kinds:
        res = climb(start, tok, sets[k][0], held[k], cf[k], steps=d.specialist_steps,
                    seed=seed, name=f"specialist {k}", progress=progress, keep_model=True)
        models[f"specialist {k}"] = res.model.eval()
        got, _ = collect_traces(models[f"specialist {k}"], tok, sets[k][0], d.trace_samples,
                                cap, temperature=c.temperature, top_p=c.top_p, seed=seed + 13,
                                source=k)
        traces.append(got)
    sample_w = list(d.sample_weights or [1.0] * len(kinds))
    # a specialist that solved none of its problems has no traces: its share goes to the rest
    used_w = [w if got else 0.0 for w, got in zip(sample_w, traces, strict=True)]
    mix = weighted_mix(traces, used_w, d.traces, seed) if sum(used_w) > 0 else []
    tw = token_weights(mix, kinds, d.token_weights or None)
    models["consolidated"], _ = sft(start, mix, d, seed=seed, pad_id=tok.pad_id, weights=tw,
                                    progress=progress)
    joint_pool = [t for k in kinds for t in sets[k][0]]
    random.Random(seed).shuffle(joint_pool)
    cj = dataclasses.replace(rl_config(c, d), kinds=kinds)
    res = climb(start, tok, joint_pool, [], cj, steps=d.specialist_steps * len(kinds),
                seed=seed, name="joint RL", progress=progress, keep_model=True)
    models["joint RL"] = res.model.eval()
    if st is not None:
        save_model_file(models["consolidated"].cfg, models["consolidated"].state_dict(),
                        st.path("students", "consolidated.pt"))
    acc = {name: {k: evaluate(m, tok, held[k], cf[k], seed)["accuracy"] for k in kinds}
           for name, m in models.items()}
    return {
        "kinds": kinds, "steps": d.specialist_steps, "joint_steps": d.specialist_steps
        * len(kinds), "sample_weights": sample_w,
        "sample_weights_used": used_w, "token_weights": d.token_weights or None,
        "verified": {k: len(t) for k, t in zip(kinds, traces, strict=True)},
        "mix": trace_stats(mix), "token_share": token_share(mix, tw),
        "n_eval": len(held[kinds[0]]), "accuracy": acc}


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
    acc, kinds, n = spec["accuracy"], spec["kinds"], spec["n_eval"]
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


def load_student(run: Run, name: str = "multi_checkpoint") -> Transformer:
    """A student of stage 10 (``multi_checkpoint``, ``final_only`` or ``consolidated``)."""
    return load_model_file(require(run, STAGE).path("students", f"{name}.pt"),
                           resolve_device(run.cfg.device))
