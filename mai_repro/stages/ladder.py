"""Stage ``ladder`` (notebook 05): a scaling ladder and Efficiency Gain of one-change ablations.

The MAI-Thinking-1 report decides architecture by ladders, not by one small run: a baseline is
trained at several sizes at a fixed ratio of tokens per active parameter, its loss-vs-compute
curve is fitted as ``L(C) = A * C**-alpha + E``, and a candidate reaching loss ``L'`` with
compute ``C'`` scores ``EG = f^-1(L') / C'`` (``mai_repro.train.scaling``). A choice is kept
when its EG stays on one side of 1 at every rung, since rankings can flip with scale.

Here the baseline is the preset's model (the recipe: zero-initialised attention output,
interleaved dense/LatentMoE FFNs, periodic local/global attention) shrunk to each rung's width
and depth; each ablation changes one of those choices back (:data:`ABLATIONS`). ``L`` is the
report's weighted held-out NLL (0.5 code, 0.175 STEM, 0.175 math, 0.1 general,
0.05 multilingual); ``C = 3 x forward FLOPs per token x tokens`` from the accounting.

Every run is one call of :func:`train_run` through :mod:`mai_repro.train.sweep`: parallel
processes, each finished run kept in ``ladder/runs/<key>.json``, so a killed notebook resumes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mai_repro import plots
from mai_repro.artifacts import Run, require
from mai_repro.config import resolve_device
from mai_repro.model.accounting import count_params, forward_flops_per_token
from mai_repro.model.config import ModelConfig
from mai_repro.schema import build as build_config
from mai_repro.schema import result_dict, to_dict
from mai_repro.train.config import ABLATIONS, OptimConfig, SweepConfig, report_objective
from mai_repro.train.scaling import (
    LossND,
    PowerLawFit,
    efficiency_gain,
    fit_loss_nd,
    fit_power_law,
)
from mai_repro.train.sweep import Job, effective_workers, run_sweep

STAGE = "ladder"
LABELS = {"baseline": "baseline (the recipe)", "standard_init": "standard attention init",
          "standard_moe": "standard MoE (equal active compute)",
          "all_moe": "MoE in every layer", "all_global": "all-global attention"}


def rung_model(base: ModelConfig, width: int, depth: int, head_dim: int, seq_len: int
               ) -> ModelConfig:
    """``base`` at another width and depth: FFN, expert and latent widths scale with the width,
    heads are ``width / head_dim`` with ``base``'s query-to-KV ratio (as near as divides), and
    the local window is at most half the sequence (so local and global attention differ)."""
    n_heads = width // head_dim
    kv = max(1, round(n_heads * base.n_kv_heads / base.n_heads))
    while n_heads % kv:
        kv -= 1
    scale = width / base.d_model
    return dataclasses.replace(
        base, d_model=width, n_layers=depth, n_heads=n_heads, n_kv_heads=kv, head_dim=None,
        d_ff=max(1, round(base.d_ff * scale)), d_expert=max(1, round(base.d_expert * scale)),
        d_latent=max(1, round(base.latent_dim * scale)) if base.is_latent else None,
        max_seq_len=seq_len, window=min(base.window, max(1, seq_len // 2)))


def variant(cfg: ModelConfig, name: str) -> ModelConfig:
    """The baseline, or the baseline with one recipe choice changed back (:data:`ABLATIONS`)."""
    if name == "baseline":
        return cfg
    if name == "standard_init":
        return dataclasses.replace(cfg, zero_init_attn=False)
    if name == "standard_moe":
        # experts in the full width, hidden width set so a token's MoE FLOPs stay equal:
        # latent: 2*d*lat (down and up) + k*3*lat*e  ==  standard: k*3*d*e'
        d, lat, k, e = cfg.d_model, cfg.latent_dim, cfg.top_k, cfg.d_expert
        latent_cost = (2 * d * lat if cfg.is_latent else 0) + 3 * k * lat * e
        return dataclasses.replace(cfg, d_latent=None,
                                   d_expert=max(1, round(latent_cost / (3 * k * d))))
    if name == "all_moe":
        return dataclasses.replace(cfg, ffn_layout="all_moe")
    if name == "all_global":
        return dataclasses.replace(cfg, attn_period=1)
    raise ValueError(f"unknown variant {name!r}; allowed: baseline, {', '.join(ABLATIONS)}")


def nonembedding_params(cfg: ModelConfig) -> int:
    """Active parameters without the input embedding and the output head (Kaplan's N)."""
    p = count_params(cfg)
    return p.active - p.embedding - p.head


def run_tokens(cfg: ModelConfig, sweep: SweepConfig) -> int:
    """Training tokens of a rung: the fixed ratio times its non-embedding active parameters,
    rounded up to whole steps."""
    per_step = sweep.batch_size * sweep.seq_len
    return per_step * max(1, math.ceil(sweep.tokens_per_param * nonembedding_params(cfg)
                                       / per_step))


def train_run(*, model: dict[str, Any], weights: dict[str, float], tokens: int,
              batch_size: int, seq_len: int, lr: float, warmup_frac: float, seed: int,
              shard_dir: str, eval_seqs: int, objective: dict[str, float],
              device: str = "cpu", threads: int = 0,
              optim: dict[str, Any] | None = None) -> dict[str, Any]:
    """One short pre-training run through the project's loop (AdamW and clip from ``optim``,
    the config's ``optim`` section as a dict); returns JSON-able figures: held-out NLL per
    family, the weighted ``objective``, compute, parameters, loss curve."""
    import torch

    from mai_repro.data.loader import Loader
    from mai_repro.data.shards import open_shards
    from mai_repro.model.transformer import Transformer
    from mai_repro.train.loop import eval_loss, train_lm

    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    mcfg = build_config(ModelConfig, model)
    train = {f: s.seqs for f, s in open_shards(shard_dir, "train").items()}
    held = {f: s.seqs for f, s in open_shards(shard_dir, "heldout").items()}
    shard_len = next(iter(train.values())).shape[1] - 1
    if seq_len > shard_len:
        raise ValueError(f"seq_len {seq_len} exceeds the shards' sequence length {shard_len}")
    missing = [f for f, w in objective.items() if w > 0 and not len(held.get(f, ()))]
    if missing:
        raise ValueError(f"no held-out sequences for objective families {missing}")
    loader = Loader(train, {f: w for f, w in weights.items() if w > 0}, batch_size, seed)
    steps = max(1, math.ceil(tokens / (batch_size * seq_len)))
    torch.manual_seed(seed)
    net = Transformer(mcfg)
    hist = train_lm(net, (b[:, :seq_len + 1] for b in loader), steps=steps, lr=lr,
                    warmup=round(warmup_frac * steps), optim=build_config(OptimConfig, optim),
                    device=device, progress=False)
    nll = {f: eval_loss(net, [torch.from_numpy(np.asarray(s[:eval_seqs, :seq_len + 1],
                                                          dtype=np.int64))], device)
           for f, s in held.items() if len(s)}
    total = sum(objective.values())
    tokens = steps * batch_size * seq_len
    n_points = min(steps, 25)
    curve = [float(np.mean(c)) for c in np.array_split(np.array(hist.loss), n_points)]
    return {
        "nll": nll,
        "objective": sum(w * nll[f] for f, w in objective.items() if w > 0) / total,
        "steps": steps, "tokens": tokens,
        "compute": 3.0 * forward_flops_per_token(mcfg, seq_len)["total"] * tokens,
        "params_nonembedding": nonembedding_params(mcfg),
        "params_active": count_params(mcfg).active, "params_total": count_params(mcfg).total,
        "train_loss_curve": curve, "seconds": time.perf_counter() - start,
    }


def sweep_job(key: str, mcfg: ModelConfig, weights: dict[str, float], tokens: int,
              sweep: SweepConfig, seed: int, shard_dir: Path, objective: dict[str, float],
              device: str, optim: OptimConfig) -> Job:
    """A :func:`train_run` job with the sweep's shared settings and the run's optimiser."""
    threads = max(1, (os.cpu_count() or 1) // effective_workers(sweep.workers))
    return Job(key, "mai_repro.stages.ladder:train_run", {
        "model": to_dict(mcfg), "weights": dict(weights), "tokens": tokens,
        "batch_size": sweep.batch_size, "seq_len": sweep.seq_len, "lr": sweep.lr,
        "warmup_frac": sweep.warmup_frac, "seed": seed, "shard_dir": str(shard_dir),
        "eval_seqs": sweep.eval_seqs, "objective": dict(objective), "device": device,
        "threads": threads if device == "cpu" else 0, "optim": to_dict(optim)})


def start_method(device: str) -> str | None:
    """Worker processes of a CUDA sweep must not be forked from a parent that may touch CUDA."""
    return "spawn" if device.startswith("cuda") else None


@dataclass
class FitStderr:
    A: float
    alpha: float
    E: float


@dataclass
class LadderFit:
    """The baseline's fit L(C) = A (C / c0)^-alpha + E; stderr nan when the rungs cannot tell."""

    A: float
    alpha: float
    E: float
    c0: float
    stderr: FitStderr


@dataclass
class Rung:
    width: int
    depth: int
    params_nonembedding: int
    tokens: int
    compute: float  # training FLOPs
    objective: float  # weighted held-out NLL


@dataclass
class AllocationRun:
    """A baseline run of the allocation grid: N non-embedding active parameters, D tokens."""

    width: int
    params_nonembedding: int
    tokens: int
    objective: float


@dataclass
class LadderMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Ablation names
    are keys of the dict-valued metrics; an EG that is not finite is stored as "inf"."""

    fit: LadderFit
    rungs: list[Rung]  # the baseline's rungs
    baseline_eg: list[float]  # the baseline's rungs against their own fit
    noise_band: list[float]  # [lowest, highest] of baseline_eg
    eg: dict[str, list[float]]  # ablation -> EG per rung
    sign_holds: dict[str, bool]  # EG on one side of 1 at every rung
    verdict: dict[str, str]  # the EG per rung in words
    run_seconds: float
    allocation_runs: list[AllocationRun]  # the baseline at every rung and token multiple
    loss_nd: LossND | None  # L(N, D) fitted on them; None without allocation_ratios


METRICS = LadderMetrics


@dataclass
class LadderResult:
    runs: dict[str, list[dict[str, Any]]]  # variant -> one result per rung
    fit: PowerLawFit
    eg: dict[str, list[float]]  # ablation -> EG per rung
    baseline_eg: list[float]  # the baseline's own rungs against its fit: the noise band
    sign_holds: dict[str, bool]
    figures: dict[str, Path]
    metrics: LadderMetrics

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for name, runs in self.runs.items():
            for i, r in enumerate(runs):
                rows.append({"variant": name, "rung": i, "width": r["width"],
                             "depth": r["depth"], "N (non-emb.)": r["params_nonembedding"],
                             "tokens": r["tokens"], "compute": r["compute"],
                             "objective": r["objective"],
                             "EG": self.eg[name][i] if name in self.eg else
                             self.baseline_eg[i]})
        return rows


def verdict(eg: list[float], band: tuple[float, float]) -> str:
    """How a candidate's EG per rung reads against 1 and the baseline's own scatter."""
    if all(e > 1 for e in eg):
        side = "better than the baseline at every rung"
    elif all(e < 1 for e in eg):
        side = "worse than the baseline at every rung"
    else:
        return "EG crosses 1 between rungs: the ranking flips with scale"
    beyond = all(e > band[1] for e in eg) or all(e < band[0] for e in eg)
    return side + ("" if beyond else " (but within the baseline's own scatter)")


def _figures(result: LadderResult, st: Any) -> dict[str, Path]:
    fig, axes = plots.new(1, 2, width=5.4, height=3.8)
    ax = axes[0]
    base = result.runs["baseline"]
    c = np.array([r["compute"] for r in base])
    grid = np.logspace(np.log10(c.min()) - 0.3, np.log10(c.max()) + 0.3, 100)
    f = result.fit
    ax.plot(grid, f.loss(grid), color=plots.OURS, lw=1.5,
            label=f"fit: A={f.A:.2f}, alpha={f.alpha:.2f}, E={f.E:.2f}")
    ax.axhline(f.E, color=plots.OURS, ls=":", lw=1, label="E (irreducible, fitted)")
    ax.scatter(c, [r["objective"] for r in base], color=plots.OURS, zorder=3, s=30,
               label=LABELS["baseline"])
    for name, colour in zip(result.eg, plots.PALETTE[1:], strict=False):
        runs = result.runs[name]
        ax.scatter([r["compute"] for r in runs], [r["objective"] for r in runs], s=18,
                   marker="x", color=colour, label=LABELS[name])
    ax.set(xscale="log", xlabel="training compute C (FLOPs)", ylabel="weighted held-out NLL",
           title="the baseline ladder and its fit L(C) = A C^-alpha + E")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.axhline(1.0, color="k", lw=1)
    ax.axhspan(*result.metrics.noise_band, color="grey", alpha=0.15,
               label="baseline's own scatter")
    for name, colour in zip(result.eg, plots.PALETTE[1:], strict=False):
        eg = np.array(result.eg[name], dtype=float)
        ax.plot(c, np.where(np.isfinite(eg), eg, np.nan), marker="o", color=colour,
                label=LABELS[name])
    ax.set(xscale="log", yscale="log", xlabel="rung compute C (FLOPs)",
           ylabel="Efficiency Gain f^-1(L') / C'", title="EG of each ablation per rung")
    ax.legend(fontsize=7)
    out = {"ladder": plots.save(fig, st.path("figures", "ladder_fit_and_eg"))}
    fit, grid = result.metrics.loss_nd, result.metrics.allocation_runs
    if fit is not None and grid:
        fig, ax = plots.new(1, 1, width=6, height=4)
        for w, colour in zip(sorted({g.width for g in grid}), plots.PALETTE, strict=False):
            pts = sorted((g.tokens, g.objective, g.params_nonembedding) for g in grid
                         if g.width == w)
            d = np.array([p[0] for p in pts], dtype=float)
            ax.scatter(d, [p[1] for p in pts], color=colour, s=25, zorder=3,
                       label=f"width {w}: N = {pts[0][2]:,}")
            line = np.logspace(np.log10(d.min()) - 0.2, np.log10(d.max()) + 0.2, 50)
            ax.plot(line, fit.loss(pts[0][2], line), color=colour, lw=1)
        ax.set(xscale="log", xlabel="training tokens D", ylabel="weighted held-out NLL",
               title=f"L(N, D) = {fit.E:.2f} + A N^-{fit.alpha:.2f} + B D^-{fit.beta:.2f}")
        ax.legend(fontsize=7)
        out["allocation"] = plots.save(fig, st.path("figures", "allocation_fit"))
    return out


def build(run: Run) -> LadderResult:
    """Stage ``ladder``: the baseline ladder, its fit, and EG per ablation and rung."""
    cfg, lc = run.cfg, run.cfg.ladder
    tok = require(run, "tokenizer")
    weights = json.loads(tok.path("plan.json").read_text())["weights"]
    device = resolve_device(cfg.device)
    objective = report_objective()
    with run.stage(STAGE) as st:
        st.inputs["plan"] = tok.manifest["config_hash"]
        names = ["baseline", *lc.ablations]
        jobs, meta = [], []
        for i, (w, d) in enumerate(zip(lc.widths, lc.depths, strict=True)):
            base = rung_model(cfg.model, w, d, lc.head_dim, lc.seq_len)
            tokens = run_tokens(base, lc)  # the same tokens for every variant of a rung
            for name in names:
                jobs.append(sweep_job(f"{name}-r{i}", variant(base, name), weights, tokens, lc,
                                      cfg.seed, tok.path("shards"), objective, device,
                                      cfg.optim))
                meta.append((name, i, w, d))
            # the allocation grid: the baseline at other multiples of the tokens per parameter
            for m in lc.allocation_ratios:
                more = dataclasses.replace(lc, tokens_per_param=lc.tokens_per_param * m)
                jobs.append(sweep_job(f"baseline-x{m:g}-r{i}", base, weights,
                                      run_tokens(base, more), lc, cfg.seed,
                                      tok.path("shards"), objective, device, cfg.optim))
                meta.append((f"x{m:g}", i, w, d))
        results = run_sweep(jobs, st.path("runs"), lc.workers, desc="ladder runs",
                            start_method=start_method(device))
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        grid: list[AllocationRun] = []
        for (name, _, w, d), r in zip(meta, results, strict=True):
            if name in runs:
                runs[name].append({**r, "width": w, "depth": d})
            if name == "baseline" or name.startswith("x"):
                grid.append(AllocationRun(w, r["params_nonembedding"], r["tokens"],
                                          r["objective"]))
        loss_nd = allocation_fit(grid) if lc.allocation_ratios else None
        base = runs["baseline"]
        fit = fit_power_law([r["compute"] for r in base], [r["objective"] for r in base])
        baseline_eg = [efficiency_gain(fit, r["objective"], r["compute"]) for r in base]
        finite = [e for e in baseline_eg if np.isfinite(e)]
        band = (min(finite), max(finite)) if finite else (1.0, 1.0)
        eg = {n: [efficiency_gain(fit, r["objective"], r["compute"]) for r in runs[n]]
              for n in lc.ablations}
        sign = {n: all(e > 1 for e in v) or all(e < 1 for e in v) for n, v in eg.items()}
        metrics = LadderMetrics(
            fit=LadderFit(fit.A, fit.alpha, fit.E, fit.c0, FitStderr(*fit.stderr[:3])),
            rungs=[Rung(w, d, r["params_nonembedding"], r["tokens"], r["compute"],
                        r["objective"])
                   for w, d, r in zip(lc.widths, lc.depths, base, strict=True)],
            baseline_eg=[_inf_if_nonfinite(e) for e in baseline_eg], noise_band=list(band),
            eg={n: [_inf_if_nonfinite(e) for e in v] for n, v in eg.items()},
            sign_holds=sign,
            verdict={n: verdict(v, band) for n, v in eg.items()},
            run_seconds=sum(r["seconds"] for r in results),
            allocation_runs=grid, loss_nd=loss_nd,
        )
        st.metrics.update(result_dict(metrics))  # an infinite EG is stored as "inf"
        result = LadderResult(runs, fit, eg, baseline_eg, sign, {}, metrics)
        result.figures = _figures(result, st)
    return result


def allocation_fit(grid: list[AllocationRun]) -> LossND | None:
    """L(N, D) over the allocation grid, or None where the fit cannot be made (too few runs,
    or curve_fit failing on them: the notebook then says so)."""
    try:
        return fit_loss_nd(np.array([g.params_nonembedding for g in grid]),
                           np.array([g.tokens for g in grid]),
                           np.array([g.objective for g in grid]))
    except (ValueError, RuntimeError):
        return None


def _inf_if_nonfinite(x: float) -> float:
    """An EG that is not finite (the candidate beats the fit's floor E) counts as infinite."""
    return x if np.isfinite(x) else math.inf
