"""Mid-training with context extension: the mix, the per-stage positions, long attention."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from mai_repro import config
from mai_repro.data.shards import FamilyShard, pack
from mai_repro.model.attention import KVCache, attention_mask, local_attention, rope_tables
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.stages import midtraining as midtrain


def test_mix_is_the_reports_mapped_onto_our_families():
    m = config.load("smoke").midtrain
    tokens = {"code": 100, "stem": 300, "math": 100, "general": 50, "multilingual": 150}
    w = midtrain.mix_weights(m, tokens)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["code"] == pytest.approx(0.55)
    assert w["stem"] + w["math"] == pytest.approx(0.35)
    assert w["stem"] == pytest.approx(3 * w["math"])  # by training tokens within the group
    assert w["general"] + w["multilingual"] == pytest.approx(0.10)
    # a family without long documents drops out; its group keeps its share if it can
    w = midtrain.mix_weights(m, {k: v for k, v in tokens.items() if k != "math"})
    assert w["math"] == 0 and w["stem"] == pytest.approx(0.35)


def test_stage_positions_touch_only_the_local_rope():
    base = ModelConfig(head_dim=32, n_heads=4, d_model=128, rope_base=10000.0)
    s = 1024 / 256
    b = midtrain.stage_model_config(base, "base", 256, 1024)
    assert b.rope_base == pytest.approx(10000.0 * s ** (32 / 30)) and b.rope_scale == 1.0
    p = midtrain.stage_model_config(base, "pi", 256, 1024)
    assert p.rope_scale == 4.0 and p.rope_base == 10000.0
    n = midtrain.stage_model_config(base, "none", 256, 4096)
    assert (n.rope_base, n.rope_scale, n.max_seq_len) == (10000.0, 1.0, 4096)
    assert dataclasses.replace(b, rope_base=base.rope_base, max_seq_len=base.max_seq_len) == base


def test_position_interpolation_divides_positions():
    pos = torch.arange(0, 64, 4)
    cos_pi, sin_pi = rope_tables(16, pos, 500.0, scale=4.0)
    cos, sin = rope_tables(16, pos // 4, 500.0)
    torch.testing.assert_close(cos_pi, cos)
    torch.testing.assert_close(sin_pi, sin)


@pytest.mark.parametrize("T, W", [(1, 4), (13, 4), (64, 8), (100, 8), (257, 32)])
def test_blockwise_local_attention_equals_the_dense_window_mask(T, W):
    g = torch.Generator().manual_seed(T)
    q = torch.randn(2, 4, T, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 2, T, 8, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 2, T, 8, generator=g, dtype=torch.float64, requires_grad=True)
    pos = torch.arange(T)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=attention_mask(pos, pos, W), enable_gqa=True)
    blocked = local_attention(q, k, v, W)
    torch.testing.assert_close(blocked, dense)
    gd = torch.autograd.grad(dense.square().sum(), (q, k, v))
    gb = torch.autograd.grad(blocked.square().sum(), (q, k, v))
    for a, b in zip(gb, gd, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("positions", ["base", "pi", "none"])
def test_kv_cache_agrees_with_training_attention_at_the_extended_length(positions):
    """Training-time attention (block-wise local layers, T = 16 windows) and incremental
    decoding through the sliding-window KV cache give the same logits at every position."""
    pre = ModelConfig(vocab_size=64, n_layers=4, d_model=32, n_heads=4, n_kv_heads=2,
                      attn_period=2, window=8, max_seq_len=32, d_ff=64, n_experts=4, top_k=2,
                      d_expert=32, d_latent=16, zero_init_attn=False)
    cfg = midtrain.stage_model_config(pre, positions, 32, 128)
    torch.manual_seed(0)
    model = Transformer(cfg).double().eval()
    idx = torch.randint(0, 64, (2, 128))
    with torch.no_grad():
        full = model(idx).logits
        cache = KVCache(cfg, 2, idx.device, torch.float64)
        parts = [model(idx[:, :40], cache=cache).logits]  # a prompt longer than the window
        parts += [model(idx[:, t:t + 1], cache=cache).logits for t in range(40, 128)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full)


def test_blockwise_attention_saves_less_memory():
    cfg = ModelConfig(n_heads=4, n_kv_heads=2, d_model=64, window=16)
    mem = midtrain.attention_memory(cfg, batch=1, length=2048)
    assert mem["blocked_mib"] < mem["dense_mib"] / 4


def test_train_run_goes_through_the_stages():
    pre = ModelConfig(vocab_size=64, n_layers=2, d_model=32, n_heads=4, n_kv_heads=2,
                      attn_period=2, window=8, max_seq_len=16, d_ff=64, n_experts=4, top_k=2,
                      d_expert=32, d_latent=16)
    m = config.load("smoke", {"midtrain": {"contexts": [32, 64], "steps": [2, 1],
                                           "tokens_per_step": 128, "warmup_steps": 1}}).midtrain
    rng = np.random.default_rng(0)
    shards = {f: FamilyShard(pack(rng.integers(0, 64, 3000), 16), np.arange(0, 3000, 500),
                             ["d"] * 6) for f in ("code", "stem")}
    windows = {c: midtrain.training_windows(shards, c, 16) for c in m.contexts}
    model, records = midtrain.train_run(Transformer(pre), "base", m, windows,
                                        {"code": 0.6, "stem": 0.4}, 16, 0, "cpu", None,
                                        progress=False)
    assert [r["batch_size"] for r in records] == [4, 2]
    assert [len(r["loss"]) for r in records] == [2, 1]
    assert all(math.isfinite(x) for r in records for x in r["loss"])
    assert records[-1]["activation_mib"] > 0
    assert model.cfg.rope_base == pytest.approx(10000.0 * 4 ** (8 / 6))
