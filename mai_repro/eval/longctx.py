"""Long-context data and probes: document windows, loss by position, passkey retrieval.

* :func:`stream` re-joins a family's packed rows into its token stream (rows overlap by one
  token, see ``mai_repro.data.shards.pack``), and :func:`doc_windows` cuts windows of any
  length from it that *start at a document*: every document at least ``min_doc`` tokens long
  starts a window, and so does every further ``length`` tokens inside it. Long documents are
  packed first-class, so a longer context has something to use; a window that outlasts its
  document runs on into the next ones.
* :func:`loss_by_position`: the mean next-token loss at each position of such windows. A model
  that uses a longer context keeps lowering its loss at later positions.
* :func:`retrieval_grid`: a passkey probe. Real held-out text is the filler; a fixed marker
  followed by ``key_len`` random tokens is planted at a depth (a share of the length) and
  repeated at the end, and the score is the share of key tokens the model predicts (top-1) at
  the second occurrence. Chance is about one in ``len(vocab)``: the key can only come from the
  first occurrence, an induction-style copy across the distance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mai_repro.data.shards import FamilyShard
from mai_repro.stats import Decision, decide
from mai_repro.train.loop import split_output, token_nll


def stream(shard: FamilyShard) -> np.ndarray:
    """The token stream a family's rows were packed from (the dropped tail excepted)."""
    seqs = shard.seqs
    if len(seqs) == 0:
        return np.zeros(0, seqs.dtype)
    T = seqs.shape[1] - 1
    return np.concatenate([np.asarray(seqs[:, :T]).reshape(-1), np.asarray(seqs[-1, T:])])


def doc_windows(shard: FamilyShard, length: int, min_doc: int = 0,
                limit: int | None = None) -> np.ndarray:
    """(N, length + 1) windows starting at documents at least ``min_doc`` tokens long, and at
    every ``length`` tokens inside them while at least ``min_doc`` of the document remains."""
    s = stream(shard)
    n = len(s)
    doc_starts = shard.doc_starts[shard.doc_starts < n]
    ends = np.append(doc_starts[1:], n)
    starts = [x for a, b in zip(doc_starts.tolist(), ends.tolist(), strict=True)
              if b - a >= max(min_doc, 1)
              for x in range(a, b - max(min_doc, 1) + 1, length) if x + length + 1 <= n]
    if limit is not None:
        starts = starts[:limit]
    if not starts:
        return np.zeros((0, length + 1), s.dtype)
    return s[np.asarray(starts)[:, None] + np.arange(length + 1)[None, :]]


def stride_windows(shard: FamilyShard, length: int) -> np.ndarray:
    """(N, length + 1) consecutive windows of the stream (the packing of the shards, longer)."""
    s = stream(shard)
    if len(s) < length + 1:
        return np.zeros((0, length + 1), s.dtype)
    return np.lib.stride_tricks.sliding_window_view(s, length + 1)[::length]


