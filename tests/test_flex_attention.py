"""The flex-attention path of the local layers against the masked-SDPA path (issue 21).

Both compute causal sliding-window attention; in float32 they must agree to 1e-5, at lengths
and windows that are not multiples of flex's 128-token block. On CPU, torch 2.13's flex
attention has no backward (it raises for inputs that require grad), so values are compared
here and gradients where flex has a backward (CUDA; benchmarks/gpu_check.py runs the same
comparison on the device); training on CPU stays on SDPA, which a test below checks. The
compiled kernel is tested where this machine can compile it (a C++ compiler), the eager
implementation always.
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

from mai_repro.model import flex
from mai_repro.model.attention import Attention, attention_mask
from mai_repro.model.config import ModelConfig
from mai_repro.model.generation import generate
from mai_repro.model.transformer import Transformer

create_block_mask = flex.create_block_mask

TOL = 1e-5

# (batch, query heads, kv heads, length, head dim, window): lengths and windows off the
# 128-token block, a window longer than the sequence, a window of one, GQA and MHA
SHAPES = [
    (2, 4, 2, 37, 16, 16),
    (1, 4, 4, 130, 32, 64),
    (2, 4, 1, 300, 16, 100),
    (1, 2, 2, 200, 32, 500),
    (1, 2, 1, 129, 16, 1),
]


def masked_sdpa(q, k, v, window):
    pos = torch.arange(q.shape[2], device=q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask(pos, pos, window),
                                          enable_gqa=True)


def qkv(B, H, Hkv, T, D, seed=0, device="cpu", requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, h, T, D, generator=g).to(device).requires_grad_(requires_grad)
            for h in (H, Hkv, Hkv)]


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture
def eager_flex(monkeypatch):
    """Force the eager (unfused) flex implementation: no compiler involved."""
    monkeypatch.setattr(flex, "_kernel", lambda device: None)


@pytest.mark.parametrize("B,H,Hkv,T,D,W", SHAPES)
def test_eager_flex_equals_masked_sdpa(eager_flex, B, H, Hkv, T, D, W):
    q, k, v = qkv(B, H, Hkv, T, D)
    assert max_diff(flex.flex_window_attention(q, k, v, W), masked_sdpa(q, k, v, W)) <= TOL


def compile_works() -> bool:
    try:
        q, k, v = qkv(1, 2, 2, 16, 16)
        flex.flex_window_attention(q, k, v, 4)
    except Exception:
        return False
    return flex._compiled.get("cpu") is not None


@pytest.mark.parametrize("B,H,Hkv,T,D,W", SHAPES[:3])
def test_compiled_flex_equals_masked_sdpa(B, H, Hkv, T, D, W):
    if not compile_works():
        pytest.skip("torch.compile of flex attention does not work on this machine")
    q, k, v = qkv(B, H, Hkv, T, D)
    y = flex.flex_window_attention(q, k, v, W)
    assert flex._compiled.get("cpu") is not None  # the compiled kernel ran, no fallback
    assert max_diff(y, masked_sdpa(q, k, v, W)) <= TOL


def backward_devices() -> list:
    """Devices whose flex attention has a backward (CUDA; CPU once torch gains one)."""
    cpu = pytest.param("cpu", marks=pytest.mark.skipif(
        not flex.cpu_backward_supported(),
        reason=f"flex attention has no backward on CPU in torch {torch.__version__}"))
    cuda = pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                         reason="no CUDA device"))
    return [cpu, cuda]


@pytest.mark.parametrize("device", backward_devices())
@pytest.mark.parametrize("B,H,Hkv,T,D,W", SHAPES)
def test_flex_gradients_equal_masked_sdpa(device, B, H, Hkv, T, D, W):
    q, k, v = qkv(B, H, Hkv, T, D, device=device, requires_grad=True)
    grad_out = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(1)).to(device)
    ref = torch.autograd.grad((masked_sdpa(q, k, v, W) * grad_out).sum(), (q, k, v))
    got = torch.autograd.grad((flex.flex_window_attention(q, k, v, W) * grad_out).sum(),
                              (q, k, v))
    assert max(max_diff(a, b) for a, b in zip(got, ref, strict=True)) <= TOL


def test_a_wrong_window_is_caught(eager_flex):
    """The comparison can fail: a block mask one token narrower gives other values."""
    q, k, v = qkv(1, 2, 2, 40, 16)
    mask = flex.window_block_mask(40, 40, 7, q.device)
    y = flex.flex_window_attention(q, k, v, 8, block_mask=mask)
    assert max_diff(y, masked_sdpa(q, k, v, 8)) > 1e-2


def tiny_config(**kw) -> ModelConfig:
    base = dict(vocab_size=64, n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, attn_period=3,
                window=8, max_seq_len=64, d_ff=48, n_experts=4, top_k=2, d_expert=16,
                d_latent=16, zero_init_attn=False)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("T", [5, 19, 45])  # 45 > 4 * window: SDPA takes its blocked path
def test_attention_layer_flex_equals_sdpa(eager_flex, T):
    torch.manual_seed(0)
    sdpa = Attention(tiny_config(attn_impl="sdpa"), layer=0)
    fl = Attention(tiny_config(attn_impl="flex"), layer=0)
    fl.load_state_dict(sdpa.state_dict())
    x, pos = torch.randn(2, T, 32), torch.arange(T)
    with torch.no_grad():
        assert max_diff(sdpa(x, pos), fl(x, pos)) <= TOL


def test_model_logits_flex_equal_sdpa(eager_flex, monkeypatch):
    torch.manual_seed(0)
    a = Transformer(tiny_config(attn_impl="sdpa"))
    b = Transformer(tiny_config(attn_impl="flex"))
    b.load_state_dict(a.state_dict())
    calls = []
    monkeypatch.setattr(flex, "create_block_mask",
                        lambda *args, **kw: calls.append(args) or create_block_mask(*args, **kw))
    idx = torch.randint(0, 64, (2, 30))
    with torch.no_grad():
        assert max_diff(a(idx).logits, b(idx).logits) <= TOL
    assert len(calls) <= 1  # one block mask per length, shared by the local layers


def test_cpu_training_stays_on_sdpa(monkeypatch, caplog):
    """Where flex has no backward on CPU, a training forward takes masked SDPA (one log line)
    and gives SDPA's gradients; without gradients the flex path runs."""
    if flex.cpu_backward_supported():
        pytest.skip("this torch has a flex backward on CPU")
    used = []
    real = flex.flex_window_attention
    monkeypatch.setattr("mai_repro.model.attention.flex_window_attention",
                        lambda *a, **kw: used.append(1) or real(*a, **kw))
    monkeypatch.setattr(flex, "_logged", set())
    torch.manual_seed(0)
    a = Transformer(tiny_config(attn_impl="sdpa"))
    b = Transformer(tiny_config(attn_impl="flex"))
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 64, (2, 30))
    with caplog.at_level(logging.WARNING, logger="mai_repro.model.flex"):
        b(idx).logits.sum().backward()
    assert not used and "no backward on CPU" in caplog.text
    a(idx).logits.sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa.grad, pb.grad)
    with torch.no_grad():
        b(idx)
    assert used


