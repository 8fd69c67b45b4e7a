"""Does a KL penalty to the pre-RL model change GRPO's held-out NLL on human text? (issue 22,
item 6)

    python benchmarks/grpo_kl.py [--run runs/laptop] [--preset laptop] [--steps 150]
        [--schedule-steps 0] [--kl 0.1] [--windows 0] [--threads 1] [--seed 0]
        [--out results.json]

From the run's mid-trained model, runs the first ``--steps`` optimizer steps of the preset's
main GRPO climb (no ablations; the length curriculum on the schedule of ``--schedule-steps``,
by default the preset's ``grpo.steps``, as the stage's ablations do) once with
``grpo.kl_coef`` 0 (the report's recipe) and once per value of ``--kl``, same seeds. For each: held-out task accuracy
at the start and at the end (``eval_samples`` samples per problem, with the stage's paired
interval of the gain), the mean ``kl_ref`` of the last quarter of the steps, and the held-out
NLL (nats per token, float32) of the run's tokenizer shards' held-out windows (every family of
the human-written corpus; ``--windows`` > 0 keeps that many per family, evenly spaced) for the
pre-RL model and each RL'd model. The NLL changes come with paired bootstrap intervals over
the windows (``mai_repro.stats.decide``): RL'd - pre-RL (held: RL raised it), and kl 0 arm -
KL arm (held: the KL kept it lower). The NLL counts
the targets that stand for at least one byte (the end-of-text token left out), as
``mai_repro.eval.metrics.family_nll`` does, and is token-weighted: each window's item is its
summed nats over the mean count of a window, so the mean over windows is the NLL itself. One
JSON line per arm while it runs, then a Markdown table. Figures: docs/rl.md, "KL to the pre-RL model".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

import mai_repro.config as C
from mai_repro import stats
from mai_repro.data.tokenizer import load as load_tokenizer
from mai_repro.eval.metrics import token_byte_counts
from mai_repro.rl.climb import climb, select_pool, task_sets
from mai_repro.stages.grpo import climb_gain
from mai_repro.stages.pretraining import open_stage_shards
from mai_repro.train.checkpoint import load_model_file
from mai_repro.train.loop import token_nll


def heldout_windows(run: Path, per_family: int = 0) -> dict[str, np.ndarray]:
    """The tokenizer stage's held-out windows per family, (n, seq_len + 1) int64; with
    ``per_family`` > 0 that many, evenly spaced through each family's windows."""
    _, heldout, _ = open_stage_shards(run / "tokenizer")
    out = {}
    for fam, seqs in heldout.items():
        idx = np.arange(len(seqs))
        if 0 < per_family < len(seqs):
            idx = np.linspace(0, len(seqs) - 1, per_family).round().astype(int)
        out[fam] = np.asarray(seqs[idx], dtype=np.int64)
    return out


