"""Sliding-window attention through FlexAttention: a block mask instead of a dense boolean mask.

A dense ``(T, T)`` boolean mask passed to ``scaled_dot_product_attention`` keeps the local layers
off the fused flash kernels on a GPU and makes them compute every score, even the ~(1 - W/T) of
them that the window throws away. ``torch.nn.attention.flex_attention`` takes the mask as a
*function* of (query position, key position) and a :class:`BlockMask` that records which
128 x 128 tiles hold any allowed pair, so a compiled kernel skips empty tiles and computes the
partly masked ones with the function: time and memory grow as ``T * W`` and the kernel is fused.

This module holds the three things that path needs, so attention.py only chooses it:

- :func:`resolve_impl`, :func:`use_flex`: ``model.attn_impl`` (``auto``/``sdpa``/``flex``) ->
  the path used (on CPU, torch 2.13's flex attention has no backward: training there stays on
  SDPA, inference may use flex);
- :func:`window_block_mask`: the causal + window block mask for a length, cached;
- :func:`flex_window_attention`: the attention itself, through the compiled kernel where
  ``torch.compile`` works here, else the eager (unfused, same values) implementation, with one
  log line saying which.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger(__name__)

try:  # flex attention is in torch >= 2.5; the project needs >= 2.9, but degrade if it's missing
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - only on an old or stripped-down torch
    BlockMask, create_block_mask, flex_attention = None, None, None

_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.warning(message)


def flex_available() -> bool:
    return flex_attention is not None


def resolve_impl(impl: str, device: torch.device) -> str:
    """The attention path for the local layers: ``"flex"`` or ``"sdpa"`` (the masked one).

    ``auto`` picks flex on CUDA, where it reaches the fused kernels, and the masked SDPA path
    elsewhere (on CPU the two agree; benchmarks/flex_cpu.py measures which is faster there).
    ``flex`` on a torch without flex attention falls back to SDPA with a log line.
    """
    if impl == "auto":
        impl = "flex" if device.type == "cuda" else "sdpa"
    if impl == "flex" and not flex_available():
        _log_once("model.attn_impl=flex but this torch has no flex attention: the local layers "
                  "use masked SDPA")
        return "sdpa"
    return impl


_cpu_backward: list[bool] = []


def cpu_backward_supported() -> bool:
    """Whether this torch's flex attention has a backward on CPU (torch 2.13 has none: it
    raises NotImplementedError for inputs that require grad). Probed once on tiny tensors."""
    if not _cpu_backward:
        q = torch.zeros(1, 1, 1, 16, requires_grad=True)
        try:
            _eager_flex(q, q, q, None, False)
            _cpu_backward.append(True)
        except NotImplementedError:
            _cpu_backward.append(False)
    return _cpu_backward[0]


def use_flex(impl: str, x: torch.Tensor) -> bool:
    """Whether the local layers take the flex path for activations like ``x``: the configured
    path resolved for x's device, except on a CPU whose flex has no backward while gradients
    are needed (training on CPU): then masked SDPA, with one log line."""
    if resolve_impl(impl, x.device) != "flex":
        return False
    needs_grad = torch.is_grad_enabled() and x.requires_grad
    if x.device.type == "cpu" and needs_grad and not cpu_backward_supported():
        _log_once(f"flex attention has no backward on CPU in torch {torch.__version__}: the "
                  f"local layers use masked SDPA while gradients are needed on CPU")
        return False
    return True


def _window_mask_mod(window: int) -> Callable[..., torch.Tensor]:
    def causal_window(b: Any, h: Any, q_idx: torch.Tensor, kv_idx: torch.Tensor) -> torch.Tensor:
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)
    return causal_window


_BLOCK_MASKS: dict[tuple[int, int, int, str], Any] = {}


@torch.compiler.disable  # built outside any compiled graph, once per (length, window, device)
def window_block_mask(q_len: int, kv_len: int, window: int, device: torch.device) -> Any:
    """The causal sliding-window :class:`BlockMask` of queries ``0..q_len-1`` over keys
    ``0..kv_len-1`` (same positions: training and recomputation, not the KV-cache decode).
    Cached: every local layer of every step at one length shares it."""
    key = (q_len, kv_len, window, str(device))
    if key not in _BLOCK_MASKS:
        if len(_BLOCK_MASKS) >= 64:  # many lengths (recomputed generation): start over
            _BLOCK_MASKS.clear()
        _BLOCK_MASKS[key] = create_block_mask(_window_mask_mod(window), None, None, q_len,
                                              kv_len, device=device)
    return _BLOCK_MASKS[key]


_compiled: dict[str, Callable[..., torch.Tensor] | None] = {}


def _kernel(device: torch.device) -> Callable[..., torch.Tensor] | None:
    """``torch.compile(flex_attention)`` for this device type, or None where compiling failed
    here before (then the eager implementation is used)."""
    kind = device.type
    if kind not in _compiled:
        _compiled[kind] = torch.compile(flex_attention)
    return _compiled[kind]


def flex_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                          block_mask: Any | None = None) -> torch.Tensor:
    """Causal sliding-window attention of q (B, H, T, D) over k, v (B, Hkv, T, D), GQA allowed.
    The same values as :func:`mai_repro.model.attention.attention_mask` with SDPA."""
    T = q.shape[2]
    if block_mask is None:
        block_mask = window_block_mask(T, k.shape[2], window, q.device)
    enable_gqa = q.shape[1] != k.shape[1]
    if torch.compiler.is_compiling():  # inside a compiled model: the outer compile fuses it
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
    kernel = _kernel(q.device)
    if kernel is not None:
        try:
            return kernel(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
        except Exception as e:  # no C++ compiler, an unsupported shape or backend: stay correct
            _compiled[q.device.type] = None
            _log_once(f"flex attention: torch.compile failed on {q.device.type} "
                      f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); using the eager "
                      f"implementation (same values, not fused)")
    return _eager_flex(q, k, v, block_mask, enable_gqa)


def _eager_flex(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any,
                enable_gqa: bool) -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():  # torch warns that eager flex is unfused: we know, and log
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile")
        return flex_attention(q, k, v, block_mask=block_mask, enable_gqa=enable_gqa)
