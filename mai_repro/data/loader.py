"""A deterministic, resumable, data-parallel loader over the packed shards.

Each row of a batch comes from a family drawn with the mixture plan's weights; within a
family, sequences are read in a seeded permutation per epoch, and data-parallel rank ``r`` of
``world_size`` reads the permutation's positions ``r, r + world_size, ...``: ranks never read
the same sequence in an epoch and together they read all of it. When a rank has read its part
of a family, that family starts its next epoch with a new permutation.

Randomness is counter-based (every draw is a function of the seed, the rank, the step and the
family's epoch), so the whole state is a few integers: :meth:`Loader.state_dict` is a small
JSON-able dict, and restoring it reproduces exactly the batches that would have followed.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_repro.data.shards import open_shards

STATE_VERSION = 1


class Loader:
    """Batches of (B, T + 1) int64 token sequences, families mixed by ``weights``."""

    def __init__(self, shards: Mapping[str, np.ndarray], weights: Mapping[str, float],
                 batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        unknown = sorted(set(weights) - set(shards))
        if unknown:
            raise ValueError(f"weights for families without shards: {unknown}")
        self.families = [f for f in shards if weights.get(f, 0) > 0]
        for f in self.families:
            if len(shards[f]) < world_size:
                raise ValueError(f"family {f!r} has {len(shards[f])} sequences, fewer than "
                                 f"world_size {world_size}; give it weight 0")
        if not self.families:
            raise ValueError("no family has both sequences and a positive weight")
        w = np.array([weights[f] for f in self.families], dtype=np.float64)
        self.weights = w / w.sum()
        self.shards = {f: shards[f] for f in self.families}
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.step = 0
        self.position = {f: 0 for f in self.families}  # index into this rank's part of the epoch
        self.epoch = {f: 0 for f in self.families}
        self._order: dict[str, tuple[int, np.ndarray]] = {}  # family -> (epoch, rank's order)

    def order(self, family: str, epoch: int) -> np.ndarray:
        """The sequence indices this rank reads from ``family`` in ``epoch``, in order."""
        cached = self._order.get(family)
        if cached is None or cached[0] != epoch:
            rng = np.random.default_rng([self.seed, zlib.crc32(family.encode()), epoch])
            perm = rng.permutation(len(self.shards[family]))
            cached = (epoch, perm[self.rank::self.world_size])
            self._order[family] = cached
        return cached[1]

    def draw_families(self, step: int) -> list[str]:
        """The family of each row of batch ``step`` on this rank."""
        rng = np.random.default_rng([self.seed, 1_000_003, self.rank, step])
        picks = rng.choice(len(self.families), size=self.batch_size, p=self.weights)
        return [self.families[i] for i in picks]

    def _take(self, family: str) -> int:
        order = self.order(family, self.epoch[family])
        if self.position[family] >= len(order):
            self.epoch[family] += 1
            self.position[family] = 0
            order = self.order(family, self.epoch[family])
        i = int(order[self.position[family]])
        self.position[family] += 1
        return i

    def next_with_families(self) -> tuple[torch.Tensor, list[str], list[int]]:
        """The next batch, the family of each row and each row's sequence index."""
        fams = self.draw_families(self.step)
        idx = [self._take(f) for f in fams]
        rows = np.stack([np.asarray(self.shards[f][i], dtype=np.int64)
                         for f, i in zip(fams, idx, strict=True)])
        self.step += 1
        return torch.from_numpy(rows), fams, idx

    def __next__(self) -> torch.Tensor:
        return self.next_with_families()[0]

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def epochs(self) -> dict[str, float]:
        """Epochs read so far per family on this rank (fractional)."""
        return {f: self.epoch[f] + self.position[f] / len(self.order(f, self.epoch[f]))
                for f in self.families}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly here: plain ints and strings."""
        return {"version": STATE_VERSION, "seed": self.seed, "rank": self.rank,
                "world_size": self.world_size, "batch_size": self.batch_size,
                "step": self.step, "position": dict(self.position), "epoch": dict(self.epoch)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``; it must come from a loader of the same data and layout."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')}, "
                             f"expected {STATE_VERSION}")
        for key in ("seed", "rank", "world_size", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(f"loader state has {key}={state[key]}, this loader "
                                 f"{getattr(self, key)}")
        if set(state["position"]) != set(self.families):
            raise ValueError(f"loader state covers families {sorted(state['position'])}, "
                             f"this loader {sorted(self.families)}")
        self.step = int(state["step"])
        self.position = {f: int(state["position"][f]) for f in self.families}
        self.epoch = {f: int(state["epoch"][f]) for f in self.families}


def from_stage(stage_dir: Any, batch_size: int, seed: int, rank: int = 0,
               world_size: int = 1, split: str = "train") -> Loader:
    """A loader over a ``tokenizer`` stage's shards (a folder or StageOutputs), weighted by
    its mixture plan."""
    stage_dir = Path(getattr(stage_dir, "dir", stage_dir))
    plan = json.loads((stage_dir / "plan.json").read_text())
    shards = {f: s.seqs for f, s in open_shards(stage_dir / "shards", split).items()}
    return Loader(shards, plan["weights"], batch_size, seed, rank, world_size)


def _span_lengths(width: int, shortest: int, longest: int) -> tuple[int, int]:
    """The span lengths a row of ``width`` tokens can hold twice: at most half the row."""
    longest = min(longest, width // 2)
    if longest < 1:
        raise ValueError(f"rows of {width} token(s) are too short to hold a span twice")
    return min(shortest, longest), longest


def repeat_spans(x: torch.Tensor, share: float, seed: int, index: int, *, shortest: int = 16,
                 longest: int = 128) -> torch.Tensor:
    """A batch ``x`` (B, L + 1) in which a share ``share`` of the rows each hold one passage of
    their own text twice: a random span of ``shortest``-``longest`` tokens (at most half the
    row) is copied over the span right after it. No text is written, only repeated, so the batch stays human-written.

    Repeats are the "burstiness" that Chan et al. (2022) found drives in-context learning: a
    second copy is predictable only by copying from the first, which rewards an induction head
    (docs/model.md, "Induction: the levers tried"). Which rows and spans is a function of
    ``(seed, index)`` (the batch's index in the stream), so a resumed run repeats the same
    spans and restarts stay bitwise reproducible."""
    if share <= 0:
        return x
    rng = np.random.default_rng([seed, index, 0x5E9])
    x = x.clone()
    width = x.shape[1]
    shortest, longest = _span_lengths(width, shortest, longest)
    for r in range(x.shape[0]):
        if rng.random() < share:
            h = int(rng.integers(shortest, longest + 1))
            s = int(rng.integers(0, width - 2 * h + 1))
            x[r, s + h: s + 2 * h] = x[r, s: s + h]
    return x


def distant_repeats(x: torch.Tensor, share: float, seed: int, index: int, *, shortest: int = 16,
                    longest: int = 128, every: int = 256) -> torch.Tensor:
    """A batch ``x`` (B, W) in which a share ``share`` of the rows each hold passages of their
    own text twice, far apart: one span of ``shortest``-``longest`` tokens per ``every``
    tokens of the row is copied over a random place anywhere after it, so the distance
    between the two copies runs from the span's length to the whole row. The long-context
    form of :func:`repeat_spans` (mid-training, notebook 08): a second copy is predictable
    only by finding the first across the context, which is what retrieval at long range
    needs. No text is written, only repeated; a function of ``(seed, index)``."""
    if share <= 0:
        return x
    width = x.shape[1]
    shortest, longest = _span_lengths(width, shortest, longest)
    rng = np.random.default_rng([seed, index, 0xD15])
    x = x.clone()
    for r in range(x.shape[0]):
        if rng.random() >= share:
            continue
        for _ in range(max(1, width // every)):
            h = int(rng.integers(shortest, longest + 1))
            s = int(rng.integers(0, width - 2 * h + 1))
            t = int(rng.integers(s + h, width - h + 1))  # anywhere after the source
            x[r, t: t + h] = x[r, s: s + h]
    return x

