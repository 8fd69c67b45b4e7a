"""The one prepared device check of the gpu path (issue 21): one command, one JSON, one log.

    python benchmarks/gpu_check.py OUT_DIR            # on one H100/H200: at most ~8 minutes
    python benchmarks/gpu_check.py OUT_DIR --dry      # on CPU, tiny shapes, a minute or two
    bash benchmarks/gpu_check.sh OUT_DIR [--dry]      # the same, as the device tool calls it

Writes ``OUT_DIR/gpu_check.json`` (rewritten after every section, so a run cut short still
leaves what it measured) and ``OUT_DIR/gpu_check.log``. Sections, in order of what matters:

1. ``environment``: device, torch, CUDA, flex attention, papermill; the dense bf16 peak used for
   MFU and a measured bf16 matmul rate (the ceiling this card reaches).
2. ``attention``: the local layer's flex path against masked SDPA at the gpu preset's shape:
   values and gradients (fp32 and bf16), and forward+backward time of flex, masked SDPA and
   SDPA causal (the flash kernel; a lower bound that ignores the window).
3. ``train_step``: the gpu-preset MoE model and its dense twin, compiled, bf16: tokens/s, MFU,
   peak memory, and the top kernels of a profiled step grouped into attention / grouped GEMM /
   dispatch-permute / optimizer / dense GEMM / loss / other (benchmarks/train_step.py's functions);
   then the MoE model with the masked-SDPA local layers, to show what flex changed.
4. ``moe_layer``: grouped vs loop vs dense MLP (benchmarks/moe_layer.py's function).
5. ``rollouts``: KV-cached sampling vs recomputation at the gpu preset's GRPO lengths.
6. ``notebooks``: every notebook at the gpu preset with its steps cut by ``-p`` overrides
   (:data:`GPU_CUTS`), one ``mai_repro.pipeline`` process each, in the time left; skipped with a
   note when papermill or ipykernel is missing (docs/performance.md says how to carry them).

Nothing is installed and nothing is downloaded. ``--dry`` runs the same sections on CPU at the
smoke preset's shapes and runs notebook 00 only, so the keys of the JSON are the same.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package
import moe_layer  # noqa: E402
import train_step  # noqa: E402

from mai_repro import config  # noqa: E402
from mai_repro.model import flex  # noqa: E402
from mai_repro.model.attention import attention_mask  # noqa: E402
from mai_repro.model.generation import generate  # noqa: E402
from mai_repro.model.transformer import Transformer  # noqa: E402

log = logging.getLogger("gpu_check")

# Dense BF16 peak of the SXM parts by the vendor's datasheets (TFLOP/s), for MFU.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "B200": 2250.0,
                    "GB200": 2500.0}

# Every notebook at the gpu preset (model, lengths, bf16, compile, flex attention, checkpoints
# unchanged) with the amount of work cut to about the smoke preset's, and the smoke preset's
# relaxed thresholds where a claim cannot show in so few steps. Checked against the config
# schema in --dry, so a renamed key fails on CPU before it costs device time.
GPU_CUTS: dict[str, Any] = {
    "curation.max_docs_per_source": 40, "curation.detector_steps": 40,
    "curation.detector_eval_docs": 16,
    "wiki.max_pages": 40,
    "probe.steps": 20, "probe.corpus_bytes": 300_000,
    "ladder.widths": [64, 128, 192], "ladder.depths": [2, 2, 2],
    "ladder.tokens_per_param": 0.5, "ladder.seq_len": 256, "ladder.eval_seqs": 8,
    "mixsearch.n_mixtures": 5, "mixsearch.widths": [64, 128], "mixsearch.depths": [2, 2],
    "mixsearch.tokens_per_param": 0.5, "mixsearch.seq_len": 256, "mixsearch.eval_seqs": 8,
    "mixsearch.n_boot": 200,
    "pretrain.steps": 40, "pretrain.batch_size": 16, "pretrain.warmup_steps": 4,
    "pretrain.eval_every": 10, "pretrain.eval_seqs": 8, "pretrain.ckpt_every": 10,
    "pretrain.faults": "", "pretrain.bad_batches": "25,32-34", "pretrain.spike_window": 10,
    "midtrain.contexts": [4096, 8192], "midtrain.steps": [3, 2],
    "midtrain.tokens_per_step": 16384, "midtrain.warmup_steps": 1, "midtrain.eval_seqs": 4,
    "midtrain.probe_depths": [0.25, 0.75], "midtrain.probe_trials": 4,
    "midtrain.compare": ["pi"], "midtrain.min_gain": -0.1,
    "grpo.kinds": ["arithmetic"], "grpo.difficulties": [0], "grpo.eval_difficulty": 0,
    "grpo.n_train": 100, "grpo.n_eval": 16, "grpo.eval_every": 10, "grpo.steps": 20,
    "grpo.problems": 8, "grpo.group": 8, "grpo.group_early": 4, "grpo.max_new_tokens": 16,
    "grpo.curriculum_stages": 1, "grpo.ablation_steps": 5, "grpo.checkpoint_every": 10,
    "grpo.min_gain": 0.0,
    "distill.checkpoints": 2, "distill.trace_samples": 4, "distill.traces": 32,
    "distill.sft_steps": 10, "distill.sft_batch": 16, "distill.rl_steps": 6,
    "distill.specialists": ["arithmetic", "linear"], "distill.specialist_steps": 6,
    "distill.sample_weights": [], "distill.token_weights": [],
    "collapse.generations": 2, "collapse.n_seqs": 32, "collapse.steps": 25,
    "collapse.eval_seqs": 16,
}
SECTIONS = ["environment", "attention", "train_step", "moe_layer", "rollouts", "notebooks"]
NOTEBOOKS = [f"{n:02d}" for n in range(13)]
DRY_NOTEBOOKS = ["00"]

KERNEL_GROUPS = [  # first match wins: grouped GEMM before dense GEMM, whose names overlap
    ("loss", ("log_softmax", "logsoftmax", "nll_loss", "cross_entropy")),
    ("attention", ("flash", "fmha", "attention", "flex", "sdpa", "softmax")),
    ("grouped GEMM", ("grouped", "group_gemm", "groupgemm")),
    ("dispatch/permute", ("index", "gather", "scatter", "sort", "radix", "cumsum", "bincount",
                          "histc", "permute", "unique", "topk")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("dense GEMM", ("gemm", "nvjet", "xmma", "cublas", "cutlass", "aten::mm", "aten::addmm",
                    "aten::bmm", "matmul")),
]


def kernel_group(name: str) -> str:
    low = name.lower()
    for group, needles in KERNEL_GROUPS:
        if any(n in low for n in needles):
            return group
    return "other"


def group_profile(rows: list[dict]) -> dict[str, float]:
    """Share of the profiled time per kernel group (over the top kernels listed)."""
    total = sum(r["ms_per_step"] for r in rows) or 1.0
    shares: dict[str, float] = {}
    for r in rows:
        g = kernel_group(r["name"])
        shares[g] = shares.get(g, 0.0) + r["ms_per_step"] / total
    return {g: round(v, 3) for g, v in sorted(shares.items(), key=lambda kv: -kv[1])}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], Any], iters: int, warmup: int, device: str) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


# -- the sections --------------------------------------------------------------------------

def environment(device: str, peak_arg: float | None) -> dict:
    name = torch.cuda.get_device_name() if device == "cuda" else (platform.processor() or "cpu")
    n = 8192 if device == "cuda" else 512
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    ms = median_ms(lambda: a @ b, 10, 3, device)
    measured = 2 * n ** 3 / (ms / 1e3) / 1e12
    table = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    peak, source = (peak_arg, "--peak-tflops") if peak_arg else \
        (table, "datasheet dense bf16") if table else (measured, "measured matmul (no datasheet)")
    missing = [m for m in ("papermill", "ipykernel", "nbformat")
               if importlib.util.find_spec(m) is None]
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "cpus": os.cpu_count(),
            "flex_attention": flex.flex_available(),
            "flex_cpu_backward": flex.cpu_backward_supported(),
            "triton": importlib.util.find_spec("triton") is not None,
            "notebook_packages_missing": missing,
            "peak_tflops": float(f"{peak:.4g}"), "peak_source": source,
            "matmul_tflops_measured": float(f"{measured:.4g}"),
            "matmul_shape": f"{n}^3 {str(dtype).replace('torch.', '')}"}


def attention(cfg: config.Config, device: str, dry: bool) -> dict:
    """Flex vs masked SDPA for one local layer at the preset's shape."""
    m = cfg.model
    B, T = (1, 200) if dry else (2, cfg.pretrain.seq_len)  # dry: off the 128 block
    H, Hkv, D, W = m.n_heads, m.n_kv_heads, m.head_dim_, m.window
    grads = device == "cuda" or flex.cpu_backward_supported()
    pos = torch.arange(T, device=device)
    mask = attention_mask(pos, pos, W)
    bmask = flex.window_block_mask(T, T, W, torch.device(device))

    def masked(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def causal(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def flexed(q, k, v):
        return flex.flex_window_attention(q, k, v, W, bmask)

    def inputs(dtype, seed=0):
        g = torch.Generator().manual_seed(seed)
        return [torch.randn(B, h, T, D, generator=g).to(device, dtype).requires_grad_(grads)
                for h in (H, Hkv, Hkv)]

    def run(fn, q, k, v, grad_out):
        y = fn(q, k, v)
        if not grads:
            return [y.detach().float()]
        return [y.detach().float()] + [g.float() for g in
                                       torch.autograd.grad((y * grad_out).sum(), (q, k, v))]

    out: dict[str, Any] = {"shape": {"batch": B, "heads": H, "kv_heads": Hkv, "length": T,
                                     "head_dim": D, "window": W},
                           "gradients_checked": grads}
    dtypes = [torch.float32] + ([torch.bfloat16] if device == "cuda" else [])
    for dtype in dtypes:
        q, k, v = inputs(dtype)
        grad_out = torch.randn(B, H, T, D, device=device, dtype=dtype)
        ref, got = run(masked, q, k, v, grad_out), run(flexed, q, k, v, grad_out)
        key = str(dtype).replace("torch.", "")
        out[f"max_abs_diff_{key}"] = {n: (a - b).abs().max().item() for n, a, b in
                                      zip(("out", "dq", "dk", "dv"), got, ref, strict=False)}
    out["flex_compiled"] = flex._compiled.get(torch.device(device).type) is not None
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    q, k, v = inputs(dtype)
    grad_out = torch.randn(B, H, T, D, device=device, dtype=dtype)
    iters, warm = (3, 1) if dry else (20, 5)
    out["ms_fwd_bwd" if grads else "ms_fwd"] = ms = {
        n: median_ms(lambda fn=fn: run(fn, q, k, v, grad_out), iters, warm, device)
        for n, fn in (("flex", flexed), ("sdpa_masked", masked), ("sdpa_causal", causal))}
    out["sdpa_masked_over_flex"] = round(ms["sdpa_masked"] / ms["flex"], 3)
    return out


def train(cfg: config.Config, device: str, dry: bool, peak: float, deadline: float) -> dict:
    """The gpu-preset model and its dense twin (flex local layers), then the MoE model with
    masked-SDPA local layers if time is left: what the flex path changed."""
    batch, seq = (2, cfg.pretrain.seq_len) if dry else (8, cfg.pretrain.seq_len)
    steps, warmup, prof = (2, 1, 1) if dry else (10, 3, 3)
    compile_ = not dry
    out = train_step.measure_pair(cfg.model, batch, seq, device, steps, warmup, compile_,
                                  peak * 1e12, prof)
    for r in out["results"].values():
        r["profile_groups"] = group_profile(r["profile"])
        for row in r["profile"]:
            row["group"] = kernel_group(row["name"])
    if time.time() < deadline:
        moe_sdpa = dataclasses.replace(cfg.model, attn_impl="sdpa", max_seq_len=seq)
        out["moe_sdpa_local"] = train_step.measure(moe_sdpa, batch, seq, device, steps, warmup,
                                                   compile_, peak * 1e12)
        out["moe_flex_over_sdpa_tokens_per_s"] = round(
            out["results"]["moe"]["tokens_per_s"] / out["moe_sdpa_local"]["tokens_per_s"], 3)
    else:
        out["moe_sdpa_local"] = "skipped: out of time"
    return out


def moe(device: str, dry: bool) -> dict:
    if dry:
        return moe_layer.measure_moe_layer(tokens=256, width=64, experts=4, top_k=2,
                                           expert_width=32, iters=2, warmup=1, device=device)
    return moe_layer.measure_moe_layer(device=device)


def rollouts(cfg: config.Config, device: str, dry: bool) -> dict:
    """Greedy sampling of ``grpo.problems`` prompts x ``grpo.group`` completions of
    ``grpo.max_new_tokens`` tokens, with the KV cache and by recomputation."""
    g = cfg.grpo
    prompts, group, new, prompt_len = (2, 2, 8, 16) if dry else \
        (g.problems, g.group, g.max_new_tokens, 32)
    dtype = getattr(torch, g.rollout_dtype) if device == "cuda" else torch.float32
    torch.manual_seed(0)
    model = Transformer(cfg.model).to(device, dtype)
    prompt = torch.randint(0, cfg.model.vocab_size, (prompts, prompt_len), device=device)

    def sample(use_cache: bool, n: int):
        return generate(model, prompt, n, temperature=0, use_cache=use_cache, num_samples=group)

    times, tokens = {}, {}
    for name, use_cache in (("kv_cache", True), ("recompute", False)):
        sample(use_cache, 4)  # warm-up: kernels, compiled flex at a few lengths
        sync(device)
        t0 = time.perf_counter()
        tokens[name] = sample(use_cache, new).tokens
        sync(device)
        times[name] = time.perf_counter() - t0
    generated = prompts * group * new
    same = (tokens["kv_cache"] == tokens["recompute"]).float().mean().item()
    return {"prompts": prompts, "group": group, "prompt_len": prompt_len, "new_tokens": new,
            "dtype": str(dtype).replace("torch.", ""), "attn_impl": cfg.model.attn_impl,
            "tokens_per_s": {k: round(generated / v, 1) for k, v in times.items()},
            "kv_cache_over_recompute": round(times["recompute"] / times["kv_cache"], 3),
            "greedy_tokens_equal_fraction": round(same, 4)}


def notebooks(preset: str, numbers: list[str], cuts: dict[str, Any], deadline: float,
              run_dir: Path) -> dict:
    """Each notebook through ``python -m mai_repro.pipeline`` in one process, in order, in the
    time left; upstream stages come from the earlier notebooks in ``run_dir``."""
    missing = [m for m in ("papermill", "ipykernel", "nbformat")
               if importlib.util.find_spec(m) is None]
    out: dict[str, Any] = {"preset": preset, "overrides": cuts, "run_dir": str(run_dir),
                           "results": {}}
    if missing:
        out["skipped"] = (f"missing {', '.join(missing)}: carry the notebook wheels "
                          "(docs/performance.md, section gpu_check)")
        return out
    params = [a for k, v in cuts.items() for a in ("-p", f"{k}={json.dumps(v)}")]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    for n in numbers:
        left = deadline - time.time()
        if left < 10:
            out["results"][n] = {"status": "not run: out of time"}
            continue
        t0 = time.time()
        cmd = [sys.executable, "-m", "mai_repro.pipeline", "--preset", preset, "--only", n,
               "--run-dir", str(run_dir), *params]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=left, cwd=root,
                               env=env)
            status = "ok" if p.returncode == 0 else f"failed (exit {p.returncode})"
            tail = "" if p.returncode == 0 else (p.stdout + p.stderr)[-1500:]
        except subprocess.TimeoutExpired:
            status, tail = "timeout", ""
        out["results"][n] = {"status": status, "seconds": round(time.time() - t0, 1)}
        log.info("notebook %s: %s in %.1f s", n, status, time.time() - t0)
        if tail:
            out["results"][n]["tail"] = tail
            log.info("notebook %s output tail:\n%s", n, tail)
    out["all_ok"] = all(r["status"] == "ok" for r in out["results"].values())
    return out


# -- the driver ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--dry", action="store_true", help="CPU, smoke shapes, notebook 00 only")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="wall-clock budget (default 450 s, dry 150 s); the notebooks get "
                         "what the other sections leave")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="dense bf16 peak for MFU (default: by device name)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)} (environment always "
                         "runs), e.g. a second call with notebooks only")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="run directory of the notebooks (default: a temporary folder; "
                         "never OUT_DIR: checkpoints are gigabytes)")
    args = ap.parse_args(argv)
    start = time.time()
    budget = args.budget_s or (150.0 if args.dry else 450.0)
    deadline = start + budget
    args.out_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        handlers=[logging.StreamHandler(sys.stdout),
                                  logging.FileHandler(args.out_dir / "gpu_check.log", "w")])

    device = "cpu" if args.dry else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        log.error("no CUDA device: run with --dry on a machine without a GPU")
        return 2
    preset = "smoke" if args.dry else "gpu"
    cfg = config.load(preset, device=device)
    if args.dry:  # the smoke model with the gpu preset's attention path
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, attn_impl="flex"))
    config.load("gpu", GPU_CUTS)  # the notebook cuts still name real keys (ConfigError if not)
    report: dict[str, Any] = {"dry": args.dry, "preset": preset, "budget_s": budget,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])}
    json_path = args.out_dir / "gpu_check.json"

    def save() -> None:
        report["wall_s"] = round(time.time() - start, 1)
        tmp = json_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, default=str))
        tmp.replace(json_path)

    chosen = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown:
        log.error("unknown section(s) %s; known: %s", sorted(unknown), ", ".join(SECTIONS))
        return 2

    def section(name: str, fn: Callable[[], Any], reserve_s: float = 0.0) -> Any:
        """Run one section; its error goes into the JSON, not out of the check. Skipped when
        not chosen or when less than ``reserve_s`` of the budget is left."""
        if name != "environment" and name not in chosen:
            report[name] = {"skipped": "not chosen (--sections)"}
            return None
        if time.time() > deadline - reserve_s:
            report[name] = {"skipped": "out of time"}
            log.info("%s: skipped, out of time", name)
            save()
            return None
        log.info("%s ...", name)
        t0 = time.time()
        try:
            report[name] = fn()
        except Exception as e:  # a failing section must not hide the others' figures
            log.exception("%s failed", name)
            report[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        if isinstance(report[name], dict):
            report[name]["seconds"] = round(time.time() - t0, 1)
        log.info("%s done in %.1f s", name, time.time() - t0)
        save()
        return report[name]

    env = section("environment", lambda: environment(device, args.peak_tflops))
    peak = env.get("peak_tflops", 989.0) if isinstance(env, dict) else 989.0
    section("attention", lambda: attention(cfg, device, args.dry))
    # leave the notebooks at least a third of the budget: stop the train-step extras early
    section("train_step", lambda: train(cfg, device, args.dry, peak, deadline - budget / 3))
    section("moe_layer", lambda: moe(device, args.dry), reserve_s=budget / 4)
    section("rollouts", lambda: rollouts(cfg, device, args.dry), reserve_s=budget / 5)
    run_dir = args.run_dir or Path(tempfile.mkdtemp(prefix="gpu_check_runs_"))
    section("notebooks", lambda: notebooks(preset, DRY_NOTEBOOKS if args.dry else NOTEBOOKS,
                                           GPU_CUTS if not args.dry else {}, deadline, run_dir))
    if args.run_dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info("summary: %s", json.dumps(summary(report)))
    save()
    failed = [n for n in SECTIONS if isinstance(report.get(n), dict) and "error" in report[n]]
    if isinstance(report.get("notebooks"), dict) and report["notebooks"].get("all_ok") is False:
        failed.append("notebooks")
    if failed:  # the JSON holds everything measured; the exit code says something broke
        log.error("failed: %s", ", ".join(failed))
        return 1
    return 0


def summary(report: dict) -> dict:
    """The headline figures, for the last lines of the log."""
    out: dict[str, Any] = {"wall_s": round(report.get("wall_s", 0), 1)}
    tr = report.get("train_step", {})
    for name, r in (tr.get("results") or {}).items():
        out[name] = {k: r.get(k) for k in ("tokens_per_s", "mfu", "peak_memory_gb")}
    out["moe_over_dense"] = tr.get("moe_over_dense_tokens_per_s")
    out["moe_flex_over_sdpa"] = tr.get("moe_flex_over_sdpa_tokens_per_s")
    out["attention_sdpa_masked_over_flex"] = report.get("attention", {}).get(
        "sdpa_masked_over_flex")
    out["moe_layer_ratio"] = report.get("moe_layer", {}).get("ratio_to_dense", {}).get(
        "latent_grouped")
    out["kv_cache_over_recompute"] = report.get("rollouts", {}).get("kv_cache_over_recompute")
    nb = report.get("notebooks", {})
    out["notebooks"] = nb.get("skipped") or {n: r["status"] for n, r in
                                             nb.get("results", {}).items()}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
