"""Stage ``architecture`` (notebook 04): the model's anatomy and the zero-init experiment.

The MAI-Thinking-1 report initialises the attention output projection at zero: at init the
network is a stack of FFNs and token mixing switches on gradually. Its argument: with random
init, attention averages over tokens, so the hidden states that reach the next MoE layer are
less diverse, and routing is less balanced. We measure both links of that argument on two
short runs that differ only in that init:

- token diversity at the MoE inputs: mean pairwise cosine similarity of the hidden states of
  one sequence (higher = less diverse);
- routing balance: the coefficient of variation of the token-slots per expert (0 = equal).

The runs train byte-level versions of the preset's model on CPython's standard library
(PSF-2.0, human-written, installed with Python), so this notebook depends on no other stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mai_repro import plots
from mai_repro.artifacts import Run
from mai_repro.config import resolve_device
from mai_repro.data import bytelevel
from mai_repro.model.accounting import (
    attention_params,
    count_params,
    dense_ffn_params,
    forward_flops_per_token,
    moe_layer_params,
)
from mai_repro.model.config import ModelConfig
from mai_repro.model.moe import load_cv
from mai_repro.model.transformer import Transformer
from mai_repro.schema import result_dict
from mai_repro.train.config import OptimConfig
from mai_repro.train.loop import Schedule, lm_step, make_optimizer


def layer_table(cfg: ModelConfig) -> list[dict[str, Any]]:
    rows = []
    for i in range(cfg.n_layers):
        moe = cfg.is_moe(i)
        ffn = moe_layer_params(cfg)[0] if moe else dense_ffn_params(cfg)
        rows.append({
            "layer": i,
            "attention": "global, NoPE" if cfg.is_global(i) else
            f"local, window {cfg.window}, RoPE",
            "FFN": (f"LatentMoE {cfg.n_experts}x{cfg.d_expert} top-{cfg.top_k}, latent "
                    f"{cfg.latent_dim}" if cfg.is_latent else
                    f"MoE {cfg.n_experts}x{cfg.d_expert} top-{cfg.top_k}") if moe else
            f"dense SwiGLU {cfg.d_ff}",
            "params": attention_params(cfg) + ffn + 2 * cfg.d_model,
        })
    return rows


@torch.no_grad()
def moe_input_similarity(model: Transformer, batch: torch.Tensor) -> float:
    """Mean pairwise cosine similarity of the hidden states entering each MoE layer."""
    captured: list[torch.Tensor] = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: captured.append(args[0]))
             for m in model.moe_layers]
    try:
        model.eval()
        model(batch)
    finally:
        for h in hooks:
            h.remove()
    sims = []
    for h in captured:  # (B, T, d)
        h = torch.nn.functional.normalize(h.float(), dim=-1)
        gram = h @ h.transpose(1, 2)
        T = gram.shape[-1]
        sims.append(((gram.sum((1, 2)) - T) / (T * (T - 1))).mean().item())
    return float(np.mean(sims)) if sims else float("nan")


@dataclass
class ProbeRun:
    name: str
    steps: list[int]
    load_cv: list[float]
    similarity: list[float]
    loss: list[float]
    load_init: np.ndarray  # (layers, experts) at step 0
    load_final: np.ndarray


def run_probe(cfg: ModelConfig, zero_init: bool, texts: list[str], probe, seed: int,
              device: str, progress: bool = True, optim: OptimConfig | None = None
              ) -> ProbeRun:
    from tqdm.auto import tqdm

    mcfg = dataclasses.replace(cfg, vocab_size=bytelevel.BYTE_VOCAB, zero_init_attn=zero_init,
                               max_seq_len=probe.seq_len)
    torch.manual_seed(seed)
    model = Transformer(mcfg).to(device)
    optim = optim or OptimConfig()
    opt = make_optimizer(model, probe.lr, optim)
    data = bytelevel.batches(texts, probe.seq_len + 1, probe.batch_size, seed)
    probe_batch = next(bytelevel.batches(texts, probe.seq_len, 32, seed + 10_000)).to(device)
    run = ProbeRun("zero-init" if zero_init else "standard init", [], [], [], [], None, None)

    def record(step: int) -> None:
        run.similarity.append(moe_input_similarity(model, probe_batch))  # also sets the load
        load = model.expert_load()
        run.load_cv.append(load_cv(load))
        run.steps.append(step)
        if run.load_init is None:
            run.load_init = load.numpy()
        run.load_final = load.numpy()

    record(0)
    schedule = Schedule(probe.lr, warmup=max(1, probe.steps // 10), total=probe.steps,
                        min_ratio=optim.min_lr_ratio)
    for step in tqdm(range(probe.steps), desc=run.name, disable=not progress, leave=False):
        loss, _ = lm_step(model, opt, next(data).to(device), lr=schedule(step),
                          grad_clip=optim.grad_clip)
        run.loss.append(loss)
        if (step + 1) % probe.record_every == 0 or step + 1 == probe.steps:
            record(step + 1)
    return run


def time_fwd_bwd(cfg: ModelConfig, seq_len: int, batch: int, device: str, reps: int = 3
                 ) -> float:
    """Milliseconds of one forward+backward (median of ``reps``), for cost comparisons."""
    torch.manual_seed(0)
    model = Transformer(dataclasses.replace(cfg, vocab_size=bytelevel.BYTE_VOCAB)).to(device)
    x = torch.randint(0, bytelevel.BYTE_VOCAB, (batch, seq_len), device=device)
    times = []
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        model(x).logits.float().mean().backward()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[1:]))


STAGE = "architecture"


@dataclass
class ArchitectureMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. ``zero``:
    zero-initialised attention output; ``standard``: random init (or a standard MoE)."""

    total_params: int
    active_params: int
    flops_per_token_latent: float  # forward FLOPs per token with LatentMoE
    flops_per_token_standard_moe: float  # ... with a standard MoE of the same active compute
    load_cv_init_zero: float  # expert-load CV at init
    load_cv_init_standard: float
    load_cv_final_zero: float
    load_cv_final_standard: float
    similarity_init_zero: float  # MoE-input mean pairwise cosine at init
    similarity_init_standard: float
    loss_final_zero: float  # mean of the probe run's last 5 losses
    loss_final_standard: float
    fwd_bwd_ms_latent: float
    fwd_bwd_ms_standard_moe: float
    corpus_files: int
    corpus_bytes: int


