"""The language-model training step and a plain loop around it.

One implementation of the next-token loss and of an optimizer step, shared by every stage
that trains a model (the curation detector's small LMs, pre-training, ladders, SFT). Batches
are (B, T+1) token ids: inputs are ``[:, :-1]``, targets ``[:, 1:]``. A model returns logits,
or a tuple/object whose first item is logits and which may carry an auxiliary loss
(MoE load balancing) as ``aux_loss``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


def split_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, aux_loss or None) from whatever a model's forward returns."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)):
        aux = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], aux
    return out.logits, getattr(out, "aux_loss", None)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions where ``mask`` is true."""
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                           reduction="none")
    if mask is None:
        return loss.mean()
    m = mask.reshape(-1).float()
    return (loss * m).sum() / m.sum().clamp_min(1.0)


def lr_at(step: int, *, peak: float, warmup: int, total: int, min_ratio: float = 0.1,
          schedule: str = "cosine", decay_frac: float = 0.2) -> float:
    """Linear warm-up, then cosine decay to ``min_ratio * peak`` (``schedule="cosine"``), or
    warmup-stable-decay: the peak until the last ``decay_frac`` of steps, then a linear decay
    to ``min_ratio * peak`` (``schedule="wsd"``)."""
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "wsd":
        decay_start = total - max(1, round(decay_frac * total))
        if step < decay_start:
            return peak
        progress = min(1.0, (step - decay_start + 1) / max(1, total - decay_start))
        return peak * (1 - (1 - min_ratio) * progress)
    if schedule != "cosine":
        raise ValueError(f"schedule must be 'cosine' or 'wsd', got {schedule!r}")
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float
                   ) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (not on norms, biases or 1-D parameters)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


@dataclass
class History:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor,
               *, grad_clip: float = 1.0, mask: torch.Tensor | None = None
               ) -> tuple[float, float]:
    """One optimizer step on a (B, T+1) batch; returns (loss, gradient norm before clipping)."""
    model.train()
    logits, aux = split_output(model(batch[:, :-1]))
    loss = lm_loss(logits, batch[:, 1:], None if mask is None else mask[:, 1:])
    total = loss if aux is None else loss + aux
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                          grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    return loss.item(), float(norm)


def train_lm(model: torch.nn.Module, batches: Iterator[torch.Tensor], *, steps: int,
             lr: float, warmup: int = 0, weight_decay: float = 0.1, grad_clip: float = 1.0,
             device: str | torch.device = "cpu", progress: bool = True, desc: str = "train"
             ) -> History:
    """Train for ``steps`` optimizer steps on batches from ``batches``; returns the history."""
    from tqdm.auto import tqdm

    model.to(device)
    opt = make_optimizer(model, lr, weight_decay)
    hist = History()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, peak=lr, warmup=warmup, total=steps)
        loss, norm = train_step(model, opt, next(batches).to(device), grad_clip=grad_clip)
        hist.loss.append(loss)
        hist.grad_norm.append(norm)
        hist.lr.append(opt.param_groups[0]["lr"])
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    return hist


@torch.no_grad()
def eval_loss(model: torch.nn.Module, batches: list[torch.Tensor],
              device: str | torch.device = "cpu") -> float:
    """Mean next-token loss over the given batches (token-weighted)."""
    model.eval()
    total, count = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        logits, _ = split_output(model(batch[:, :-1]))
        n = batch[:, 1:].numel()
        total += lm_loss(logits, batch[:, 1:]).item() * n
        count += n
    return total / max(count, 1)
