"""The model's configuration: one dataclass shared by the module, the counter and the presets.

Conventions (the module in ``transformer.py`` and the counter in ``accounting.py`` both follow
them, and a test checks that they agree):

- layer ``i`` (0-based) uses global attention without positional encoding when
  ``(i + 1) % attn_period == 0``; every other layer uses sliding-window attention of ``window``
  tokens with RoPE. ``attn_period = 6`` is the report's 5 local + 1 global; 1 means all global.
- ``ffn_layout = "interleaved"``: even layers have a dense SwiGLU FFN, odd layers a MoE FFN;
  ``"all_moe"``: a MoE FFN in every layer; ``"all_dense"``: no experts at all.
- A MoE FFN is LatentMoE: a router on the full-width input, a shared down-projection
  ``d_model -> d_latent``, SwiGLU experts of hidden width ``d_expert`` computing in the latent
  width, a weighted combine in the latent width and one shared up-projection back. With
  ``d_latent = None`` (or equal to ``d_model``) there are no projections: a standard MoE.
- No biases anywhere; RMSNorm before attention, before the FFN and before the output head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mai_repro.schema import spec


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = spec(4096, min=2, help="tokenizer vocabulary size")
    n_layers: int = spec(6, min=1, help="transformer blocks")
    d_model: int = spec(128, min=1, help="residual stream width")
    n_heads: int = spec(4, min=1, help="query heads")
    n_kv_heads: int = spec(2, min=1, help="key/value heads (GQA); must divide n_heads")
    head_dim: int | None = spec(None, min=1, help="per-head width; null = d_model // n_heads")
    attn_period: int = spec(6, min=1, help="every attn_period-th layer is global (NoPE), the "
                                           "others local sliding-window with RoPE; 1 = all global")
    window: int = spec(128, min=1, help="sliding-window size of the local layers, in tokens")
    rope_base: float = spec(10000.0, min=1.0, help="RoPE base of the local layers")
    rope_scale: float = spec(1.0, min=1.0, help="position interpolation of the local layers' "
                                                "RoPE: positions divided by this (1 = off)")
    max_seq_len: int = spec(512, min=1, help="longest sequence the model is trained on")
    ffn_layout: Literal["interleaved", "all_moe", "all_dense"] = "interleaved"
    d_ff: int = spec(512, min=1, help="hidden width of the dense SwiGLU FFN")
    n_experts: int = spec(8, min=1, help="routed experts per MoE layer")
    top_k: int = spec(2, min=1, help="experts per token")
    d_expert: int = spec(128, min=1, help="hidden width of one expert's SwiGLU")
    d_latent: int | None = spec(64, min=1, help="LatentMoE width; null = d_model (standard MoE)")
    router_score: Literal["softmax", "sigmoid"] = "softmax"
    balance: Literal["aux_loss", "bias", "none"] = "aux_loss"
    aux_loss_coef: float = spec(1e-2, min=0.0, help="auxiliary load-balancing loss weight")
    bias_update_rate: float = spec(1e-3, min=0.0, help="aux-loss-free bias step per update")
    zero_init_attn: bool = spec(True, help="zero-initialise the attention output projection")
    smear_keys: bool = spec(False, help="smeared keys (Olsson et al. 2022): each key head mixes "
                            "its position's key with the previous position's by a learned "
                            "weight, so one layer can form an induction head")
    tie_embeddings: bool = spec(False, help="share the input embedding and the output head")
    norm_eps: float = spec(1e-5, min=0.0, help="RMSNorm epsilon")
    dropout: float = spec(0.0, min=0.0, max=1.0, help="dropout probability (0 = off)")
    moe_impl: Literal["auto", "grouped", "loop"] = "auto"  # auto: grouped GEMM on CUDA
    # local layers' attention: flex = FlexAttention with a sliding-window block mask (fused and
    # tile-sparse once compiled), sdpa = SDPA with a boolean mask; auto: flex on CUDA only
    attn_impl: Literal["auto", "sdpa", "flex"] = "auto"

    def check(self) -> list[tuple[str, str]]:
        errors = []
        if self.n_heads % self.n_kv_heads:
            errors.append(("n_kv_heads", f"must divide n_heads={self.n_heads}, "
                                         f"got {self.n_kv_heads}"))
        if self.head_dim is None and self.d_model % self.n_heads:
            errors.append(("n_heads", f"must divide d_model={self.d_model} when head_dim is "
                                      f"null, got {self.n_heads}"))
        if self.top_k > self.n_experts:
            errors.append(("top_k", f"must be <= n_experts={self.n_experts}, got {self.top_k}"))
        if self.d_latent is not None and self.d_latent > self.d_model:
            errors.append(("d_latent", f"must be <= d_model={self.d_model}, got {self.d_latent}"))
        if self.attn_period > 1 and self.head_dim_ % 2:
            errors.append(("head_dim", "RoPE needs an even head width"))
        return errors

    # Derived quantities: one place, so module and counter never disagree.
    @property
    def head_dim_(self) -> int:
        return self.head_dim if self.head_dim is not None else self.d_model // self.n_heads

    @property
    def latent_dim(self) -> int:
        return self.d_latent if self.d_latent is not None else self.d_model

    @property
    def is_latent(self) -> bool:
        return self.latent_dim != self.d_model

    def is_global(self, layer: int) -> bool:
        """Global attention (NoPE) in this layer, else local sliding-window with RoPE."""
        return (layer + 1) % self.attn_period == 0

    def is_moe(self, layer: int) -> bool:
        if self.ffn_layout == "all_dense":
            return False
        if self.ffn_layout == "all_moe":
            return True
        return layer % 2 == 1

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe(i) for i in range(self.n_layers))


@dataclass(frozen=True)
class ProbeConfig:
    """Notebook 04's short training runs (zero-init vs standard attention init)."""

    steps: int = spec(120, min=1, help="optimizer steps per run")
    batch_size: int = spec(16, min=1, help="sequences per step")
    seq_len: int = spec(128, min=8, help="bytes per sequence")
    lr: float = spec(3e-3, min=0.0, max=1.0, help="peak learning rate")
    record_every: int = spec(10, min=1, help="measure expert load every this many steps")
    corpus_bytes: int = spec(2_000_000, min=10_000, help="bytes of standard-library source")


@dataclass(frozen=True)
class OverviewConfig:
    """Assumptions of the MAI-scale arithmetic in notebook 00 (the report states neither)."""

    gpu_peak_tflops: float = spec(2500.0, min=1.0, help="dense BF16 peak of one GPU in TFLOP/s "
                                                        "(GB200: about 2,500)")
    mfu: float = spec(0.40, min=0.01, max=1.0, help="model-FLOPs utilisation assumed for the "
                                                    "GPU-days estimate")
