import dataclasses

import pytest
import torch

from mai_repro.model.accounting import count_params
from mai_repro.model.attention import attention_mask
from mai_repro.model.config import ModelConfig
from mai_repro.model.generation import (
    draw_within_nucleus,
    generate,
    nucleus_mask,
    sampling_logprobs,
)
from mai_repro.model.moe import LatentMoE
from mai_repro.model.transformer import Transformer

# Standard init (not zero-init) so attention actually mixes tokens in these tests.
BASE = ModelConfig(vocab_size=97, n_layers=4, d_model=64, n_heads=4, n_kv_heads=2,
                   attn_period=2, window=8, max_seq_len=64, d_ff=96, n_experts=6, top_k=2,
                   d_expert=32, d_latent=32, zero_init_attn=False)


def cfg(**kw):
    return dataclasses.replace(BASE, **kw)


@pytest.mark.parametrize("kw", [
    {}, {"d_latent": None}, {"ffn_layout": "all_dense"}, {"ffn_layout": "all_moe"},
    {"tie_embeddings": True}, {"attn_period": 1}, {"head_dim": 8, "n_heads": 2, "n_kv_heads": 1},
    {"router_score": "sigmoid", "balance": "bias"}, {"smear_keys": True},
])
def test_counter_equals_module(kw):
    c = cfg(**kw)
    model = Transformer(c)
    assert count_params(c).total == sum(p.numel() for p in model.parameters())


def test_active_count_by_hand():
    c = cfg(n_layers=2, ffn_layout="all_moe")
    p = count_params(c)
    per_expert = 3 * 32 * 32  # latent 32 -> expert 32, SwiGLU
    assert p.total - p.active == 2 * (6 - 2) * per_expert


