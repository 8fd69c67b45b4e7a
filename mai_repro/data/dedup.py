"""Exact and near-duplicate detection.

- Exact: documents whose normalised text (lower case, whitespace collapsed) is identical; the
  first one is kept.
- Near: MinHash signatures of word shingles, locality-sensitive hashing in ``bands`` x ``rows``
  (two documents become candidates when one band agrees entirely; the pair's collision
  probability is 1 - (1 - J^rows)^bands for Jaccard similarity J), then candidates are kept
  only when their estimated Jaccard similarity reaches ``threshold`` (every pair inside a
  bucket is a candidate). Clusters are joined with union-find; the first document of each
  cluster is kept.

Shingle hashes are computed with NumPy from per-word CRC32 values (stable across processes),
and the signature of a document is one vectorised min over all permutations.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = np.uint64((1 << 61) - 1)
_MASK32 = np.uint64(0xFFFFFFFF)


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def exact_key(text: str) -> str:
    return hashlib.sha1(normalise(text).encode("utf-8", "replace")).hexdigest()


def shingle_hashes(text: str, k: int) -> np.ndarray:
    """uint64 hashes (< 2^32) of the word k-shingles of ``text`` (one shingle if shorter)."""
    words = _WORD.findall(text.lower())
    if not words:
        return np.zeros(1, dtype=np.uint64)
    h = np.fromiter((zlib.crc32(w.encode()) for w in words), dtype=np.uint64, count=len(words))
    if len(h) < k:
        k = len(h)
    # polynomial combination of k consecutive word hashes, modulo 2^32
    out = np.zeros(len(h) - k + 1, dtype=np.uint64)
    for i in range(k):
        out = (out * np.uint64(1_000_003) + h[i:len(h) - k + 1 + i]) & _MASK32
    return np.unique(out)


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = 128
    shingle: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        object.__setattr__(self, "_a", rng.integers(1, 1 << 61, self.num_perm, dtype=np.uint64))
        object.__setattr__(self, "_b", rng.integers(0, 1 << 61, self.num_perm, dtype=np.uint64))

    def signature(self, text: str) -> np.ndarray:
        """(num_perm,) uint64: min over shingles of ((a * x + b) mod 2^64) mod p, 32 bits kept.

        a and b are 61-bit so that the product wraps many times: with small multipliers the
        "permutation" stays nearly monotone in x, and the min keeps picking each document's
        numerically smallest shingles (a biased estimate of similarity; see the tests).
        """
        x = shingle_hashes(text, self.shingle)
        with np.errstate(over="ignore"):
            h = (self._a[:, None] * x[None, :] + self._b[:, None]) % _PRIME
        return (h & _MASK32).min(axis=1)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def near_duplicates(signatures: Sequence[np.ndarray], bands: int, rows: int,
                    threshold: float) -> dict[int, int]:
    """index -> index of the kept document it duplicates, for every document to remove."""
    if not signatures:
        return {}
    sig = np.stack(signatures)
    if sig.shape[1] < bands * rows:
        raise ValueError(f"signatures of {sig.shape[1]} values cannot fill {bands} x {rows}")
    n = len(sig)
    parent = list(range(n))
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = sig[:, band * rows:(band + 1) * rows]
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            if len(members) > 1:
                _join_similar_pairs(sig, members, threshold, parent)
    return {i: _find(parent, i) for i in range(n) if _find(parent, i) != i}


def _join_similar_pairs(sig: np.ndarray, members: list[int], threshold: float,
                        parent: list[int]) -> None:
    """Join every pair of a bucket whose estimated similarity reaches ``threshold``.

    Every pair, not only the first member with each other: when an unrelated document A
    shares a band with B and C, B ~ C must still be found. A pair already in one cluster
    needs no comparison (union-find makes the result the same), which keeps this cheap.
    """
    for a, i in enumerate(members[:-1]):
        rest = [j for j in members[a + 1:] if _find(parent, j) != _find(parent, i)]
        if not rest:
            continue
        sims = (sig[rest] == sig[i]).mean(axis=1)
        for j in np.asarray(rest)[sims >= threshold]:
            ri, rj = _find(parent, i), _find(parent, int(j))
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)


def exact_duplicates(texts: Sequence[str]) -> dict[int, int]:
    """index -> index of the first document with the same normalised text."""
    first: dict[str, int] = {}
    out = {}
    for i, t in enumerate(texts):
        key = exact_key(t)
        if key in first:
            out[i] = first[key]
        else:
            first[key] = i
    return out
