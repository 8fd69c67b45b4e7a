"""What leaving the padding out of the GRPO loss saves on a worked-format learner batch.

    python benchmarks/grpo_loss.py [--rows 128] [--cap 141] [--shortest 51] [--vocab 4096]
        [--threads 1] [--repeats 3]

A learner batch of ``--rows`` completions right-padded to the longest (lengths drawn evenly
from ``--shortest`` to ``--cap``: two-digit worked answers are 51-141 tokens), a
``--vocab``-token vocabulary and nucleus masks. Times the loss's forward and backward
(the model's forward is not included) with every position through the vocabulary-sized work
and the padding weighted 0 (:func:`dense_loss`, the baseline: the loss as it was written
before) and with ``rl.grpo.grpo_loss`` (the completion tokens only). Prints each median, their
ratio, and whether the two gradients agree bit for bit at the completion tokens (they must).
Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mai_repro.rl.grpo import GRPOConfig, apply_nucleus, grpo_loss


def dense_loss(logits, actions, old_logp, advantages, mask, cfg: GRPOConfig, k: float,
               nucleus):
    """The baseline: the token-level clipped loss with every (row, position) through the
    log-softmax, the entropy and the nucleus mass, the padding weighted 0. Returns the loss,
    the log-probs of the actions, the mean entropy and the nucleus mass."""
    logp_all = torch.log_softmax(apply_nucleus(logits.float(), nucleus), dim=-1)
    logp = logp_all.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    m = mask.float()
    n = m.sum().clamp_min(1.0)
    ratio = torch.exp(logp - old_logp)
    outer = ratio.clamp(cfg.r_min, cfg.r_max)
    lo, hi = 1.0 - cfg.eps, 1.0 / (1.0 - cfg.eps) + k
    A = advantages.float().unsqueeze(-1).expand_as(ratio)
    surrogate = torch.minimum(outer * A, outer.clamp(lo, hi) * A)
    with torch.no_grad():
        p = logp_all.exp()
        plogp = torch.where(p > 0, p * logp_all, torch.zeros_like(p))
        entropy = (-(plogp.sum(-1)) * m).sum() / n
        mass = ((torch.softmax(logits.float(), -1) * nucleus).sum(-1) * m).sum() / n
    return -(surrogate * m).sum() / n, logp.detach(), float(entropy), float(mass)


def batch(rows: int, cap: int, shortest: int, vocab: int, seed: int = 0):
    """A right-padded learner batch: logits, actions, old log-probs, advantages, mask,
    nucleus (each action inside its nucleus; the padding's nucleus is everything)."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(shortest, cap + 1, (rows,), generator=g)
    mask = torch.arange(cap)[None] < lens[:, None]
    logits = torch.randn(rows, cap, vocab, generator=g) * 3
    actions = torch.randint(0, vocab, (rows, cap), generator=g)
    nucleus = torch.rand(rows, cap, vocab, generator=g) < 0.01
    nucleus.scatter_(-1, actions[..., None], True)
    nucleus[~mask] = True
    old = torch.randn(rows, cap, generator=g) * 0.1 - 2.0
    adv = torch.randn(rows, generator=g)
    return logits, actions, old, adv, mask, nucleus


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--cap", type=int, default=141)
    ap.add_argument("--shortest", type=int, default=51)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    logits, actions, old, adv, mask, nucleus = batch(a.rows, a.cap, a.shortest, a.vocab)
    cfg, k = GRPOConfig(eps=0.2, r_min=0.5, r_max=2.0), 0.3

    def dense():
        leaf = logits.clone().requires_grad_()
        loss = dense_loss(leaf, actions, old, adv, mask, cfg, k, nucleus)[0]
        loss.backward()
        return leaf.grad

    def compact():
        leaf = logits.clone().requires_grad_()
        grpo_loss(leaf, actions, old, adv, mask, cfg, k=k, nucleus=nucleus).loss.backward()
        return leaf.grad

    times: dict[str, list[float]] = {"dense": [], "compact": []}
    grads = {}
    for _ in range(a.repeats):
        for name, fn in (("dense", dense), ("compact", compact)):
            t = time.perf_counter()
            grads[name] = fn()
            times[name].append(time.perf_counter() - t)
    med = {name: statistics.median(v) for name, v in times.items()}
    same = torch.equal(grads["dense"][mask], grads["compact"][mask])
    print(json.dumps({"rows": a.rows, "cap": a.cap, "tokens": int(mask.sum()),
                      "padding": round(1 - float(mask.float().mean()), 3),
                      "dense_s": round(med["dense"], 3), "compact_s": round(med["compact"], 3),
                      "speedup": round(med["dense"] / med["compact"], 2),
                      "same_gradient": same, "threads": a.threads}))


if __name__ == "__main__":
    main()
