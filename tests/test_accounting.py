import pytest

from mai_repro import reference
from mai_repro.model.accounting import count_params, gpu_days, mai_base_1, training_flops
from mai_repro.model.config import ModelConfig

# A config small enough to count by hand (see the arithmetic in each assert).
TINY = ModelConfig(vocab_size=10, n_layers=2, d_model=4, n_heads=2, n_kv_heads=1, head_dim=2,
                   attn_period=2, d_ff=6, n_experts=3, top_k=1, d_expert=5, d_latent=2)


def test_tiny_config_by_hand():
    p = count_params(TINY)
    assert p.embedding == 10 * 4
    assert p.head == 10 * 4
    # per layer: q 4x(2*2) + k,v 2 x 4x(1*2) + o (2*2)x4 = 16 + 16 + 16
    assert p.attention == 2 * 48
    # layer 0 dense (interleaved): 3 matrices 4x6
    assert p.dense_ffn == 72
    # layer 1 MoE: router 4x3, latent down 4x2 + up 2x4, 3 experts of 3 x (2x5)
    assert p.router == 12
    assert p.latent_proj == 16
    assert p.experts_total == 90
    assert p.experts_active == 30
    assert p.norms == (2 * 2 + 1) * 4
    assert p.total == 40 + 40 + 96 + 72 + 12 + 16 + 90 + 20 == 386
    assert p.active == 386 - 90 + 30 == 326


def test_variants_by_hand():
    tied = count_params(ModelConfig(**{**TINY.__dict__, "tie_embeddings": True}))
    assert tied.head == 0 and tied.total == 386 - 40
    standard = count_params(ModelConfig(**{**TINY.__dict__, "d_latent": None}))
    assert standard.latent_proj == 0
    assert standard.experts_total == 3 * 3 * 4 * 5  # experts now in the full width
    dense = count_params(ModelConfig(**{**TINY.__dict__, "ffn_layout": "all_dense"}))
    assert dense.router == dense.experts_total == dense.latent_proj == 0
    assert dense.dense_ffn == 2 * 72
    all_moe = count_params(ModelConfig(**{**TINY.__dict__, "ffn_layout": "all_moe"}))
    assert all_moe.dense_ffn == 0 and all_moe.experts_total == 2 * 90
    assert all_moe.active == all_moe.total - 2 * 90 + 2 * 30


def test_layer_conventions():
    cfg = ModelConfig(n_layers=12, attn_period=6)
    assert [cfg.is_global(i) for i in range(12)] == [False] * 5 + [True] + [False] * 5 + [True]
    assert [cfg.is_moe(i) for i in range(4)] == [False, True, False, True]
    assert all(ModelConfig(attn_period=1).is_global(i) for i in range(6))


def test_mai_base_1_within_five_percent_of_the_report():
    cfg = mai_base_1()
    p = count_params(cfg)
    assert cfg.n_layers == reference.N_LAYERS and cfg.vocab_size == reference.VOCAB_SIZE
    assert (cfg.n_experts, cfg.top_k, cfg.n_kv_heads, cfg.window) == (512, 8, 8, 512)
    assert sum(cfg.is_global(i) for i in range(78)) == 13  # 5 local + 1 global, 13 times
    assert cfg.n_moe_layers == 39
    assert p.total == pytest.approx(reference.TOTAL_PARAMS, rel=0.05)
    assert p.active == pytest.approx(reference.ACTIVE_PARAMS, rel=0.05)


def test_compute_arithmetic():
    assert training_flops(35e9, 30e12) == pytest.approx(6.3e24)
    # 8.64e19 FLOPs at 1e15 FLOP/s x 1 GPU x 100% = 86,400 s = 1 day
    assert gpu_days(8.64e19, 1, 1e15, 1.0) == pytest.approx(1.0)
    assert gpu_days(8.64e19, 2, 1e15, 0.5) == pytest.approx(1.0)


def test_forward_flops_by_hand():
    from mai_repro.model.accounting import forward_flops_per_token, mean_context

    assert mean_context(4, None) == 2.5  # (1 + 2 + 3 + 4) / 4
    assert mean_context(4, 2) == (1 + 2 + 2 + 2) / 4
    f = forward_flops_per_token(TINY, seq_len=4)  # TINY: layer 0 local (window 128), 1 global
    # matmul: 2 x (active 326 - embedding 40 - norms 20) = 532
    assert f["matmul"] == 532
    # attention: 2 layers x 4 x 2 heads x 2 dims x 2.5 keys on average
    assert f["attention"] == 2 * 4 * 2 * 2 * 2.5
    tied = forward_flops_per_token(ModelConfig(**{**TINY.__dict__, "tie_embeddings": True}), 4)
    assert tied["matmul"] == f["matmul"]  # same work, fewer parameters
