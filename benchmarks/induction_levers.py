"""What makes the laptop model form an induction head within its budget? (issue 19)

    python benchmarks/induction_levers.py [--run runs/laptop] [--steps 500] [--repeat 0.25]
        [--lr 3e-3] [--every 100] [--threads 1] [model.field=value ...]

Trains the laptop preset's model from scratch on the run's training shards (the run's mixture
weights, the preset's seed, optimiser and learning-rate schedule over the full pre-training
length, so step s here is step s of notebook 07's schedule) with one lever changed, and prints
one JSON line every ``--every`` steps: the training loss, notebook 07's induction ratio (16
random sequences of half the sequence length, repeated once: second-copy / first-copy loss),
the same at half length 32 (inside the local layers' window), the same ratio on the corpus's
own held-out text (the first 64 tokens of 8 held-out windows per family, repeated once) and
the mean held-out loss over the families (8 windows each). ``--save`` keeps the model.

Levers: ``--repeat P`` copies, in a share P of the training rows, a random span of 16-128
tokens over the span right after it, so that the row holds a passage of its own human text
twice (the "burstiness" that Chan et al. 2022 found drives in-context learning; no text is
written, only repeated; ``mai_repro.data.loader.repeat_spans``, the preset's
``pretrain.repeat_share``; before 2026-12-02 06:00 the script drew the spans from its own
stream); ``--lr``; any model field (``zero_init_attn=0``, ``attn_period=2``...).
The run directory needs notebook 03's shards (``python -m mai_repro.pipeline --preset laptop
--to 03``). Figures: docs/model.md, "Induction: the levers tried".

``--control`` instead trains the same architecture from scratch on nothing but random ids (200
distinct tokens) in rows of a 32-token sequence repeated four times (16 rows of 128 tokens per
step, lr 3e-3, 50 warm-up steps, ``--steps`` in all) and prints, every 50 steps, the loss on
the first and on the second copy of fresh rows: whether the architecture can copy at all.
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
from mai_repro.data.loader import Loader, repeat_spans
from mai_repro.data.tokenizer import SPECIALS
from mai_repro.eval.longctx import induction_score, repeat_losses
from mai_repro.model.transformer import Transformer
from mai_repro.stages.pretraining import model_config, open_stage_shards
from mai_repro.train.loop import Schedule, lm_step, make_optimizer


def copy_control(mc, steps: int) -> None:
    """The architecture on a pure copying task (see the module docstring)."""
    from mai_repro.train.config import OptimConfig

    torch.manual_seed(0)
    model = Transformer(mc)
    lr = 3e-3
    opt = make_optimizer(model, lr, OptimConfig())
    sched = Schedule(lr, 50, steps, min_ratio=0.1)
    g = torch.Generator().manual_seed(1)
    half = 32

    def rows(n: int) -> torch.Tensor:
        seq = torch.randint(10, 210, (n, half), generator=g)
        return torch.cat([seq] * 4, 1)[:, :129]

    t0 = time.time()
    for s in range(steps):
        loss, _ = lm_step(model.train(), opt, rows(16), lr=sched(s))
        if (s + 1) % 50 == 0:
            with torch.no_grad():
                x = rows(32)
                lp = model.eval()(x[:, :-1]).logits.float().log_softmax(-1)
                nll = -lp.gather(-1, x[:, 1:, None]).squeeze(-1)
            print(json.dumps({"step": s + 1, "loss": round(loss, 3),
                              "first_copy": round(float(nll[:, :half - 1].mean()), 3),
                              "second_copy": round(float(nll[:, half:2 * half - 1].mean()), 3),
                              "s": round(time.time() - t0)}), flush=True)


def _value(old, text: str):
    if isinstance(old, bool):
        return text.lower() in ("1", "true", "yes")
    return type(old)(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="runs/laptop", help="run directory with tokenizer/")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--repeat", type=float, default=0.0, help="share of rows with a repeat")
    ap.add_argument("--lr", type=float, default=None, help="peak lr (default: the preset's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--span-min", type=int, default=16, help="shortest repeated span")
    ap.add_argument("--probe-seqs", type=int, default=16, help="random sequences per probe")
    ap.add_argument("--control", action="store_true", help="the pure copying task instead")
    ap.add_argument("--save", default=None, help="write the trained model here (for "
                    "benchmarks/induction_probe.py)")
    ap.add_argument("model", nargs="*", help="model overrides, field=value")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = C.load("laptop")
    p = cfg.pretrain
    mc = model_config(cfg)
    for item in a.model:
        k, v = item.split("=", 1)
        mc = dataclasses.replace(mc, **{k: _value(getattr(mc, k), v)})
    if a.control:
        copy_control(mc, a.steps)
        return
    tok_dir = Path(a.run) / "tokenizer"
    if not (tok_dir / "plan.json").exists():
        raise SystemExit(f"{tok_dir} has no shards: run notebooks 00-03 first "
                         f"(python -m mai_repro.pipeline --preset laptop --to 03)")
    lr = a.lr if a.lr is not None else p.lr
    torch.manual_seed(cfg.seed)
    model = Transformer(mc)
    train, held, weights = open_stage_shards(tok_dir)
    loader = Loader(train, weights, p.batch_size, seed=cfg.seed)
    opt = make_optimizer(model, lr, cfg.optim)
    sched = Schedule(lr, p.warmup_steps, p.steps, min_ratio=cfg.optim.min_lr_ratio)
    hx = {f: torch.as_tensor(np.asarray(x[:8], dtype=np.int64)) for f, x in held.items()}
    # the corpus's own held-out text, its first 64 tokens repeated once: copying natural text
    text_halves = torch.cat([x[:, :64] for x in hx.values()])

    @torch.no_grad()
    def heldout() -> float:
        model.eval()
        losses = []
        for x in hx.values():
            lp = model(x[:, :-1]).logits.float().log_softmax(-1)
            losses.append(float(-lp.gather(-1, x[:, 1:, None]).mean()))
        model.train()
        return float(np.mean(losses))

    print(json.dumps({"repeat": a.repeat, "span_min": a.span_min, "lr": lr, "steps": a.steps,
                      "model": a.model}),
          flush=True)
    t0 = time.time()
    for s in range(a.steps):
        x, _, _ = loader.next_with_families()
        x = repeat_spans(x, a.repeat, cfg.seed, s, shortest=a.span_min)  # as pretrain.repeat_share does
        loss, _ = lm_step(model.train(), opt, x, lr=sched(s),
                          grad_clip=cfg.optim.grad_clip)
        if (s + 1) % a.every == 0:
            long = induction_score(model, mc.vocab_size, half_len=p.seq_len // 2,
                                   n_seqs=a.probe_seqs,
                                   seed=cfg.seed, low=len(SPECIALS))
            short = induction_score(model, mc.vocab_size, half_len=32, n_seqs=a.probe_seqs,
                                    seed=cfg.seed, low=len(SPECIALS))
            text = repeat_losses(model, text_halves)
            print(json.dumps({"step": s + 1, "tokens": (s + 1) * p.batch_size * p.seq_len,
                              "loss": round(loss, 3), "induction": round(long.ratio, 3),
                              "induction_32": round(short.ratio, 3),
                              "text_copy": round(text.ratio, 3),
                              "heldout": round(heldout(), 3),
                              "s": round(time.time() - t0)}), flush=True)
    if a.save:
        from mai_repro.train.checkpoint import save_model_file

        save_model_file(model.cfg, model.state_dict(), Path(a.save))


if __name__ == "__main__":
    main()
