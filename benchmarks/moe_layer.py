"""Forward+backward time of the LatentMoE layer against a dense MLP of equal active FLOPs.

    python benchmarks/moe_layer.py                      # default shape; bf16 on GPU
    python benchmarks/moe_layer.py --tokens 4096 --small  # CPU-sized

Prints one JSON object: milliseconds per forward+backward of each variant, measured in the
same run, and each one's ratio to the dense MLP. Variants: the dense SwiGLU baseline, the
LatentMoE layer with grouped GEMM, the same with the per-expert loop (the reference), and a
standard MoE (latent width = model width) with grouped GEMM.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time

import torch

from mai_repro.model.accounting import moe_layer_params
from mai_repro.model.config import ModelConfig
from mai_repro.model.moe import LatentMoE
from mai_repro.model.transformer import SwiGLU


def time_fwd_bwd(module: torch.nn.Module, x: torch.Tensor, iters: int, warmup: int) -> float:
    """Median milliseconds of forward + backward."""
    grad = torch.randn_like(x)

    def step() -> None:
        out = module(x)
        y = out[0] if isinstance(out, tuple) else out
        (y * grad).sum().backward()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if x.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_moe_layer(tokens: int = 32768, width: int = 768, experts: int = 64, top_k: int = 8,
                      expert_width: int = 384, latent_ratio: int = 4, iters: int = 20,
                      warmup: int = 5, skip_loop: bool = False, device: str | None = None
                      ) -> dict:
    """Times every variant against the dense MLP in one run; the JSON-ready result (also used
    by benchmarks/gpu_check.py). bf16 on CUDA, fp32 on CPU."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)

    base = ModelConfig(d_model=width, n_experts=experts, top_k=top_k, d_expert=expert_width,
                       d_latent=width // latent_ratio, n_heads=max(1, width // 64),
                       n_kv_heads=1)
    variants = {
        "latent_grouped": dataclasses.replace(base, moe_impl="grouped"),
        "latent_loop": dataclasses.replace(base, moe_impl="loop"),
        "standard_grouped": dataclasses.replace(base, d_latent=None, moe_impl="grouped"),
    }
    if skip_loop:
        del variants["latent_loop"]
    active = moe_layer_params(base)[1]
    dense_hidden = round(active / (3 * width))
    x = torch.randn(1, tokens, width, device=device, dtype=dtype, requires_grad=True)

    results = {"dense_mlp": time_fwd_bwd(SwiGLU(width, dense_hidden).to(device, dtype), x,
                                         iters, warmup)}
    for name, cfg in variants.items():
        layer = LatentMoE(cfg).to(device, dtype)
        results[name] = time_fwd_bwd(layer, x, iters, warmup)
    ratios = {k: v / results["dense_mlp"] for k, v in results.items()}
    # the fast path must compute what the reference computes (same weights, same input)
    fast = LatentMoE(variants["latent_grouped"]).to(device, dtype)
    ref = LatentMoE(dataclasses.replace(base, moe_impl="loop")).to(device, dtype)
    ref.load_state_dict(fast.state_dict())
    with torch.no_grad():
        diff = (fast(x)[0].float() - ref(x)[0].float()).abs().max().item()
    return {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor()
        or "cpu",
        "torch": torch.__version__, "dtype": str(dtype).replace("torch.", ""),
        "shape": {"tokens": tokens, "width": width, "experts": experts, "top_k": top_k,
                  "expert_width": expert_width, "latent_width": base.latent_dim,
                  "dense_hidden": dense_hidden},
        "active_matmul_params": active,
        "ms_fwd_bwd": {k: round(v, 3) for k, v in results.items()},
        "ratio_to_dense": {k: round(v, 3) for k, v in ratios.items()},
        "max_abs_diff_grouped_vs_loop": diff,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=32768)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--expert-width", type=int, default=384)
    p.add_argument("--latent-ratio", type=int, default=4, help="d_model / latent width")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--small", action="store_true", help="CPU-sized shape (tokens 4096)")
    p.add_argument("--skip-loop", action="store_true", help="skip the slow loop reference")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.small or device == "cpu":
        args.tokens = min(args.tokens, 4096)
        args.iters, args.warmup = min(args.iters, 5), min(args.warmup, 2)
    print(json.dumps(measure_moe_layer(args.tokens, args.width, args.experts, args.top_k,
                                       args.expert_width, args.latent_ratio, args.iters,
                                       args.warmup, args.skip_loop, device), indent=2))


if __name__ == "__main__":
    main()