def _batches(n: int, length: int, max_tokens: int) -> list[slice]:
    size = max(1, max_tokens // max(length, 1))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def loss_by_position(model: torch.nn.Module, windows: np.ndarray, device: str = "cpu",
                     max_tokens: int = 8192, context: int | None = None,
                     per_window: bool = False) -> np.ndarray:
    """(length,) mean next-token loss at each position over (N, length + 1) windows; with
    ``per_window``, the (N, length) losses themselves (the items of a paired comparison).

    With ``context``, each window is scored in independent pieces of ``context`` tokens (the
    context restarts at every piece): the same tokens with the longer context cut away.
    """
    model.eval()
    N, L1 = windows.shape
    L = L1 - 1
    c = context or L
    if L % c:
        raise ValueError(f"context {c} must divide the window length {L}")
    rows = []
    for sl in _batches(N, L, max_tokens):
        batch = torch.as_tensor(np.asarray(windows[sl], dtype=np.int64), device=device)
        n = batch.shape[0]
        inputs = batch[:, :-1].reshape(n * (L // c), c)
        logits, _ = split_output(model(inputs))
        nll = token_nll(logits, batch[:, 1:].reshape(n * (L // c), c))
        rows.append(nll.reshape(n, L).double().cpu().numpy())
    losses = np.concatenate(rows)
    return losses if per_window else losses.mean(0)


def position_edges(length: int, first: int = 16) -> list[int]:
    """Bin edges for a loss-by-position table: 0, 16, 64, 256, ... (powers of 4), length."""
    edges, e = [0], first
    while e < length:
        edges.append(e)
        e *= 4
    return edges + [length]


def binned(curve: np.ndarray, edges: Sequence[int]) -> list[float]:
    """Mean of ``curve`` within each [edges[i], edges[i + 1])."""
    return [float(np.mean(curve[a:b])) for a, b in zip(edges[:-1], edges[1:], strict=True)]


@dataclass(frozen=True)
class Passkey:
    """The probe's fixed parts: the marker before the key and the tokens keys are drawn from."""

    marker: np.ndarray  # (M,) token ids
    vocab: np.ndarray  # ids a key token is drawn from
    key_len: int = 4

    @property
    def needle_len(self) -> int:
        return len(self.marker) + self.key_len


def make_passkey(text: np.ndarray, key_len: int = 4, marker_len: int = 4, seed: int = 0,
                 ranks: tuple[int, int] = (50, 1000), exclude: Sequence[int] = ()) -> Passkey:
    """Keys and marker from tokens ranked ``ranks`` by frequency in ``text``: ordinary tokens
    the model has seen often, but not the commonest (which it would guess without looking)."""
    ids, counts = np.unique(np.asarray(text, dtype=np.int64), return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    order = order[~np.isin(order, np.asarray(list(exclude), dtype=np.int64))]
    vocab = order[ranks[0]:ranks[1]]
    if len(vocab) < 2 * (key_len + marker_len):
        raise ValueError(f"only {len(vocab)} candidate key tokens; need more text")
    rng = np.random.default_rng([seed, 7])
    marker = rng.choice(vocab, size=marker_len, replace=False)
    return Passkey(marker, vocab[~np.isin(vocab, marker)], key_len)


def passkey_batch(filler: np.ndarray, length: int, depth: float, pk: Passkey,
                  rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """(n, length) probe sequences from filler rows (n, >= length) and the distance (tokens)
    between the planted needle and its repeat at the end."""
    n, N = len(filler), pk.needle_len
    if length < 2 * N + 1:
        raise ValueError(f"length {length} is too short for a needle of {N} tokens twice")
    seqs = np.array(filler[:, :length], dtype=np.int64)
    keys = np.stack([rng.choice(pk.vocab, size=pk.key_len, replace=False) for _ in range(n)])
    needles = np.concatenate([np.broadcast_to(pk.marker, (n, len(pk.marker))), keys], axis=1)
    at = int(round(depth * (length - 2 * N)))
    seqs[:, at:at + N] = needles
    seqs[:, length - N:] = needles
    return seqs, (length - N) - at


@torch.no_grad()
def passkey_per_seq(model: torch.nn.Module, seqs: np.ndarray, key_len: int,
                    device: str = "cpu", max_tokens: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Per sequence: (share of its final ``key_len`` tokens predicted top-1, their mean loss in
    nats); the items a paired comparison of two models resamples."""
    model.eval()
    hits, nll, L = [], [], seqs.shape[1]
    for sl in _batches(len(seqs), L, max_tokens):
        batch = torch.as_tensor(seqs[sl], device=device)
        logits, _ = split_output(model(batch[:, :-1]))
        logits, target = logits[:, L - key_len - 1:].float(), batch[:, L - key_len:]
        hits.append((logits.argmax(-1) == target).float().mean(1).cpu().numpy())
        nll.append(token_nll(logits, target).mean(1).cpu().numpy())
    return np.concatenate(hits), np.concatenate(nll)


def passkey_scores(model: torch.nn.Module, seqs: np.ndarray, key_len: int,
                   device: str = "cpu", max_tokens: int = 8192) -> tuple[float, float]:
    """(share of the final ``key_len`` tokens of each sequence predicted top-1, their mean
    loss in nats)."""
    hits, nll = passkey_per_seq(model, seqs, key_len, device, max_tokens)
    return float(hits.mean()), float(nll.mean())


def passkey_accuracy(model: torch.nn.Module, seqs: np.ndarray, key_len: int,
                     device: str = "cpu") -> float:
    """Share of the final ``key_len`` tokens of each sequence predicted top-1."""
    return passkey_scores(model, seqs, key_len, device)[0]


@dataclass
class Retrieval:
    """Passkey results, each (len(lengths), len(depths))."""

    accuracy: np.ndarray  # share of key tokens predicted top-1 at the repeat
    nats: np.ndarray  # key loss with the first occurrence swapped for another key, minus
    #                   the key loss with it: what the planted key is worth (0 = not used)
    per_seq: np.ndarray  # (len(lengths), len(depths), trials): accuracy of each sequence


def retrieval_grid(model: torch.nn.Module, filler: np.ndarray, lengths: Sequence[int],
                   depths: Sequence[float], pk: Passkey, trials: int, seed: int = 0,
                   device: str = "cpu") -> Retrieval:
    """Passkey accuracy and nats by length and depth. ``filler``: (N, >= max(lengths)) rows
    of held-out text; the same rows and keys for every model given the same seed. The
    control sequences plant a different random key first, so only the distance-spanning
    copy separates the two losses."""
    acc = np.zeros((len(lengths), len(depths)))
    nats = np.zeros_like(acc)
    per_seq = np.zeros((len(lengths), len(depths), trials))
    for i, length in enumerate(lengths):
        for j, depth in enumerate(depths):
            rows = (np.arange(trials) + j * trials) % len(filler)
            rng = np.random.default_rng([seed, length, j])
            seqs, dist = passkey_batch(filler[rows], length, depth, pk, rng)
            control, _ = passkey_batch(filler[rows], length, depth, pk, rng)
            control[:, length - pk.key_len:] = seqs[:, length - pk.key_len:]
            hits, with_key = passkey_per_seq(model, seqs, pk.key_len, device)
            _, without = passkey_per_seq(model, control, pk.key_len, device)
            per_seq[i, j] = hits
            acc[i, j] = hits.mean()
            nats[i, j] = without.mean() - with_key.mean()
    return Retrieval(acc, nats, per_seq)


@dataclass(frozen=True)
class InductionScore:
    """Next-token loss (nats) on the first and on the second copy of repeated random tokens."""

    first: float
    second: float

    @property
    def ratio(self) -> float:
        """second / first: about 1 without a copying circuit, near 0 with one."""
        return self.second / self.first if self.first > 0 else float("nan")


@torch.no_grad()
def induction_score(model: torch.nn.Module, vocab_size: int, *, half_len: int = 32,
                    n_seqs: int = 16, seed: int = 0, low: int = 0,
                    device: str | torch.device = "cpu") -> InductionScore:
    """The induction test of the in-context-learning literature (Olsson et al., 2022): random
    token sequences of ``half_len`` tokens (ids in ``[low, vocab_size)``, from their own
    generator, so no global random state moves), each repeated once; the mean loss on
    predicting the second copy against the first. A model that has learned to copy (an
    induction head: find the earlier occurrence of the current token, predict what followed)
    is far better on the second copy; a bigram model is not."""
    return repeat_losses(model, _random_halves(vocab_size, half_len, n_seqs, seed, low)
                         .to(device))


def _random_halves(vocab_size: int, half_len: int, n_seqs: int, seed: int, low: int
                   ) -> torch.Tensor:
    """(n_seqs, half_len) random ids in ``[low, vocab_size)`` from their own generator."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, vocab_size, (n_seqs, half_len), generator=g)


@torch.no_grad()
def induction_decision(model: torch.nn.Module, vocab_size: int, *, half_len: int,
                       n_seqs: int = 256, seed: int = 1, low: int = 0, batch: int = 32,
                       bar: float = 0.5) -> Decision:
    """Whether the model copies, as a verdict with an interval: on ``n_seqs`` fresh random
    sequences (as :func:`induction_score`, in batches of ``batch``), is the second copy's loss
    at most ``bar`` times the first copy's? A paired bootstrap over the sequences of
    ``bar * first - second`` (per sequence, mean over its positions), held against zero:
    "held" when the whole interval shows copying, "not held" when it shows none, otherwise
    "inconclusive". The per-evaluation ratios of pre-training use 16 sequences; this is the
    final model's test with the noise measured."""
    if n_seqs < 2:
        raise ValueError(f"induction_decision needs at least 2 sequences, got {n_seqs}")
    half = _random_halves(vocab_size, half_len, n_seqs, seed, low)
    firsts, seconds = [], []
    for i in range(0, n_seqs, batch):
        f, s = _repeat_rows(model, half[i: i + batch].to(next(model.parameters()).device))
        firsts.append(f)
        seconds.append(s)
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    return decide(bar * first, second, items="random sequences", seed=seed,
                  test=f"second-copy loss at most {bar:g} x the first-copy loss "
                       f"(mean of {bar:g} x first - second > 0)")


def _repeat_rows(model: torch.nn.Module, half: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``half`` (B, L), repeated once: the mean loss on its first and on its second
    copy (:func:`repeat_losses` says which positions)."""
    half_len = half.shape[1]
    seqs = torch.cat([half, half], dim=1)
    was_training = model.training
    model.eval()
    try:
        logits, _ = split_output(model(seqs[:, :-1]))
    finally:
        model.train(was_training)
    nll = token_nll(logits, seqs[:, 1:]).float()
    return (nll[:, : half_len - 1].mean(1).cpu().numpy(),
            nll[:, half_len:].mean(1).cpu().numpy())


@torch.no_grad()
def repeat_losses(model: torch.nn.Module, half: torch.Tensor) -> InductionScore:
    """Mean loss on the first and on the second copy of each row of ``half`` (B, L), repeated
    once: the measure of :func:`induction_score`, for any token sequences. Position t
    predicts token t + 1: the first copy is predicted at 0 .. L - 2 (its first token has no
    context), the second at L .. 2L - 2 (its first token, at L - 1, can only be a guess)."""
    first, second = _repeat_rows(model, half)
    return InductionScore(float(first.mean()), float(second.mean()))
