"""The one training step: every loop in the library that trains a model calls :func:`train_step`.

Pre-training's trainer, mid-training, the scaling ladder and mixture search, the model-collapse
generations, the curation detector's small models, the architecture probe, the GRPO learner and
self-distillation's SFT all step through here. A stage supplies only its loss: ``loss_fn`` maps
one micro-batch to a :class:`LossOut`. The step owns the rest, in this order:

1. the learning rate of the step (when given) on every parameter group;
2. forward and backward over the micro-batches (gradient accumulation; bf16 autocast on CUDA
   when asked; under DDP the gradient all-reduce only after the last micro-batch);
3. the gradient-norm clip (the norm reported is the one before clipping);
4. an optional veto (``accept``: the loss-spike detector of pre-training) that drops the update;
5. the optimizer step;
6. MoE load balancing: the expert load of the step (summed over ranks when ``reduce_load`` is
   given) updates the routing biases under ``balance: bias`` and is reset in every mode, so no
   loop can forget it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class LossOut:
    """What a loss function returns for one micro-batch.

    ``objective`` is what is differentiated (the loss plus any auxiliary terms); ``loss`` the
    value to report (defaults to ``objective``); ``weight`` the micro-batch's share of the step
    (None: equal shares, ``objective / n``); ``stats`` floats averaged with the same weights.
    """

    objective: torch.Tensor
    loss: torch.Tensor | None = None
    weight: float | None = None
    stats: dict[str, float] = field(default_factory=dict)


@dataclass
class StepResult:
    loss: float  # the reported loss, averaged over micro-batches with their weights
    loss_sum: torch.Tensor  # the unweighted sum of the micro-batches' reported losses
    grad_norm: float  # before clipping
    applied: bool  # False when ``accept`` vetoed the update
    stats: dict[str, float]
    load: torch.Tensor | None  # (MoE layers, experts) token-slots of the step, when applied


def moe_layers(model: torch.nn.Module) -> list[Any]:
    """The MoE layers of a model (unwrapping DDP/compile), or [] for a dense one."""
    inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None) or model
    return list(getattr(inner, "moe_layers", []))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def balance(model: torch.nn.Module,
            reduce_load: Callable[[torch.Tensor], Any] | None = None) -> torch.Tensor | None:
    """Once per applied optimizer step: each MoE layer's expert load since the last step
    (summed over ranks by ``reduce_load``), then the routing-bias update (``balance: bias``)
    that also resets the load. Returns the load, (layers, experts), or None without MoE."""
    layers = moe_layers(model)
    if not layers:
        return None
    for m in layers:
        if reduce_load is not None:
            reduce_load(m.load)
    load = torch.stack([m.load.detach().float().cpu() for m in layers])
    for m in layers:
        m.update_bias()
    return load


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               micro_batches: Iterable[Any], loss_fn: Callable[[Any], LossOut], *,
               lr: float | None = None, grad_clip: float = 0.0, autocast: bool = False,
               no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
               accept: Callable[[torch.Tensor, float], bool] | None = None,
               reduce_load: Callable[[torch.Tensor], Any] | None = None,
               params: Iterable[torch.nn.Parameter] | None = None) -> StepResult:
    """One optimizer step of ``model`` over ``micro_batches`` (see the module doc).

    ``accept(loss_sum, grad_norm)`` may veto the update; ``params`` are the parameters that
    are clipped (default: the model's). ``model`` is what ``loss_fn`` calls (possibly wrapped);
    balancing reaches its MoE layers through DDP and compile wrappers.
    """
    micro_batches = list(micro_batches)
    if lr is not None:
        set_lr(optimizer, lr)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    device_type = next(model.parameters()).device.type
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if autocast and device_type == "cuda"
           else contextlib.nullcontext())
    n = len(micro_batches)
    loss_sum = torch.zeros((), device=next(model.parameters()).device)
    reported, stats = 0.0, {}
    for i, mb in enumerate(micro_batches):
        quiet = no_sync is not None and i < n - 1
        with (no_sync() if quiet else contextlib.nullcontext()), amp:
            out = loss_fn(mb)
        objective = out.objective / n if out.weight is None else out.objective * out.weight
        objective.backward()
        value = (out.objective if out.loss is None else out.loss).detach()
        loss_sum += value
        w = 1.0 / n if out.weight is None else out.weight
        reported += w * float(value)
        for key, v in out.stats.items():
            stats[key] = stats.get(key, 0.0) + w * float(v)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters() if params is None else params,
                                          grad_clip if grad_clip > 0 else math.inf)
    norm_val = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if accept is not None and not accept(loss_sum, norm_val):
        optimizer.zero_grad(set_to_none=True)
        for m in moe_layers(model):
            m.load.zero_()
        return StepResult(reported, loss_sum, norm_val, False, stats, None)
    optimizer.step()
    load = balance(model, reduce_load)
    return StepResult(reported, loss_sum, norm_val, True, stats, load)
