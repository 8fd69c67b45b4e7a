"""The next-token loss, the learning-rate schedule, the optimiser, and a plain loop around the
one step.

One token-level cross-entropy (:func:`token_nll`: every next-token loss and NLL in the library
is computed by it: :func:`lm_loss`, :func:`weighted_nll`, held-out NLL (:func:`eval_loss`), the
evaluation module's NLL per family, the long-context probes, the collapse stage's perplexity),
one schedule (:func:`lr_at`) and one optimiser (:func:`make_optimizer`, set by the config's
``optim`` section), shared by every stage that trains a language model; the optimizer step
itself is :func:`mai_repro.train.step.train_step`. Batches
are (B, T+1) token ids: inputs are ``[:, :-1]``, targets ``[:, 1:]``. A model returns logits,
or a tuple/object whose first item is logits and which may carry an auxiliary loss
(MoE load balancing) as ``aux_loss``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from mai_repro.model.transformer import split_output  # noqa: F401 (re-exported)
from mai_repro.train.config import OptimConfig
from mai_repro.train.step import LossOut, train_step


def token_nll(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The one token-level cross-entropy: the NLL (nats, float32) of each target under
    ``logits`` (..., V), shaped like ``targets``.

    Computed over the vocabulary as the last, contiguous dimension, so each value is exactly
    ``-log_softmax(logits)[target]`` (bit for bit, as GRPO's log-probabilities are); the
    ``(B, V, T)`` layout of ``cross_entropy(logits.transpose(1, 2), ...)`` reduces in another
    order and differs in the last bits."""
    nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1),
                          reduction="none")
    return nll.view(targets.shape)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions where ``mask`` is true."""
    loss = token_nll(logits, targets).reshape(-1)
    if mask is None:
        return loss.mean()
    m = mask.reshape(-1).float()
    return (loss * m).sum() / m.sum().clamp_min(1.0)


def weighted_nll(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor
                 ) -> torch.Tensor:
    """Next-token cross-entropy averaged with per-token ``weights`` (0 = ignored): the loss of
    supervised fine-tuning on completions, where each source may carry its own token weight."""
    return (token_nll(logits, targets) * weights).sum() / weights.sum().clamp_min(1e-9)


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


def make_optimizer(model: torch.nn.Module, lr: float, optim: OptimConfig | None = None, *,
                   weight_decay: float | None = None) -> torch.optim.Optimizer:
    """AdamW with the ``optim`` section's betas, epsilon and implementation, weight decay on
    matrices only (not on norms, biases or 1-D parameters). ``weight_decay`` (default
    ``optim.weight_decay``) is given by the post-training loops (``optim.rl_weight_decay``)."""
    if optim is not None and not isinstance(optim, OptimConfig):  # the old (model, lr, wd) form
        raise TypeError(f"make_optimizer(model, lr, optim): optim is the config's optim section "
                        f"(an OptimConfig), got {optim!r}; give weight_decay= by keyword")
    optim = optim or OptimConfig()
    wd = optim.weight_decay if weight_decay is None else weight_decay
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    # None leaves the choice to torch (foreach on CUDA, a per-tensor loop on CPU)
    impl = {"auto": {}, "for_loop": {"foreach": False}, "foreach": {"foreach": True},
            "fused": {"fused": True}}[optim.impl]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(optim.beta1, optim.beta2), eps=optim.eps, **impl)


@dataclass
class History:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)


def lm_loss_fn(model: torch.nn.Module) -> Callable[[torch.Tensor], LossOut]:
    """The next-token loss of ``model`` on a (B, T+1) micro-batch, for :func:`train_step`:
    the objective adds the model's auxiliary loss (MoE load balancing) when it has one."""

    def loss_fn(batch: torch.Tensor) -> LossOut:
        logits, aux = split_output(model(batch[:, :-1]))
        loss = lm_loss(logits, batch[:, 1:])
        return LossOut(loss if aux is None else loss + aux, loss)

    return loss_fn


def lm_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor, *,
            lr: float | None = None, grad_clip: float = 1.0) -> tuple[float, float]:
    """One optimizer step of the next-token loss on a (B, T+1) batch through the one
    :func:`~mai_repro.train.step.train_step`; returns (loss, gradient norm before clipping)."""
    r = train_step(model, optimizer, [batch], lm_loss_fn(model), lr=lr, grad_clip=grad_clip)
    return r.loss, r.grad_norm


@dataclass(frozen=True)
class Schedule:
    """The learning rate of every step of a run (:func:`lr_at` with these settings)."""

    peak: float
    warmup: int
    total: int
    min_ratio: float = 0.1
    schedule: str = "cosine"
    decay_frac: float = 0.2

    def __call__(self, step: int) -> float:
        return lr_at(step, peak=self.peak, warmup=self.warmup, total=self.total,
                     min_ratio=self.min_ratio, schedule=self.schedule,
                     decay_frac=self.decay_frac)


def train_lm(model: torch.nn.Module, batches: Iterator[torch.Tensor], *, steps: int,
             lr: float, warmup: int = 0, optim: OptimConfig | None = None,
             device: str | torch.device = "cpu", progress: bool = True, desc: str = "train"
             ) -> History:
    """Train for ``steps`` optimizer steps on batches from ``batches`` (AdamW, clip and final
    learning rate from ``optim``, default :class:`OptimConfig`); returns the history."""
    from tqdm.auto import tqdm

    optim = optim or OptimConfig()
    model.to(device)
    opt = make_optimizer(model, lr, optim)
    schedule = Schedule(lr, warmup, steps, min_ratio=optim.min_lr_ratio)
    hist = History()
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for step in bar:
        loss, norm = lm_step(model, opt, next(batches).to(device), lr=schedule(step),
                             grad_clip=optim.grad_clip)
        hist.loss.append(loss)
        hist.grad_norm.append(norm)
        hist.lr.append(opt.param_groups[0]["lr"])
        if step % 10 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    return hist


@torch.no_grad()
def eval_loss(model: torch.nn.Module, batches: Iterable[torch.Tensor],
              device: str | torch.device = "cpu", autocast: bool = False) -> float:
    """Held-out NLL: the mean next-token loss over the given (B, T+1) batches, token-weighted
    (bf16 autocast on CUDA when ``autocast``)."""
    model.eval()
    total, count = 0.0, 0
    cuda = torch.device(device).type == "cuda"
    for batch in batches:
        batch = batch.to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16) if autocast and cuda else \
                contextlib.nullcontext():
            logits, _ = split_output(model(batch[:, :-1]))
        n = batch[:, 1:].numel()
        total += lm_loss(logits, batch[:, 1:]).item() * n
        count += n
    return total / max(count, 1)
