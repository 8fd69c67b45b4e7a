"""Byte-level language-model data: for models that must not depend on the tokenizer stage.

The curation detector's models (the tokenizer is trained on the corpus that curation
produces) and the architecture probe of notebook 04 read UTF-8 bytes: 256 byte values plus a
beginning-of-document token.
"""

from __future__ import annotations

import random
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

BYTE_VOCAB = 257  # 256 byte values + a beginning-of-document token
BOS = 256


def encode(text: str, max_len: int) -> list[int]:
    """BOS followed by the text's first ``max_len - 1`` UTF-8 bytes."""
    return [BOS] + list(text.encode("utf-8", "replace")[: max_len - 1])


def decode(ids: list[int]) -> str:
    return bytes(i for i in ids if i < 256).decode("utf-8", "replace")


def windows(data: bytes, seq_len: int, context: int, first: int
            ) -> list[tuple[list[int], int]]:
    """Cover ``data`` with model inputs of at most ``seq_len`` ids, each BOS plus bytes.

    Returns ``(ids, start)`` per window: targets ``ids[1:]`` from index ``start`` on are the
    window's scored bytes. The first window scores from byte ``first``; each later window
    starts ``context`` bytes before the first byte not yet scored and scores the rest, so
    every byte from ``first`` on is scored exactly once, always with at least ``context``
    bytes (or everything before it) in view.
    """
    if not 0 <= context < seq_len - 1:
        raise ValueError(f"context must be in [0, seq_len - 1), got {context} for {seq_len}")
    out = [([BOS] + list(data[: seq_len - 1]), first)]
    done = seq_len - 1  # bytes [0, done) lie in some window
    while done < len(data):
        start = done - context
        out.append(([BOS] + list(data[start:start + seq_len - 1]), context))
        done = start + seq_len - 1
    return out


def pad_batch(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids right-padded with 0 and a (B, T) bool mask of real tokens."""
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return ids, mask


def batches(texts: Sequence[str], seq_len: int, batch_size: int, seed: int
            ) -> Iterator[torch.Tensor]:
    """Endless (B, seq_len) byte windows from random positions of random documents."""
    rng = random.Random(seed)
    data = [t.encode("utf-8", "replace") for t in texts if t]
    if not data:
        raise ValueError("no text to draw byte windows from")
    while True:
        rows = []
        for _ in range(batch_size):
            doc = data[rng.randrange(len(data))]
            start = rng.randrange(max(1, len(doc) - seq_len + 2))
            chunk = list(doc[start:start + seq_len - 1])
            rows.append([BOS] + chunk + [ord(" ")] * (seq_len - 1 - len(chunk)))
        yield torch.tensor(rows)


def stdlib_sources(max_bytes: int) -> list[tuple[str, str]]:
    """(module file name, source) of CPython's standard library, sorted by name, up to
    ``max_bytes``: human-written code under the PSF-2.0 license that ships with Python."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out, total = [], 0
    for path in sorted(root.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if total + len(text) > max_bytes and out:
            break
        out.append((path.name, text))
        total += len(text)
    if not out:
        raise FileNotFoundError(f"no standard-library sources under {root}")
    return out
