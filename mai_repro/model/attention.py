"""Grouped-query attention, local (sliding window + RoPE) or global (no positions).

MAI-Base-1 repeats a period of 5 local layers and 1 global layer. Local layers see the last
``window`` tokens and encode position with rotary embeddings; global layers see everything
and use no positional encoding at all (NoPE): order information reaches them through the
local layers below. The output projection starts at zero by default, so at initialisation
every block is an FFN and token mixing switches on as training moves it away from zero.

Local layers in training and recomputation run through one of two paths chosen by
``model.attn_impl``: SDPA with a boolean mask (or in blocks for long sequences), or
FlexAttention with a sliding-window block mask (``flex.py``; fused and tile-sparse on a GPU).
Both compute the same values; global layers always use SDPA with ``is_causal`` (flash).

A :class:`KVCache` serves generation: local layers keep a ring buffer of ``window`` entries,
global layers a growing cache. Masks come from absolute positions, so the same function
builds the training mask and the decoding mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mai_repro.model.config import ModelConfig
from mai_repro.model.flex import flex_window_attention, use_flex


def rope_tables(head_dim: int, positions: torch.Tensor, base: float, scale: float = 1.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables (T, head_dim // 2) for absolute ``positions``; ``scale > 1`` is
    position interpolation (positions / scale: a longer context mapped onto trained angles)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=positions.device,
                                            dtype=torch.float32) / head_dim))
    angles = (positions.float() / scale)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :D/2], x[..., D/2:]) of x (B, H, T, D) by the position angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.to(x.dtype)


def attention_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, window: int | None
                   ) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i may attend key j: causal, within the window,
    and only to real cache slots (position >= 0)."""
    diff = q_pos[:, None] - k_pos[None, :]
    allowed = (diff >= 0) & (k_pos[None, :] >= 0)
    if window is not None:
        allowed &= diff < window
    return allowed


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int
                    ) -> torch.Tensor:
    """Causal sliding-window attention of q (B, H, T, D) over k, v (B, Hkv, T, D) in blocks.

    Queries are cut into blocks of ``window`` tokens; each block attends only to its own keys
    and the previous block's, so memory and time grow as T * 2 * window instead of T^2: the
    memory-efficient path for long sequences. The same values as a dense windowed mask.
    """
    B, H, T, D = q.shape
    W = window
    n = -(-T // W)
    pad = n * W - T
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))

    def blocks(t: torch.Tensor) -> torch.Tensor:  # (B, h, n*W, D) -> (B, n, h, W, D)
        return t.view(B, t.size(1), n, W, D).transpose(1, 2)

    def with_previous(t: torch.Tensor) -> torch.Tensor:  # (B*n, h, 2W, D): prev block, own
        b = blocks(t)
        prev = F.pad(b, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1]
        return torch.cat([prev, b], dim=3).reshape(B * n, t.size(1), 2 * W, D)

    i = torch.arange(W, device=q.device)[:, None]
    j = torch.arange(-W, W, device=q.device)[None, :]
    mask = ((i - j >= 0) & (i - j < W)).expand(n, W, 2 * W).clone()
    mask[0, :, :W] = False  # the first block has no previous block
    y = F.scaled_dot_product_attention(
        blocks(q).reshape(B * n, H, W, D), with_previous(k), with_previous(v),
        attn_mask=mask[None, :, None].expand(B, n, 1, W, 2 * W).reshape(B * n, 1, W, 2 * W),
        enable_gqa=True)
    return y.view(B, n, H, W, D).transpose(1, 2).reshape(B, H, n * W, D)[:, :, :T]


@dataclass
class LayerCache:
    k: torch.Tensor  # (B, Hkv, S, D)
    v: torch.Tensor
    pos: torch.Tensor  # (S,) absolute position held by each slot, -1 = empty
    ring: bool  # local layer: fixed S = window slots, overwritten in turn
    last_k: torch.Tensor | None = None  # smeared keys: the last position's unmixed key
    used: int = 0  # global layer: slots filled (k, v and pos have room for more: see _store)

    def repeat_rows(self, n: int) -> None:
        """Each batch row repeated ``n`` times in place (row i -> rows i*n .. i*n + n-1): the
        keys, values and the smeared keys' last key alike."""
        self.k = self.k.repeat_interleave(n, dim=0)
        self.v = self.v.repeat_interleave(n, dim=0)
        if self.last_k is not None:
            self.last_k = self.last_k.repeat_interleave(n, dim=0)