@pytest.mark.parametrize("impl", ["sdpa", "flex"])
def test_generation_with_cache_equals_recompute(eager_flex, impl):
    """The cached decode (masked SDPA over the cache) and the recomputation (the chosen path
    over the whole sequence) give the same greedy tokens and log-probs, past the window."""
    torch.manual_seed(0)
    model = Transformer(tiny_config(attn_impl=impl))
    prompt = torch.randint(0, 64, (2, 6))
    cached = generate(model, prompt, 20, temperature=0, use_cache=True)
    recomputed = generate(model, prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached.tokens, recomputed.tokens)
    assert torch.allclose(cached.logprobs, recomputed.logprobs, atol=1e-5)


def test_resolve_impl(monkeypatch, caplog):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert flex.resolve_impl("auto", cpu) == "sdpa"  # CPU presets keep today's path
    assert flex.resolve_impl("auto", cuda) == "flex"
    assert flex.resolve_impl("sdpa", cuda) == "sdpa"
    assert flex.resolve_impl("flex", cpu) == "flex"
    monkeypatch.setattr(flex, "flex_attention", None)
    monkeypatch.setattr(flex, "_logged", set())
    with caplog.at_level(logging.WARNING, logger="mai_repro.model.flex"):
        assert flex.resolve_impl("flex", cuda) == "sdpa"
    assert "no flex attention" in caplog.text


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(flex, "_compiled", {"cpu": broken})
    monkeypatch.setattr(flex, "_logged", set())
    q, k, v = qkv(1, 2, 2, 20, 16)
    with caplog.at_level(logging.WARNING, logger="mai_repro.model.flex"):
        y = flex.flex_window_attention(q, k, v, 6)
    assert "using the eager implementation" in caplog.text
    assert flex._compiled["cpu"] is None
    assert (y - masked_sdpa(q, k, v, 6)).abs().max().item() <= TOL


def test_presets_keep_cpu_paths_and_gpu_uses_flex():
    from mai_repro import config

    assert config.load("smoke").model.attn_impl == "auto"
    assert config.load("laptop").model.attn_impl == "auto"
    assert config.load("gpu").model.attn_impl == "flex"
    assert dataclasses.replace(tiny_config(), attn_impl="flex").attn_impl == "flex"
