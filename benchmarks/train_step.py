"""Training-step throughput and MFU: the gpu preset's MoE model vs a dense model with the same
active parameters, measured in the same run.

    python benchmarks/train_step.py [--preset gpu] [--batch 8] [--compile] [--profile 3]
    python benchmarks/train_step.py --preset smoke --batch 2     # CPU-sized
    python benchmarks/train_step.py --device cpu [--preset laptop]  # CPU attempts vs baseline

One step = forward, backward and AdamW update, bf16 autocast on GPU (fp32 weights). MFU =
(3 x forward FLOPs per token from mai_repro.model.accounting) x tokens/s / peak, with the peak
given by --peak-tflops (H100 SXM dense BF16: 989). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from mai_repro import config
from mai_repro.model.accounting import count_params, forward_flops_per_token
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.train.loop import lm_step, make_optimizer


def dense_twin(cfg: ModelConfig) -> ModelConfig:
    """All-dense config whose FFN width gives the MoE model's active parameter count."""
    moe = count_params(cfg)
    base = count_params(dataclasses.replace(cfg, ffn_layout="all_dense", d_ff=1))
    ffn_active = moe.active - (base.total - base.dense_ffn)
    d_ff = max(1, round(ffn_active / (cfg.n_layers * 3 * cfg.d_model)))
    return dataclasses.replace(cfg, ffn_layout="all_dense", d_ff=d_ff)


def autocast(device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (fp32 master weights), nothing on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else \
        contextlib.nullcontext()


def make_step(cfg: ModelConfig, batch: int, seq: int, device: str, compile_: bool
              ) -> tuple[Callable[[], None], Transformer]:
    """A closure running one optimizer step of a fresh model of ``cfg`` on a fixed random
    batch, and the model (for its parameter count; reused by benchmarks/gpu_check.py)."""
    torch.manual_seed(0)
    model = Transformer(cfg).to(device)
    opt = make_optimizer(model, 1e-4)
    fwd = torch.compile(model) if compile_ else model
    data = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)

    def step() -> None:
        with autocast(device):
            lm_step(fwd, opt, data)  # the library's one step (MoE balancing included)

    return step, model


def profile_step(step: Callable[[], None], steps: int, device: str, top: int = 25
                 ) -> list[dict]:
    """The ``top`` kernels (CUDA) or operators (CPU) by self time over ``steps`` steps, from
    torch.profiler: name, milliseconds per step, calls per step."""
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device == "cuda"
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        if on_cuda:
            torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if on_cuda:
            if e.device_type != torch.autograd.DeviceType.CUDA:
                continue
            us = getattr(e, "self_device_time_total", None) or e.self_cuda_time_total
        else:
            us = e.self_cpu_time_total
        if us > 0:
            rows.append({"name": e.key[:160], "ms_per_step": us / 1e3 / steps,
                         "calls_per_step": e.count / steps})
    rows.sort(key=lambda r: -r["ms_per_step"])
    return [{**r, "ms_per_step": round(r["ms_per_step"], 4)} for r in rows[:top]]