class KVCache:
    """Per-layer key/value caches for incremental decoding."""

    def __init__(self, cfg: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype):
        self.layers: list[LayerCache] = []
        hkv, d = cfg.n_kv_heads, cfg.head_dim_
        for i in range(cfg.n_layers):
            ring = not cfg.is_global(i)
            size = cfg.window if ring else 0
            self.layers.append(LayerCache(
                torch.zeros(batch, hkv, size, d, device=device, dtype=dtype),
                torch.zeros(batch, hkv, size, d, device=device, dtype=dtype),
                torch.full((size,), -1, dtype=torch.long, device=device), ring))
        self.length = 0  # tokens seen so far


def _store(cache: LayerCache, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> None:
    if not cache.ring:
        # A global layer's cache grows by one token a step: write into spare room (doubled
        # when full) rather than concatenating, which copied the whole cache every step
        # (about a sixth of a worked-format rollout's time).
        T, n = k.shape[2], cache.used
        if n + T > cache.k.shape[2]:
            room = max(n + T, 2 * cache.k.shape[2], 16)
            grown = [t.new_zeros(*t.shape[:2], room, t.shape[3]) for t in (cache.k, cache.v)]
            for new, old in zip(grown, (cache.k, cache.v), strict=True):
                new[:, :, :n] = old[:, :, :n]
            cache.pos = torch.cat([cache.pos[:n], cache.pos.new_full((room - n,), -1)])
            cache.k, cache.v = grown
        cache.k[:, :, n:n + T] = k
        cache.v[:, :, n:n + T] = v
        cache.pos[n:n + T] = pos
        cache.used = n + T
        return
    W = cache.pos.numel()
    k, v, pos = k[:, :, -W:], v[:, :, -W:], pos[-W:]  # only the last W can ever be seen again
    slots = pos % W
    cache.k[:, :, slots] = k
    cache.v[:, :, slots] = v
    cache.pos[slots] = pos


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.cfg = cfg
        self.local = not cfg.is_global(layer)
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim_
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.head_dim_, bias=False)
        self.k = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim_, bias=False)
        self.v = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim_, bias=False)
        self.o = nn.Linear(cfg.n_heads * cfg.head_dim_, cfg.d_model, bias=False)
        # smeared keys: per key head, the logit of the previous position's share of each key
        self.smear = nn.Parameter(torch.zeros(cfg.n_kv_heads)) if cfg.smear_keys else None

    def smear_keys(self, k: torch.Tensor, cache: LayerCache | None) -> torch.Tensor:
        """Keys k (B, Hkv, T, D) mixed with the previous position's: k_t + s (k_{t-1} - k_t),
        s = sigmoid(smear) per head (Olsson et al. 2022, "smeared key"). A key then carries the
        token before it, so a single layer can match "the token after an earlier copy of this
        one": an induction head without a previous-token head below it. The first position
        of a sequence mixes with zeros; a cache carries the last unmixed key across calls."""
        first = cache.last_k if cache is not None and cache.last_k is not None else None
        if first is None:
            first = k.new_zeros(k.shape[0], k.shape[1], 1, k.shape[3])
        prev = torch.cat([first, k[:, :, :-1]], dim=2)
        if cache is not None:
            cache.last_k = k[:, :, -1:]
        s = torch.sigmoid(self.smear).to(k.dtype).view(1, -1, 1, 1)
        return k + s * (prev - k)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, cache: LayerCache | None = None,
                block_mask: object | None = None) -> torch.Tensor:
        """x (B, T, C) at absolute positions ``pos`` (T,); with a cache, attends to it too.
        ``block_mask``: the flex path's sliding-window mask, built once per forward by the
        model (see :func:`mai_repro.model.flex.window_block_mask`); built here if None."""
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if self.smear is not None:
            k = self.smear_keys(k, cache)
        if self.local:
            cos, sin = rope_tables(self.head_dim, pos, self.cfg.rope_base, self.cfg.rope_scale)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        window = self.cfg.window if self.local else None
        if cache is None:
            keys, values, k_pos = k, v, pos
        elif not cache.ring:  # earlier tokens from the cache, then this call's tokens
            _store(cache, k, v, pos)
            n = cache.used
            keys, values, k_pos = cache.k[:, :, :n], cache.v[:, :, :n], cache.pos[:n]
        else:  # the ring is overwritten in turn: read it before storing this call's tokens
            keys = torch.cat([cache.k, k], dim=2)
            values = torch.cat([cache.v, v], dim=2)
            k_pos = torch.cat([cache.pos, pos])
            _store(cache, k, v, pos)
        if cache is None and not self.local:  # global NoPE: plain causal, the flash kernel
            y = F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=True)
        elif cache is None and use_flex(self.cfg.attn_impl, q):
            y = flex_window_attention(q, keys, values, self.cfg.window, block_mask)
        elif cache is None and T > 4 * self.cfg.window:  # long: blocks, not a T x T mask
            y = local_attention(q, keys, values, self.cfg.window)
        else:
            mask = attention_mask(pos, k_pos, window)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=True)
        return self.o(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
