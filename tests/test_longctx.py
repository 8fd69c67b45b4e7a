"""Long-context data and probes (mai_repro.eval.longctx) against hand-built cases."""

import math

import numpy as np
import pytest
import torch

from mai_repro.data.shards import FamilyShard, pack
from mai_repro.eval import longctx
from mai_repro.train.loop import lm_loss


def shard(stream: np.ndarray, seq_len: int, doc_starts: list[int]) -> FamilyShard:
    return FamilyShard(pack(stream, seq_len), np.asarray(doc_starts, dtype=np.int64),
                       [f"d{i}" for i in range(len(doc_starts))])


def test_stream_rejoins_the_packed_rows():
    s = np.arange(103, dtype=np.uint16)
    sh = shard(s, 10, [0])
    assert sh.seqs.shape == (10, 11)
    np.testing.assert_array_equal(longctx.stream(sh), s[:101])  # the tail that pack drops


def test_doc_windows_start_at_long_documents_and_step_inside_them():
    s = np.arange(200, dtype=np.int32)
    # documents: [0, 5) short, [5, 120) long, [120, 130) short, [130, 200) long
    sh = shard(s, 10, [0, 5, 120, 130])
    w = longctx.doc_windows(sh, 40, min_doc=30)
    # long doc 1 starts windows at 5, 45 (85 leaves 35 >= 30 tokens: also 85);
    # doc 3 at 130 (170 leaves 30 tokens, but 170 + 41 > 191 tokens in the stream)
    np.testing.assert_array_equal(w[:, 0], [5, 45, 85, 130])
    for row in w:  # each a contiguous slice of the stream, running on across documents
        np.testing.assert_array_equal(row, np.arange(row[0], row[0] + 41))
    assert longctx.doc_windows(sh, 40, min_doc=500).shape == (0, 41)
    assert longctx.stride_windows(sh, 40)[:, 0].tolist() == [0, 40, 80, 120]


class Bigram(torch.nn.Module):
    """Logits from the current token only (a fixed random table)."""

    def __init__(self, vocab: int = 32):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab, vocab,
                                                    generator=torch.Generator().manual_seed(0)))

    def forward(self, idx):
        return self.table[idx]


def test_loss_by_position_averages_to_the_loss():
    rng = np.random.default_rng(0)
    windows = rng.integers(0, 32, size=(5, 17))
    model = Bigram()
    curve = longctx.loss_by_position(model, windows, max_tokens=32)  # several batches
    assert curve.shape == (16,)
    t = torch.as_tensor(windows)
    with torch.no_grad():
        ref = lm_loss(model(t[:, :-1]), t[:, 1:]).item()
    assert curve.mean() == pytest.approx(ref, rel=1e-6)


def test_loss_with_the_context_cut():
    windows = np.random.default_rng(1).integers(0, 32, size=(3, 65))
    full = longctx.loss_by_position(Bigram(), windows)
    np.testing.assert_allclose(longctx.loss_by_position(Bigram(), windows, context=16), full)
    cut = longctx.loss_by_position(Induction(), windows, context=16)
    assert not np.allclose(cut, longctx.loss_by_position(Induction(), windows))
    np.testing.assert_allclose(cut[:16], longctx.loss_by_position(Induction(), windows)[:16])
    with pytest.raises(ValueError, match="divide"):
        longctx.loss_by_position(Bigram(), windows, context=24)


def test_position_bins():
    assert longctx.position_edges(4096) == [0, 16, 64, 256, 1024, 4096]
    assert longctx.position_edges(64) == [0, 16, 64]
    assert longctx.binned(np.arange(8.0), [0, 2, 8]) == [0.5, 4.5]


def passkey() -> longctx.Passkey:
    text = np.repeat(np.arange(6, 106), np.arange(100, 0, -1))  # token 6 commonest
    return longctx.make_passkey(text, key_len=3, marker_len=2, ranks=(10, 90), exclude=[7])