@torch.no_grad()
def window_nats(model: torch.nn.Module, windows: np.ndarray, counted: torch.Tensor,
                batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(summed next-token nats, counted targets) of each window under ``model`` (float32,
    eval mode); a target counts when ``counted[target]`` (it stands for at least one byte)."""
    model = model.float().eval()
    nats, tokens = [], []
    for i in range(0, len(windows), batch):
        x = torch.from_numpy(windows[i:i + batch])
        m = counted[x[:, 1:]]
        nll = token_nll(model(x[:, :-1]).logits, x[:, 1:])
        nats.append((nll * m).sum(dim=1).double().numpy())
        tokens.append(m.sum(dim=1).numpy())
    return np.concatenate(nats), np.concatenate(tokens)


class NLL:
    """Held-out nats and counted tokens per window of each family under one model."""

    def __init__(self, model: torch.nn.Module, windows: dict[str, np.ndarray],
                 counted: torch.Tensor):
        self.by_family = {f: window_nats(model, w, counted) for f, w in windows.items()}

    def family(self, f: str) -> float:
        nats, tokens = self.by_family[f]
        return float(nats.sum() / tokens.sum())

    def items(self) -> np.ndarray:
        """Per window (families in name order): nats / the mean counted tokens of a window, so
        the mean over windows is the token-weighted NLL."""
        nats = np.concatenate([self.by_family[f][0] for f in sorted(self.by_family)])
        tokens = np.concatenate([self.by_family[f][1] for f in sorted(self.by_family)])
        return nats / tokens.mean()

    @property
    def value(self) -> float:
        return float(self.items().mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/laptop")
    ap.add_argument("--preset", default="laptop")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--schedule-steps", type=int, default=0,
                    help="steps the length curriculum is spread over (0 = the preset's "
                         "grpo.steps; squeezing it into a short climb raises the cap before "
                         "the policy ends its answers, and the climb can collapse)")
    ap.add_argument("--kl", default="0.1", help="comma-separated positive kl_coef values")
    ap.add_argument("--windows", type=int, default=0, help="held-out windows per family "
                                                           "(0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    run = Path(a.run)
    model_file = run / "midtraining" / "model.pt"
    if not model_file.exists():
        raise SystemExit(f"{model_file} not found: run the notebooks up to midtraining first")
    cfg = C.load(a.preset, seed=a.seed)
    schedule = a.schedule_steps or max(cfg.grpo.steps, a.steps)
    base = dataclasses.replace(cfg.grpo, steps=a.steps, ablations=[])
    coefs = [0.0] + [float(x) for x in a.kl.split(",") if x.strip()]
    if any(k <= 0 for k in coefs[1:]):
        raise SystemExit("--kl takes positive values (the kl_coef 0 arm always runs)")
    tok = load_tokenizer(run / "tokenizer" / "tokenizer.json")
    start = load_model_file(model_file)
    windows = heldout_windows(run, a.windows)
    counted = torch.from_numpy(token_byte_counts(tok) > 0)
    t0 = time.time()
    nll0 = NLL(start, windows, counted)
    print(json.dumps({"arm": "pre-RL", "windows": {f: len(w) for f, w in windows.items()},
                      "nll": round(nll0.value, 4),
                      "nll_s": round(time.time() - t0, 1)}), flush=True)
    pool, held = task_sets(base, cfg.seed)
    if base.pool_samples > 0:
        pool = select_pool(start, tok, pool, base, cfg.seed).kept
    arms: list[dict] = []
    nlls: dict[float, NLL] = {}
    for coef in coefs:
        c = dataclasses.replace(base, kl_coef=coef)
        t = time.time()
        res = climb(start, tok, pool, held, c, steps=a.steps, seed=cfg.seed,
                    eval_every=a.steps, keep_model=True, optim=cfg.optim,
                    schedule_steps=schedule)
        climb_s = time.time() - t
        nlls[coef] = nll = NLL(res.model, windows, counted)
        res.model = None
        gain = climb_gain(res.evals[0], res.evals[-1], c.eval_samples, cfg.seed)
        last = res.history[-max(1, len(res.history) // 4):]
        d_pre = stats.decide(nll.items(), nll0.items(), test="held-out NLL RL'd - pre-RL",
                             items="held-out windows", scale="plain", seed=cfg.seed)
        arm = {"kl_coef": coef, "steps": len(res.history), "climb_s": round(climb_s, 1),
               "accuracy_start": res.evals[0]["accuracy"],
               "accuracy_final": res.evals[-1]["accuracy"],
               "gain": dataclasses.asdict(gain),
               "kl_ref_last_quarter": (float(np.mean([r["kl_ref"] for r in last]))
                                       if "kl_ref" in last[0] else None),
               "collapsed_at": res.collapsed_at,
               "nll": nll.value,
               "nll_by_family": {f: nll.family(f) for f in windows},
               "nll_change": dataclasses.asdict(d_pre)}
        if coef > 0:
            arm["nll_vs_kl0"] = dataclasses.asdict(stats.decide(
                nlls[0.0].items(), nll.items(), test="held-out NLL kl 0 arm - KL arm (held: "
                                                     "the KL kept the NLL lower)",
                items="held-out windows", scale="plain", seed=cfg.seed))
        arms.append(arm)
        print(json.dumps(arm), flush=True)
    result = {"run": str(run), "preset": a.preset, "steps": a.steps,
              "schedule_steps": schedule, "seed": cfg.seed,
              "threads": a.threads, "windows": {f: len(w) for f, w in windows.items()},
              "nll_pre": nll0.value,
              "nll_pre_by_family": {f: nll0.family(f) for f in windows},
              "arms": arms, "wall_s": round(time.time() - t0, 1)}
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1))
    print(table(result))


def _iv(d: dict, digits: int = 4) -> str:
    return f"{d['mean']:+.{digits}f} [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"


def table(r: dict) -> str:
    fams = sorted(r["nll_pre_by_family"])
    head = ("| model | held-out acc. start -> final (gain, 95% CI) | kl_ref, last quarter | "
            "NLL (nats/token) | RL'd - pre-RL (95% CI) | kl 0 arm - this arm (95% CI) | "
            + " | ".join(fams) + " |")
    rows = [head, "|" + "---|" * (6 + len(fams)),
            f"| pre-RL (midtraining) | | | {r['nll_pre']:.4f} | | | "
            + " | ".join(f"{r['nll_pre_by_family'][f]:.4f}" for f in fams) + " |"]
    for arm in r["arms"]:
        g = arm["gain"]
        kl = "" if arm["kl_ref_last_quarter"] is None else f"{arm['kl_ref_last_quarter']:.4f}"
        vs = _iv(arm["nll_vs_kl0"]) + f" ({arm['nll_vs_kl0']['verdict']})" \
            if "nll_vs_kl0" in arm else ""
        rows.append(
            f"| GRPO, kl_coef {arm['kl_coef']:g} ({arm['steps']} steps) | "
            f"{arm['accuracy_start']:.3f} -> {arm['accuracy_final']:.3f} "
            f"({g['mean']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]) | {kl} | {arm['nll']:.4f} | "
            f"{_iv(arm['nll_change'])} ({arm['nll_change']['verdict']}) | {vs} | "
            + " | ".join(f"{arm['nll_by_family'][f]:.4f}" for f in fams) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
