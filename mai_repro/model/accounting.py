"""Parameter and compute accounting from a :class:`ModelConfig`, by arithmetic alone.

The counter follows the conventions documented in ``mai_repro/model/config.py``; a test builds
the module for several configs and checks that the counter equals the sum of its parameters.
"Active" parameters are those a single token touches: everything except the experts it is not
routed to (embeddings included, as the MAI-Thinking-1 report's 35B-active figure is stated for
the whole model).
"""

from __future__ import annotations

from dataclasses import dataclass

from mai_repro.model.config import ModelConfig


@dataclass(frozen=True)
class ParamBreakdown:
    """Parameter counts by component, total and active per token."""

    embedding: int
    head: int
    attention: int
    dense_ffn: int
    router: int
    latent_proj: int
    experts_total: int
    experts_active: int
    norms: int

    @property
    def total(self) -> int:
        return (self.embedding + self.head + self.attention + self.dense_ffn + self.router
                + self.latent_proj + self.experts_total + self.norms)

    @property
    def active(self) -> int:
        return self.total - self.experts_total + self.experts_active

    def rows(self) -> list[tuple[str, int, int]]:
        """(component, total, active) rows for tables and figures."""
        return [
            ("embeddings", self.embedding, self.embedding),
            ("output head", self.head, self.head),
            ("attention", self.attention, self.attention),
            ("dense FFN", self.dense_ffn, self.dense_ffn),
            ("routers", self.router, self.router),
            ("latent projections", self.latent_proj, self.latent_proj),
            ("experts", self.experts_total, self.experts_active),
            ("norms", self.norms, self.norms),
        ]


def attention_params(cfg: ModelConfig) -> int:
    """q, k, v and output projections of one attention layer (GQA, no biases), and the
    smeared keys' mixing weights where they are on."""
    q = cfg.d_model * cfg.n_heads * cfg.head_dim_
    kv = 2 * cfg.d_model * cfg.n_kv_heads * cfg.head_dim_
    o = cfg.n_heads * cfg.head_dim_ * cfg.d_model
    smear = cfg.n_kv_heads if cfg.smear_keys else 0  # one mixing weight per key head
    return q + kv + o + smear


def expert_params(cfg: ModelConfig) -> int:
    """One expert: a SwiGLU (gate, up, down) from the latent width to d_expert and back."""
    return 3 * cfg.latent_dim * cfg.d_expert


def dense_ffn_params(cfg: ModelConfig) -> int:
    """One dense SwiGLU FFN layer."""
    return 3 * cfg.d_model * cfg.d_ff


def moe_layer_params(cfg: ModelConfig) -> tuple[int, int]:
    """(total, active per token) of one MoE layer: router, latent projections, experts."""
    shared = cfg.d_model * cfg.n_experts
    if cfg.is_latent:
        shared += 2 * cfg.d_model * cfg.latent_dim
    return (shared + cfg.n_experts * expert_params(cfg),
            shared + cfg.top_k * expert_params(cfg))


def count_params(cfg: ModelConfig) -> ParamBreakdown:
    """Count every parameter of the model that ``cfg`` describes, by component."""
    n_moe = cfg.n_moe_layers
    n_dense = cfg.n_layers - n_moe
    return ParamBreakdown(
        embedding=cfg.vocab_size * cfg.d_model,
        head=0 if cfg.tie_embeddings else cfg.vocab_size * cfg.d_model,
        attention=cfg.n_layers * attention_params(cfg),
        dense_ffn=n_dense * dense_ffn_params(cfg),
        router=n_moe * cfg.d_model * cfg.n_experts,
        latent_proj=n_moe * 2 * cfg.d_model * cfg.latent_dim if cfg.is_latent else 0,
        experts_total=n_moe * cfg.n_experts * expert_params(cfg),
        experts_active=n_moe * cfg.top_k * expert_params(cfg),
        norms=(2 * cfg.n_layers + 1) * cfg.d_model,
    )


def training_flops(active_params: float, tokens: float) -> float:
    """The standard estimate of training compute: 6 FLOPs per active parameter per token."""
    return 6.0 * active_params * tokens


def gpu_days(flops: float, n_gpus: int, peak_flops_per_gpu: float, mfu: float) -> float:
    """Wall-clock days on ``n_gpus`` running at ``mfu`` of their peak, and the GPU-days."""
    seconds = flops / (n_gpus * peak_flops_per_gpu * mfu)
    return seconds / 86400.0


def mai_base_1() -> ModelConfig:
    """A MAI-Base-1-like configuration (RECIPE.md section 2) at full scale.

    Fixed by the report: 78 layers, 5 local + 1 global attention period, sliding window 512,
    GQA with 8 KV heads, dense FFN and LatentMoE interleaved, 512 experts top-8, vocab 200,019,
    and (as in Nemotron-3) a compression ratio d/l = 4. Chosen by us so the totals land near
    the report's ~1T total and 35B active: width 8192, 64 heads of 128, dense FFN 4096 and
    experts of hidden width 7936.
    """
    return ModelConfig(
        vocab_size=200_019, n_layers=78, d_model=8192, n_heads=64, n_kv_heads=8,
        head_dim=128, attn_period=6, window=512, max_seq_len=16_384,
        ffn_layout="interleaved", d_ff=4096, n_experts=512, top_k=8, d_expert=7936,
        d_latent=2048, router_score="sigmoid", balance="bias",
    )


def mean_context(seq_len: int, window: int | None) -> float:
    """Average number of keys a query attends to over positions 0..seq_len-1 (causal)."""
    if window is None or window >= seq_len:
        return (seq_len + 1) / 2
    ramp = window * (window + 1) / 2  # positions 0..window-1 see pos+1 keys
    return (ramp + (seq_len - window) * window) / seq_len


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> dict[str, float]:
    """Forward FLOPs per token: matmuls (2 per active weight, the embedding lookup excluded)
    and attention scores and values (4 * heads * head_dim * keys attended, per layer)."""
    p = count_params(cfg)
    matmul = 2.0 * (p.active - p.embedding - p.norms)
    if cfg.tie_embeddings:  # the tied matrix still does the output projection
        matmul += 2.0 * p.embedding
    attention = sum(4.0 * cfg.n_heads * cfg.head_dim_ *
                    mean_context(seq_len, None if cfg.is_global(i) else cfg.window)
                    for i in range(cfg.n_layers))
    return {"matmul": matmul, "attention": attention, "total": matmul + attention}
