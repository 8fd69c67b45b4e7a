"""LatentMoE: a mixture of experts that computes in a compressed latent width.

Reading order (one forward pass, N tokens, E experts, top-k):

1. **Route** on the full-width input x (N, d): scores = softmax or sigmoid of x @ W_router,
   the top-k experts per token, their weights (renormalised over the k for sigmoid).
2. **Compress once**: z = x @ W_down (N, l), shared by all experts (l = d / 4 in Nemotron-3).
   A standard MoE is the same layer with l = d and no projections.
3. **Dispatch without dropping** anything: the N*k (token, expert) slots are sorted by expert,
   so each expert's tokens are contiguous; ``counts`` says how many each got (zero is fine).
4. **Experts** run a SwiGLU in the latent width on their contiguous slice, all at once with a
   grouped GEMM (``torch.nn.functional.grouped_mm`` with the slice offsets), or one by one in a
   Python loop (the reference, and the faster path on CPU).
5. **Combine** in the latent width: each slot's output times its routing weight, summed back
   into its token (index_add).
6. **Expand once**: y = y_latent @ W_up (N, d).

Load balancing: an auxiliary loss (Switch-style, ``balance="aux_loss"``) or DeepSeek-V3's
auxiliary-loss-free bias (``balance="bias"``): a per-expert bias added to the scores for the
top-k *choice only*, nudged after each optimizer step toward equal load (:meth:`update_bias`).
``routing`` replays given expert choices (RL routing replay): the weights are recomputed from
the current scores at those experts, so the router still gets gradients.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mai_repro.model.config import ModelConfig

# The public name arrived in a later torch than the private op it wraps.
grouped_mm = getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def load_cv(load: torch.Tensor) -> float:
    """Imbalance of expert load: the mean over MoE layers of std / mean of the token-slots each
    expert received, for a (layers, experts) tensor (0 = perfectly even; 0 when empty)."""
    if load.numel() == 0 or load.sum() == 0:
        return 0.0
    load = load.float()
    return float((load.std(dim=1, unbiased=False) / load.mean(dim=1).clamp_min(1e-9)).mean())


class LatentMoE(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d, lat, de, E = cfg.d_model, cfg.latent_dim, cfg.d_expert, cfg.n_experts
        self.n_experts, self.top_k = E, cfg.top_k
        self.router = nn.Linear(d, E, bias=False)
        self.down = nn.Linear(d, lat, bias=False) if cfg.is_latent else None
        self.up = nn.Linear(lat, d, bias=False) if cfg.is_latent else None
        # Gate and up projections of all experts fused: one grouped GEMM instead of two.
        self.w_in = nn.Parameter(torch.empty(E, lat, 2 * de))
        self.w_out = nn.Parameter(torch.empty(E, de, lat))
        nn.init.normal_(self.w_in, std=0.02)
        nn.init.normal_(self.w_out, std=0.02)
        self.register_buffer("balance_bias", torch.zeros(E), persistent=True)
        self.register_buffer("load", torch.zeros(E), persistent=True)  # since last bias update
        self.last_load = torch.zeros(E, dtype=torch.long)  # slots per expert, last forward

    # -- 1. routing ------------------------------------------------------------------------
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.router(x).float()
        return logits.softmax(-1) if self.cfg.router_score == "softmax" else logits.sigmoid()

    def route(self, x: torch.Tensor, routing: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(expert ids (N, k), weights (N, k), scores (N, E)) for tokens x (N, d)."""
        scores = self.scores(x)
        if routing is None:
            choice = scores + self.balance_bias if self.cfg.balance == "bias" else scores
            idx = choice.topk(self.top_k, dim=-1).indices
        else:
            idx = routing.reshape(-1, self.top_k).to(x.device)
        weights = scores.gather(-1, idx)
        if self.cfg.router_score == "sigmoid":
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-9)
        return idx, weights, scores

    def aux_loss(self, counts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """E * sum_e f_e P_e: f_e the share of slots sent to e, P_e the mean score of e."""
        E = self.n_experts
        f = counts.float() / counts.sum()
        p = scores / scores.sum(-1, keepdim=True)
        return self.cfg.aux_loss_coef * E * (f * p.mean(0)).sum()

    # -- 4. experts ------------------------------------------------------------------------
    def _experts_grouped(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        offs = counts.cumsum(0).to(torch.int32)
        a = grouped_mm(h, self.w_in.to(h.dtype), offs=offs)
        gate, up = a.chunk(2, dim=-1)
        return grouped_mm((F.silu(gate) * up).contiguous(), self.w_out.to(h.dtype), offs=offs)

    def _experts_loop(self, h: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        outs, start = [], 0
        for e, n in enumerate(counts.tolist()):
            if n:
                gate, up = (h[start:start + n] @ self.w_in[e].to(h.dtype)).chunk(2, dim=-1)
                outs.append((F.silu(gate) * up) @ self.w_out[e].to(h.dtype))
            start += n
        return torch.cat(outs) if outs else h.new_zeros(0, self.w_out.shape[-1])

    def use_grouped(self, h: torch.Tensor) -> bool:
        impl = self.cfg.moe_impl
        if impl == "auto":
            impl = "grouped" if h.is_cuda else "loop"
        if impl == "grouped" and grouped_mm is not None:  # needs 16-byte-aligned rows
            align = 16 // h.element_size()
            return (self.w_in.shape[1] % align == 0 and self.w_in.shape[2] % align == 0
                    and self.w_out.shape[1] % align == 0)
        return False

    # -- the whole layer -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, routing: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> (y (B, T, d), aux loss, expert ids (B, T, k))."""
        B, T, d = x.shape
        xf = x.reshape(-1, d)
        idx, weights, scores = self.route(xf, routing)
        z = self.down(xf) if self.down is not None else xf  # 2. compress once
        # 3. dropless dispatch: sort the N*k slots by expert
        flat = idx.reshape(-1)
        order = flat.argsort(stable=True)
        token_of_slot = order // self.top_k
        counts = torch.bincount(flat, minlength=self.n_experts)
        h = z[token_of_slot]
        out = self._experts_grouped(h, counts) if self.use_grouped(h) else \
            self._experts_loop(h, counts)
        # 5. combine in the latent width
        out = out * weights.reshape(-1)[order].unsqueeze(-1).to(out.dtype)
        y = torch.zeros_like(z).index_add_(0, token_of_slot, out.to(z.dtype))
        y = self.up(y) if self.up is not None else y  # 6. expand once
        with torch.no_grad():  # kept on the device: no host sync in the forward pass
            self.last_load = counts.detach()
            if self.training:
                self.load += counts.float()
        aux = self.aux_loss(counts, scores) if self.cfg.balance == "aux_loss" else \
            x.new_zeros(())
        return y.view(B, T, d), aux, idx.view(B, T, self.top_k)

    @torch.no_grad()
    def update_bias(self) -> None:
        """Aux-loss-free balancing, once per optimizer step: raise the bias of under-loaded
        experts and lower it for over-loaded ones, by a fixed step."""
        if self.cfg.balance == "bias" and self.load.sum() > 0:
            self.balance_bias += self.cfg.bias_update_rate * torch.sign(self.load.mean()
                                                                         - self.load)
        self.load.zero_()