def test_sliding_window_mask_by_hand():
    pos = torch.arange(5)
    m = attention_mask(pos, pos, window=2)
    expected = torch.tensor([[1, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0],
                             [0, 1, 1, 0, 0],
                             [0, 0, 1, 1, 0],
                             [0, 0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(m, expected)
    assert torch.equal(attention_mask(pos, pos, None), torch.ones(5, 5).tril().bool())
    # empty cache slots (position -1) are never attended
    assert not attention_mask(torch.tensor([3]), torch.tensor([-1, 2, 3]), 4)[0, 0]


def test_zero_init_attention_output_is_zero():
    model = Transformer(cfg(zero_init_attn=True))
    x = torch.randn(2, 10, 64)
    pos = torch.arange(10)
    for block in model.blocks:
        assert torch.count_nonzero(block.attn(x, pos)) == 0
    standard = Transformer(cfg(zero_init_attn=False))
    assert torch.count_nonzero(standard.blocks[0].attn(x, pos)) > 0


def moe_pair(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    c = cfg(**kw)
    grouped = LatentMoE(dataclasses.replace(c, moe_impl="grouped")).to(dtype)
    loop = LatentMoE(dataclasses.replace(c, moe_impl="loop")).to(dtype)
    loop.load_state_dict(grouped.state_dict())
    return grouped, loop


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("latent", [32, None])
def test_grouped_gemm_equals_loop_with_idle_experts(dtype, tol, latent):
    grouped, loop = moe_pair(dtype, d_latent=latent)
    with torch.no_grad():  # positive inputs, negative router rows: experts 0, 1 stay idle
        for m in (grouped, loop):
            m.router.weight[:2] = -1.0
    x = torch.randn(3, 7, 64, dtype=dtype).abs() + 0.1
    xg, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
    yg, ag, ig = grouped(xg)
    yl, al, il = loop(xl)
    assert torch.equal(ig, il)
    assert grouped.last_load[:2].sum() == 0, "expected idle experts in this case"
    assert grouped.use_grouped(xg.reshape(-1, 64)) and not loop.use_grouped(xl)
    torch.testing.assert_close(yg, yl, atol=tol, rtol=tol)
    g = torch.randn_like(yg)
    ((yg * g).sum() + ag).backward()
    ((yl * g).sum() + al).backward()
    torch.testing.assert_close(xg.grad, xl.grad, atol=tol, rtol=tol)
    for (name, pg), (_, pl) in zip(grouped.named_parameters(), loop.named_parameters(),
                                   strict=True):
        torch.testing.assert_close(pg.grad, pl.grad, atol=tol, rtol=tol, msg=name)


def test_routing_replay_reproduces_outputs_exactly():
    torch.manual_seed(0)
    model = Transformer(cfg())
    x = torch.randint(0, 97, (2, 20))
    first = model(x)
    replay = model(x, routing=first.routing)
    assert torch.equal(first.logits, replay.logits)
    # replaying other choices changes the output, and the router still gets gradients
    other = [(r + 1) % 6 for r in first.routing]
    changed = model(x, routing=other)
    assert not torch.equal(changed.logits, first.logits)
    changed.logits.sum().backward()
    assert model.moe_layers[0].router.weight.grad.abs().sum() > 0


def test_bias_balancing_moves_toward_equal_load():
    torch.manual_seed(0)
    moe = LatentMoE(cfg(balance="bias", router_score="sigmoid", bias_update_rate=0.05))
    with torch.no_grad():
        moe.router.weight[0] += 0.5  # expert 0 is everyone's favourite
    x = torch.randn(256, 1, 64)
    moe.train()
    moe(x)
    before = moe.last_load.clone()
    for _ in range(30):
        moe(x)
        moe.update_bias()
    assert moe.last_load.max() < before.max()
    assert moe.balance_bias[0] < 0


def test_smeared_keys_by_hand():
    model = Transformer(cfg(smear_keys=True))
    attn = model.blocks[0].attn
    k = torch.randn(1, 2, 4, 16)
    with torch.no_grad():
        attn.smear.copy_(torch.tensor([-30.0, 30.0]))  # head 0: own key; head 1: previous key
    out = attn.smear_keys(k, None)
    torch.testing.assert_close(out[:, 0], k[:, 0])
    torch.testing.assert_close(out[:, 1, 1:], k[:, 1, :-1])
    assert torch.count_nonzero(out[:, 1, 0]) == 0  # the first position mixes with zeros
    with torch.no_grad():
        attn.smear.zero_()  # at initialisation: half and half
    torch.testing.assert_close(attn.smear_keys(k, None)[:, :, 2], (k[:, :, 2] + k[:, :, 1]) / 2)


@pytest.mark.parametrize("temperature, top_p, smear",
                         [(0.0, 1.0, False), (1.0, 0.9, False), (0.7, 1.0, False),
                          (1.0, 0.9, True)])
def test_kv_cache_equals_recomputation_across_window(temperature, top_p, smear):
    torch.manual_seed(0)
    model = Transformer(cfg(smear_keys=smear))  # window 8, 30 tokens: many ring-buffer wraps
    if smear:  # away from the initial half-and-half, each head its own mix
        torch.nn.init.normal_(model.blocks[0].attn.smear, std=2.0)
    prompt = torch.randint(0, 97, (3, 5))
    kw = dict(temperature=temperature, top_p=top_p, return_routing=True, return_nucleus=True)
    a = generate(model, prompt, 30, generator=torch.Generator().manual_seed(1), **kw)
    b = generate(model, prompt, 30, generator=torch.Generator().manual_seed(1), use_cache=False,
                 **kw)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=1e-5)
    assert torch.equal(a.nucleus, b.nucleus)
    assert all(torch.equal(x, y) for x, y in zip(a.routing, b.routing, strict=True))
    assert a.routing[0].shape == (3, 35, 2)
    # the captured routing replays the whole sequence exactly
    full = model(a.tokens)
    assert all(torch.equal(r, f) for r, f in zip(a.routing, full.routing, strict=True))


@pytest.mark.parametrize("smear", [False, True])
def test_shared_prompt_groups_equal_recomputation(smear):
    # RL's groups: one prefill, its cache (and the smeared keys' last key) repeated per sample
    torch.manual_seed(0)
    model = Transformer(cfg(smear_keys=smear))
    if smear:
        torch.nn.init.normal_(model.blocks[0].attn.smear, std=2.0)
    prompt = torch.randint(0, 97, (2, 6))
    kw = dict(temperature=1.0, top_p=0.9, num_samples=3)
    a = generate(model, prompt, 12, generator=torch.Generator().manual_seed(1), **kw)
    b = generate(model, prompt, 12, generator=torch.Generator().manual_seed(1), use_cache=False,
                 **kw)
    assert a.tokens.shape == (6, 18) and torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=1e-5)


def test_long_prompt_prefill_longer_than_window():
    torch.manual_seed(0)
    model = Transformer(cfg())
    prompt = torch.randint(0, 97, (2, 20))  # prefill of 20 > window 8
    a = generate(model, prompt, 12, temperature=0.0)
    b = generate(model, prompt, 12, temperature=0.0, use_cache=False)
    assert torch.equal(a.tokens, b.tokens)


def test_logprobs_are_those_of_the_sampling_distribution():
    torch.manual_seed(0)
    model = Transformer(cfg())
    prompt = torch.randint(0, 97, (2, 4))
    g = generate(model, prompt, 6, temperature=1.0, top_p=0.8, return_nucleus=True,
                 generator=torch.Generator().manual_seed(0))
    logits = model(g.tokens[:, :-1]).logits[:, 3:]
    masked = logits.masked_fill(~g.nucleus, float("-inf")).log_softmax(-1)
    expected = masked.gather(-1, g.completion.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(g.logprobs, expected, atol=1e-5, rtol=1e-5)


def test_nucleus_mask():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert nucleus_mask(logits, 0.7).tolist() == [[True, True, False, False]]
    assert nucleus_mask(logits, 0.8).tolist() == [[True, True, False, False]]
    assert nucleus_mask(logits, 0.81).tolist() == [[True, True, True, False]]
    assert nucleus_mask(logits, 0.1).tolist() == [[True, False, False, False]]
    assert nucleus_mask(logits, 1.0).all()


@pytest.mark.parametrize("scale", [0.5, 3.0, 20.0])  # flat (full sort) to peaked (top 64)
def test_nucleus_mask_looks_at_the_top_first_and_agrees_with_a_full_sort(scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 16, 4096, generator=g) * scale
    for top_p in (0.5, 0.9, 0.97, 0.999):
        probs = logits.softmax(-1)
        p_sorted, order = probs.sort(-1, descending=True)
        keep = (p_sorted.cumsum(-1) - p_sorted) < top_p
        keep[..., 0] = True
        expected = torch.zeros_like(keep).scatter(-1, order, keep)
        assert torch.equal(nucleus_mask(logits, top_p), expected)
        # the mass kept reaches top_p, and without its smallest token it would not
        kept = (probs * nucleus_mask(logits, top_p)).sum(-1)
        assert (kept >= top_p - 1e-5).all()


@pytest.mark.parametrize("scale", [0.5, 3.0])  # flat (the whole vocabulary) and peaked
def test_drawing_within_the_nucleus_samples_the_masked_distribution(scale):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 300, generator=g) * scale
    logp, mask = sampling_logprobs(logits, 0.7, 0.9)
    counts = torch.zeros_like(logp)
    for _ in range(400):
        nxt, lp, m = draw_within_nucleus(logits, 0.7, 0.9, g, with_mask=True)
        assert torch.equal(m, mask)
        assert mask.gather(-1, nxt[:, None]).all()  # never outside the nucleus
        torch.testing.assert_close(lp, logp.gather(-1, nxt[:, None]).squeeze(-1))
        counts.scatter_add_(-1, nxt[:, None], torch.ones(3, 1))
    # 400 draws x 50 repeats against the masked probabilities: total variation small
    for _ in range(49):
        nxt, _, _ = draw_within_nucleus(logits.repeat(400, 1), 0.7, 0.9, g)
        counts.scatter_add_(-1, nxt.view(400, 3).T, torch.ones(3, 400))
    tv = 0.5 * (counts / counts.sum(-1, keepdim=True) - logp.exp()).abs().sum(-1)
    assert (tv < 0.08).all(), tv


def test_generate_within_the_nucleus_is_deterministic_and_reports_its_nucleus():
    torch.manual_seed(0)
    model = Transformer(cfg())
    prompt = torch.randint(0, 97, (2, 4))
    runs = [generate(model, prompt, 6, temperature=1.0, top_p=0.8, return_nucleus=True,
                     generator=torch.Generator().manual_seed(1), sampler="nucleus")
            for _ in range(2)]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    g = runs[0]
    logits = model(g.tokens[:, :-1]).logits[:, 3:]
    assert torch.equal(g.nucleus, nucleus_mask(logits, 0.8))
    masked = logits.masked_fill(~g.nucleus, float("-inf")).log_softmax(-1)
    expected = masked.gather(-1, g.completion.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(g.logprobs, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="sampler"):
        generate(model, prompt, 2, sampler="gumbel")


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match="n_kv_heads"):
        Transformer(cfg(n_heads=5, n_kv_heads=2, d_model=80))