def test_passkey_vocab_and_layout():
    pk = passkey()
    assert len(pk.marker) == 2 and pk.needle_len == 5
    assert not set(pk.marker) & set(pk.vocab)
    assert set(pk.vocab) <= set(range(17, 97))  # frequency ranks 10 .. 89, token 7 excluded
    filler = np.zeros((4, 64), dtype=np.int64)
    seqs, dist = longctx.passkey_batch(filler, 50, 0.5, pk, np.random.default_rng(0))
    at = round(0.5 * (50 - 10))
    assert seqs.shape == (4, 50) and dist == 45 - at
    np.testing.assert_array_equal(seqs[:, at:at + 5], seqs[:, 45:])
    np.testing.assert_array_equal(seqs[:, at:at + 2], np.broadcast_to(pk.marker, (4, 2)))
    assert (seqs[:, :at] == 0).all() and (seqs[:, at + 5:45] == 0).all()
    assert len({tuple(r) for r in seqs[:, 47:]}) > 1  # a fresh key per sequence
    with pytest.raises(ValueError, match="too short"):
        longctx.passkey_batch(filler, 10, 0.5, pk, np.random.default_rng(0))


class Induction(torch.nn.Module):
    """Predicts the token that followed the previous occurrence of the current token."""

    def forward(self, idx):
        B, T = idx.shape
        logits = torch.zeros(B, T, 128)
        for b in range(B):
            last: dict[int, int] = {}
            for t in range(T):
                tok = int(idx[b, t])
                if tok in last:
                    logits[b, t, idx[b, last[tok] + 1]] = 1.0
                last[tok] = t
        return logits


def test_passkey_accuracy_of_an_induction_oracle_and_a_blind_model():
    pk = passkey()
    filler = np.full((6, 80), 3, dtype=np.int64)  # a token outside the key vocabulary
    grid = longctx.retrieval_grid(Induction(), filler, [40, 80], [0.0, 0.5, 1.0], pk,
                                  trials=3)
    assert grid.accuracy.shape == (2, 3) and (grid.accuracy == 1.0).all()
    assert (grid.nats > 0.9).all()  # logit 1 on the copied key vs on the control's key
    blind = longctx.retrieval_grid(Bigram(128), filler, [40, 80], [0.5], pk, trials=3)
    assert blind.accuracy.max() < 0.5
    np.testing.assert_allclose(blind.nats, 0.0, atol=1e-6)  # the first key is never used


class _Copier(torch.nn.Module):
    """Predicts, at each position, the token that followed the previous occurrence of the
    current token (a perfect induction head), else uniform."""

    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab
        self.p = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        B, T = x.shape
        logits = torch.zeros(B, T, self.vocab)
        for b in range(B):
            for t in range(T):
                prev = (x[b, :t] == x[b, t]).nonzero()
                if len(prev) and prev[-1, 0] + 1 < T:
                    logits[b, t, x[b, prev[-1, 0] + 1]] = 20.0
        return logits


def test_induction_score_separates_a_copier_from_a_bigram_free_model():
    from mai_repro.eval.longctx import induction_score

    uniform = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50))
    torch.nn.init.zeros_(uniform[1].weight)
    torch.nn.init.zeros_(uniform[1].bias)
    u = induction_score(uniform, 50, half_len=16, n_seqs=4)
    assert u.first == pytest.approx(math.log(50), rel=1e-5) and u.ratio == pytest.approx(1.0)
    c = induction_score(_Copier(1000), 1000, half_len=16, n_seqs=4)
    assert c.ratio < 0.1 and c.first > 2.0
    again = induction_score(_Copier(1000), 1000, half_len=16, n_seqs=4)
    assert again == c  # its own generator: the same sequences every time


def test_induction_decision_holds_for_a_copier_and_not_for_a_uniform_model():
    from mai_repro.eval.longctx import induction_decision, induction_score

    c = induction_decision(_Copier(1000), 1000, half_len=16, n_seqs=8, batch=3)
    assert c.verdict == "held" and c.n == 8 and c.lo > 0
    uniform = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50))
    torch.nn.init.zeros_(uniform[1].weight)
    torch.nn.init.zeros_(uniform[1].bias)
    u = induction_decision(uniform, 50, half_len=16, n_seqs=8)
    # second == first for every sequence: 0.5 first - second = -0.5 ln 50 < 0 with no spread
    assert u.verdict == "not held" and u.mean == pytest.approx(-0.5 * math.log(50), rel=1e-5)
    # the batched rows give the same means as the one-batch score on the same sequences
    one = induction_score(_Copier(1000), 1000, half_len=16, n_seqs=8, seed=1)
    both = induction_decision(_Copier(1000), 1000, half_len=16, n_seqs=8, batch=8, bar=1.0)
    assert both.mean == pytest.approx(one.first - one.second, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        induction_decision(uniform, 50, half_len=16, n_seqs=1)
