"""MAI-Base in miniature: a decoder-only transformer with periodic attention and LatentMoE.

    tokens -> embedding -> [block] x n_layers -> RMSNorm -> output head -> logits
    block:  x = x + Attention(RMSNorm(x))      local (window, RoPE) or global (NoPE)
            x = x + FFN(RMSNorm(x))            dense SwiGLU or LatentMoE (interleaved)

Which layer is local or global, dense or MoE, is decided by ModelConfig.is_global / is_moe,
the same functions the parameter counter uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from mai_repro.model.attention import Attention, KVCache
from mai_repro.model.config import ModelConfig
from mai_repro.model.flex import use_flex, window_block_mask
from mai_repro.model.moe import LatentMoE


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer)
        self.ffn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.is_moe = cfg.is_moe(layer)
        self.ffn = LatentMoE(cfg) if self.is_moe else SwiGLU(cfg.d_model, cfg.d_ff)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, pos, cache=None, routing=None, block_mask=None):
        x = x + self.dropout(self.attn(self.attn_norm(x), pos, cache, block_mask))
        h = self.ffn_norm(x)
        if self.is_moe:
            y, aux, idx = self.ffn(h, routing)
        else:
            y, aux, idx = self.ffn(h), None, None
        return x + self.dropout(y), aux, idx


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, V)
    aux_loss: torch.Tensor  # summed over MoE layers (0 without aux-loss balancing)
    routing: list[torch.Tensor] = field(default_factory=list)  # per MoE layer (B, T, k)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        problems = cfg.check()
        if problems:
            raise ValueError("invalid ModelConfig: " + "; ".join(f"{k}: {m}" for k, m in problems))
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.vocab_size,
                                                              bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        for block in self.blocks:
            if self.cfg.zero_init_attn:  # at init every block is an FFN
                nn.init.zeros_(block.attn.o.weight)
            if block.attn.smear is not None:  # each key starts half its own, half the previous
                nn.init.zeros_(block.attn.smear)

    @property
    def moe_layers(self) -> list[LatentMoE]:
        return [b.ffn for b in self.blocks if b.is_moe]

    def forward(self, idx: torch.Tensor, routing: list[torch.Tensor] | None = None,
                cache: KVCache | None = None, at: torch.Tensor | None = None) -> ModelOutput:
        """Logits for token ids (B, T). ``routing`` replays expert choices per MoE layer;
        with a ``cache``, idx continues the cached sequence. ``at`` (B, n): logits at these
        positions of each row only (the RL learner's completion positions): the final norm
        and the vocabulary-sized head skip the rest."""
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.embed(idx)
        block_mask = self._local_block_mask(x, cache)
        aux = x.new_zeros((), dtype=torch.float32)
        chosen: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            r = routing[len(chosen)] if (routing is not None and block.is_moe) else None
            x, a, e = block(x, pos, cache.layers[i] if cache is not None else None, r,
                            block_mask)
            if a is not None:
                aux = aux + a
            if e is not None:
                chosen.append(e)
        if cache is not None:
            cache.length += T
        if at is not None:
            x = x.gather(1, at[..., None].expand(-1, -1, x.shape[-1]))
        x = self.norm(x)
        logits = x @ self.embed.weight.T if self.head is None else self.head(x)
        return ModelOutput(logits, aux, chosen)

    def _local_block_mask(self, x: torch.Tensor, cache: KVCache | None) -> object | None:
        """The flex path's sliding-window block mask for embeddings x (B, T, C), shared by
        every local layer of this forward; None when the local layers use SDPA (or a cache)."""
        cfg = self.cfg
        if cache is not None or cfg.attn_period == 1 or not use_flex(cfg.attn_impl, x):
            return None
        return window_block_mask(x.shape[1], x.shape[1], cfg.window, x.device)


    def expert_load(self) -> torch.Tensor:
        """(n_moe_layers, n_experts) token-slots per expert in the last forward."""
        if not self.moe_layers:
            return torch.zeros(0, self.cfg.n_experts)
        return torch.stack([m.last_load.float().cpu() for m in self.moe_layers])


def split_output(out: object) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits, aux_loss or None) from whatever a model's forward returns."""
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, (tuple, list)):
        aux = out[1] if len(out) > 1 and isinstance(out[1], torch.Tensor) else None
        return out[0], aux
    return out.logits, getattr(out, "aux_loss", None)


def with_config(model: Transformer, cfg: ModelConfig) -> Transformer:
    """The same weights in a model of another (shape-compatible) config, on the same device:
    a stage's RoPE settings, RL's load-balancing weight or dropout changed, nothing else."""
    new = Transformer(cfg).to(next(model.parameters()).device)
    new.load_state_dict(model.state_dict())
    return new