METRICS = ArchitectureMetrics


@dataclass
class ArchitectureResult:
    layers: list[dict[str, Any]]
    params: Any
    flops: dict[str, dict[str, float]]
    runs: dict[str, ProbeRun]
    cost: dict[str, float]
    figures: dict[str, Any]
    metrics: ArchitectureMetrics


def _figures(runs: dict[str, ProbeRun], st) -> dict[str, Any]:
    fig, axes = plots.new(1, 3, width=4.6, height=3.4)
    for (name, r), colour in zip(runs.items(), (plots.OURS, plots.PALETTE[1]), strict=True):
        axes[0].plot(r.steps, r.load_cv, marker="o", ms=3, label=name, color=colour)
        axes[1].plot(r.steps, r.similarity, marker="o", ms=3, label=name, color=colour)
        axes[2].plot(np.arange(1, len(r.loss) + 1), r.loss, label=name, color=colour, lw=1)
    axes[0].set(title="routing imbalance (CV of expert load)", xlabel="step",
                ylabel="std / mean of token-slots")
    axes[1].set(title="MoE-input similarity", xlabel="step", ylabel="mean pairwise cosine")
    axes[2].set(title="training loss (bytes)", xlabel="step", ylabel="nats per byte")
    axes[0].legend()
    curves = plots.save(fig, st.path("figures", "zero_init_runs"))
    fig, axes = plots.new(1, 2, width=4.4, height=3.0)
    for ax, (name, r) in zip(axes, runs.items(), strict=True):
        share = r.load_init / r.load_init.sum(1, keepdims=True)
        im = ax.imshow(share, aspect="auto", cmap="viridis", vmin=0)
        ax.set(title=f"expert load at init: {name}", xlabel="expert", ylabel="MoE layer")
        ax.grid(False)
        fig.colorbar(im, ax=ax, label="share of token-slots")
    heat = plots.save(fig, st.path("figures", "expert_load_at_init"))
    return {"runs": curves, "load_at_init": heat}


def build(run: Run) -> ArchitectureResult:
    cfg, probe = run.cfg.model, run.cfg.probe
    device = resolve_device(run.cfg.device)
    with run.stage(STAGE) as st:
        sources = bytelevel.stdlib_sources(probe.corpus_bytes)
        texts = [t for _, t in sources]
        st.inputs["stdlib_sources"] = hashlib.sha256(
            "".join(n + "\0" + t for n, t in sources).encode()).hexdigest()
        standard = dataclasses.replace(cfg, d_latent=None)
        flops = {"latent": forward_flops_per_token(cfg, cfg.max_seq_len),
                 "standard": forward_flops_per_token(standard, cfg.max_seq_len)}
        runs = {r.name: r for r in (
            run_probe(cfg, True, texts, probe, run.cfg.seed, device, optim=run.cfg.optim),
            run_probe(cfg, False, texts, probe, run.cfg.seed, device, optim=run.cfg.optim))}
        cost = {"latent_ms": time_fwd_bwd(cfg, probe.seq_len, probe.batch_size, device),
                "standard_ms": time_fwd_bwd(standard, probe.seq_len, probe.batch_size, device)}
        figures = _figures(runs, st)
        z, s = runs["zero-init"], runs["standard init"]
        metrics = ArchitectureMetrics(
            total_params=count_params(cfg).total, active_params=count_params(cfg).active,
            flops_per_token_latent=flops["latent"]["total"],
            flops_per_token_standard_moe=flops["standard"]["total"],
            load_cv_init_zero=z.load_cv[0], load_cv_init_standard=s.load_cv[0],
            load_cv_final_zero=z.load_cv[-1], load_cv_final_standard=s.load_cv[-1],
            similarity_init_zero=z.similarity[0],
            similarity_init_standard=s.similarity[0],
            loss_final_zero=float(np.mean(z.loss[-5:])),
            loss_final_standard=float(np.mean(s.loss[-5:])),
            fwd_bwd_ms_latent=cost["latent_ms"], fwd_bwd_ms_standard_moe=cost["standard_ms"],
            corpus_files=len(sources), corpus_bytes=sum(len(t) for t in texts),
        )
        st.metrics.update(result_dict(metrics))
    return ArchitectureResult(layer_table(cfg), count_params(cfg), flops, runs, cost, figures,
                              metrics)