def measure(cfg: ModelConfig, batch: int, seq: int, device: str, steps: int, warmup: int,
            compile_: bool, peak: float, profile_steps: int = 0) -> dict:
    """Median step time, tokens/s, MFU and peak memory; with ``profile_steps``, also the top
    kernels of that many more steps of the same (already warm) model."""
    step, _ = make_step(cfg, batch, seq, device, compile_)
    times = []
    for i in range(warmup + steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tokens_s = batch * seq / step_s
    flops_tok = 3 * forward_flops_per_token(cfg, seq)["total"]
    p = count_params(cfg)
    out = {"step_ms": round(step_s * 1e3, 2), "tokens_per_s": round(tokens_s),
           "mfu": round(flops_tok * tokens_s / peak, 4), "active_params": p.active,
           "total_params": p.total,
           "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)
           if device == "cuda" else None}
    if profile_steps:
        out["profile"] = profile_step(step, profile_steps, device)
    return out


def measure_pair(moe_cfg: ModelConfig, batch: int, seq: int, device: str, steps: int,
                 warmup: int, compile_: bool, peak: float, profile_steps: int = 0) -> dict:
    """The MoE model and its dense twin, measured in the same run; one JSON-ready dict."""
    moe_cfg = dataclasses.replace(moe_cfg, max_seq_len=seq)
    dense_cfg = dense_twin(moe_cfg)
    results = {}
    for name, c in (("dense", dense_cfg), ("moe", moe_cfg)):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        results[name] = measure(c, batch, seq, device, steps, warmup, compile_, peak,
                                profile_steps)
    return {"compile": compile_, "batch": batch, "seq": seq, "dense_d_ff": dense_cfg.d_ff,
            "attn_impl": moe_cfg.attn_impl, "results": results,
            "moe_over_dense_tokens_per_s": round(results["moe"]["tokens_per_s"]
                                                 / results["dense"]["tokens_per_s"], 3)}


# -- CPU: the laptop model's step, one attempt at a time against the same-run baseline ---------

def matmul_peak(dtype: torch.dtype, n: int = 1024, rounds: int = 5) -> float:
    """Best-of-``rounds`` FLOP/s of an n x n x n matmul in ``dtype`` on this CPU (the peak the
    achieved FLOP/s are set against; bf16 uses AVX-512 BF16 / AMX where the CPU has them)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, time.perf_counter() - t0)
    return 4 * 2 * n**3 / best


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One way of running the laptop model's training step on CPU."""

    name: str
    batch: int
    bf16: bool = False  # torch.autocast("cpu", bfloat16) around forward and backward
    optimizer: str = "default"  # AdamW implementation: default (for-loop on CPU), foreach, fused
    compile: bool = False
    threads: int = 0  # 0 = torch's default (one per core)


CPU_ATTEMPTS = (
    Attempt("baseline (today: fp32, AdamW default, batch 16)", 16),
    Attempt("bf16 autocast", 16, bf16=True),
    Attempt("AdamW foreach", 16, optimizer="foreach"),
    Attempt("AdamW fused", 16, optimizer="fused"),
    Attempt("torch.compile", 16, compile=True),
    Attempt("1 thread", 16, threads=1),
    Attempt("batch 32", 32),
    Attempt("batch 64", 64),
    Attempt("batch 32, AdamW foreach", 32, optimizer="foreach"),
    Attempt("batch 32, bf16, AdamW foreach", 32, bf16=True, optimizer="foreach"),
    Attempt("batch 32, compile, AdamW foreach", 32, compile=True, optimizer="foreach"),
)


def cpu_step(cfg: ModelConfig, a: Attempt, seq: int) -> Callable[[], None]:
    """One optimizer step of a fresh model under attempt ``a`` on a fixed random batch."""
    torch.manual_seed(0)
    model = Transformer(cfg)
    opt = make_optimizer(model, 1e-4)
    if a.optimizer != "default":  # the same AdamW, another implementation of its update
        for group in opt.param_groups:
            group[a.optimizer] = True
    fwd = torch.compile(model) if a.compile else model
    data = torch.randint(0, cfg.vocab_size, (a.batch, seq + 1))
    amp = (torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16
           else contextlib.nullcontext())

    def step() -> None:
        with amp:
            lm_step(fwd, opt, data)
    return step


def cpu_attempts(cfg: ModelConfig, seq: int, steps: int, warmup: int,
                 attempts: tuple[Attempt, ...] = CPU_ATTEMPTS) -> dict:
    """tokens/s of every attempt, its ratio to the baseline (the first attempt) measured in the
    same run, and the achieved FLOP/s against this CPU's fp32 and bf16 matmul peaks.

    The attempts are interleaved: each round times one step of every attempt in turn, and an
    attempt's figure is its median over the rounds, so a change of load on a shared machine
    moves every attempt alike instead of whichever ran at that moment."""
    cfg = dataclasses.replace(cfg, max_seq_len=seq)
    default_threads = torch.get_num_threads()
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    flops_tok = 3 * forward_flops_per_token(cfg, seq)["total"]
    fns: dict[str, Callable[[], None]] = {}
    errors: dict[str, str] = {}
    times: dict[str, list[float]] = {a.name: [] for a in attempts}
    for a in attempts:
        try:
            fns[a.name] = cpu_step(cfg, a, seq)
        except Exception as e:  # an attempt that cannot run here is a result too
            errors[a.name] = f"{type(e).__name__}: {e}"[:300]
    for r in range(warmup + steps):
        for a in attempts:
            if a.name in errors:
                continue
            torch.set_num_threads(a.threads or default_threads)
            try:
                t0 = time.perf_counter()
                fns[a.name]()
                if r >= warmup:
                    times[a.name].append(time.perf_counter() - t0)
            except Exception as e:
                errors[a.name] = f"{type(e).__name__}: {e}"[:300]
            finally:
                torch.set_num_threads(default_threads)
        print(f"round {r + 1}/{warmup + steps}", file=sys.stderr, flush=True)
    rows = []
    for a in attempts:
        if a.name in errors:
            rows.append({**dataclasses.asdict(a), "error": errors[a.name]})
            continue
        tok_s = a.batch * seq / statistics.median(times[a.name])
        flop_s = flops_tok * tok_s
        peak = peaks["bf16" if a.bf16 else "fp32"]
        rows.append({**dataclasses.asdict(a), "tokens_per_s": round(tok_s),
                     "achieved_gflop_s": round(flop_s / 1e9, 2),
                     "share_of_matmul_peak": round(flop_s / peak, 4)})
    base = rows[0]["tokens_per_s"]
    for row in rows:
        if "tokens_per_s" in row:
            row["ratio_to_baseline"] = round(row["tokens_per_s"] / base, 3)
    p = count_params(cfg)
    return {"seq": seq, "threads": default_threads, "active_params": p.active,
            "total_params": p.total, "flops_per_token_train": flops_tok,
            "matmul_peak_gflop_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
            "attempts": rows}

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=None, help="default: the preset's seq_len")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--profile", type=int, default=0, metavar="STEPS",
                    help="also list the top kernels of this many profiled steps")
    ap.add_argument("--device", choices=("auto", "cpu"), default="auto",
                    help="cpu: the preset's model (default laptop) under each CPU attempt "
                         "(bf16, compile, AdamW variants, threads, batch) against the baseline")
    args = ap.parse_args()
    if args.device == "cpu":
        preset = "laptop" if args.preset == "gpu" else args.preset
        cfg = config.load(preset, device="cpu")
        out = cpu_attempts(cfg.model, args.seq or cfg.pretrain.seq_len, args.steps, args.warmup)
        print(json.dumps({"device": "cpu", "torch": torch.__version__, "preset": preset,
                          **out}, indent=2))
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = config.load(args.preset, device=device)
    seq = args.seq or cfg.pretrain.seq_len
    pair = measure_pair(cfg.model, args.batch, seq, device, args.steps, args.warmup,
                        args.compile, args.peak_tflops * 1e12, args.profile)
    print(json.dumps({
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__, "preset": args.preset, **pair}, indent=2))


if __name__ == "__main__":
    main()
