import numpy as np
import pytest
import torch

from mai_repro.data import ai_content as ai
from mai_repro.data import bytelevel as bl


@pytest.mark.parametrize("text, hit", [
    ("As an AI language model, I cannot do that.", True),
    ("Sure. I hope this helps!", True),
    ("as of my last knowledge update in 2023", True),
    ("Certainly! Here's the code you asked for", True),
    ("The model AI was trained as an ensemble", False),
    ("This helps; I hope so.", False),
])
def test_markers(text, hit):
    assert (ai.find_marker(text) is not None) == hit


@pytest.mark.parametrize("date, human", [("2016-03-01", True), ("2022-11-29T10:00:00Z", True),
                                         ("2022-11-30", False), ("2024-01-01", False),
                                         (None, False), ("", False)])
def test_date_provenance(date, human):
    assert ai.is_human_era(date, "2022-11-30") == human


def test_byte_encoding_round_trip():
    ids = bl.encode("héllo ✓", 100)
    assert ids[0] == bl.BOS and bl.decode(ids) == "héllo ✓"
    assert len(bl.encode("x" * 500, 64)) == 64
    ids, mask = bl.pad_batch([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.sum().item() == 4


def test_roc_by_hand():
    r = ai.roc(np.array([0.0, 1.0]), np.array([1.0, 2.0]))
    assert r.auc == pytest.approx((3 + 0.5) / 4)
    assert ai.roc(np.array([0.0, 0.1]), np.array([1.0, 2.0])).auc == 1.0
    assert r.tpr_at(0.0) == 0.5  # threshold above 1: only the 2.0 machine score
    perfect = ai.roc(np.arange(100), np.arange(100) + 1000)
    assert perfect.tpr_at(0.01) == 1.0


def test_threshold_at_fpr():
    human = np.arange(100, dtype=float)  # 0..99
    t = ai.threshold_at_fpr(human, 0.05)
    assert (human > t).mean() == pytest.approx(0.05)
    assert (human > ai.threshold_at_fpr(human, 0.0)).sum() == 0
    with pytest.raises(ValueError):
        ai.threshold_at_fpr(np.array([]), 0.1)


def _setup(seed=0, B=64, T=40, V=20):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 2
    probs = torch.softmax(logits, -1)
    sampled = torch.multinomial(probs.view(-1, V), 1, generator=g).view(B, T)
    greedy = logits.argmax(-1)
    # "human-like": tokens the model finds surprising (drawn from a flattened distribution)
    flat = torch.multinomial(torch.softmax(logits / 4, -1).view(-1, V), 1, generator=g).view(B, T)
    return logits, sampled, greedy, flat, torch.ones(B, T, dtype=torch.bool)


def test_fast_detect_orders_likely_above_surprising_text():
    logits, sampled, greedy, flat, mask = _setup()
    s_sampled = ai.fast_detect_score(logits, logits, sampled, mask)
    s_greedy = ai.fast_detect_score(logits, logits, greedy, mask)
    s_flat = ai.fast_detect_score(logits, logits, flat, mask)
    # text sampled from the model itself sits near 0 standard deviations
    assert abs(s_sampled.mean().item()) < 0.5
    assert (s_greedy > s_sampled).all() and s_sampled.mean() > s_flat.mean()


def test_binoculars_orders_likely_above_surprising_text():
    logits, sampled, greedy, flat, mask = _setup()
    other = logits + 0.3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(1))
    b_greedy = ai.binoculars_score(other, logits, greedy, mask)
    b_sampled = ai.binoculars_score(other, logits, sampled, mask)
    b_flat = ai.binoculars_score(other, logits, flat, mask)
    assert b_greedy.mean() > b_sampled.mean() > b_flat.mean()
    assert ai.roc(b_flat.numpy(), b_sampled.numpy()).auc > 0.9


def test_masked_positions_do_not_count():
    logits, sampled, _, flat, mask = _setup(B=2)
    mixed = sampled.clone()
    mixed[:, 20:] = flat[:, 20:]
    half = mask.clone()
    half[:, 20:] = False
    a = ai.fast_detect_score(logits, logits, mixed, half)
    b = ai.fast_detect_score(logits[:, :20], logits[:, :20], sampled[:, :20], mask[:, :20])
    assert torch.allclose(a, b)


def test_byte_batches_and_stdlib():
    b = next(bl.batches(["abc", "defghij"], seq_len=5, batch_size=3, seed=0))
    assert b.shape == (3, 5) and (b[:, 0] == bl.BOS).all()
    src = bl.stdlib_sources(200_000)
    assert src and src == sorted(src) and sum(len(t) for _, t in src) <= 200_000 + len(src[0][1])
