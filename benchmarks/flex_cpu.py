"""Flex attention vs masked SDPA on CPU for the laptop model's local layer (issue 21, item 5).

    python benchmarks/flex_cpu.py [--preset laptop] [--lengths 256,1024,4096] [--iters 10]

Forward only, without gradients: torch's flex attention has no backward on CPU (2.13), so on
CPU it could serve only evaluation and recomputation, never training. For each length: the
local attention layer (projections, RoPE, attention, output) of the preset's model with
``attn_impl=sdpa`` (boolean mask; blocks past 4 windows) and ``attn_impl=flex`` (compiled
kernel where this machine compiles it, which the JSON says), same weights, median
milliseconds, the ratio sdpa / flex (> 1: flex faster) and the largest difference of outputs.
Prints one JSON object. The CPU default (``auto`` -> sdpa) changes only if flex is faster and
identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time

import torch

from mai_repro import config
from mai_repro.model import flex
from mai_repro.model.attention import Attention


def median_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def compare(cfg, batch: int, length: int, iters: int, warmup: int) -> dict:
    torch.manual_seed(0)
    sdpa = Attention(dataclasses.replace(cfg, attn_impl="sdpa"), layer=0)
    fl = Attention(dataclasses.replace(cfg, attn_impl="flex"), layer=0)
    fl.load_state_dict(sdpa.state_dict())
    torch.nn.init.normal_(sdpa.o.weight, std=0.02)  # not the zero init: compare real outputs
    fl.o.weight.copy_(sdpa.o.weight)
    x, pos = torch.randn(batch, length, cfg.d_model), torch.arange(length)
    diff = (sdpa(x, pos) - fl(x, pos)).abs().max().item()
    ms = {"sdpa": median_ms(lambda: sdpa(x, pos), iters, warmup),
          "flex": median_ms(lambda: fl(x, pos), iters, warmup)}
    return {"batch": batch, "length": length,
            "sdpa_path": "blocks" if length > 4 * cfg.window else "dense mask",
            "ms": {k: round(v, 3) for k, v in ms.items()},
            "sdpa_over_flex": round(ms["sdpa"] / ms["flex"], 3), "max_abs_diff": diff}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--lengths", default="256,1024,4096",
                    help="sequence lengths (laptop: 256 pre-training, 1024 and 4096 mid-training)")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per call (batch = this / "
                                                             "length, at least 1)")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    cfg = config.load(args.preset, device="cpu").model
    rows = [compare(cfg, max(1, args.tokens // n), n, args.iters, args.warmup)
            for n in (int(x) for x in args.lengths.split(","))]
    print(json.dumps({
        "device": platform.processor() or "cpu", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "preset": args.preset,
        "layer": {"d_model": cfg.d_model, "heads": cfg.n_heads, "kv_heads": cfg.n_kv_heads,
                  "head_dim": cfg.head_dim_, "window": cfg.window},
        "flex_compiled": flex._compiled.get("cpu") is not None,
        "results": rows,
        "flex_faster_everywhere": all(r["sdpa_over_flex"] > 1 for r in rows),
        "identical_within_1e-5": all(r["max_abs_diff"] <= 1e-5 for r in rows),
    }, indent=2))


if __name__ == "__main__":
    main()
