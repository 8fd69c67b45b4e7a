"""Fixtures several test modules share."""

import numpy as np
import pytest

import mai_repro.config as C
from mai_repro.data.shards import FamilyShard, pack
from mai_repro.stages import midtraining


@pytest.fixture
def tiny_midtrain():
    """``make(steps, vocab)`` -> (the smoke midtrain section with one 32-token stage of
    ``steps`` steps, its training windows from random two-family shards)."""

    def make(steps: int, vocab: int):
        m = C.load("smoke", {"midtrain": {"contexts": [32], "steps": [steps],
                                          "tokens_per_step": 64, "warmup_steps": 0}}).midtrain
        rng = np.random.default_rng(0)
        shards = {f: FamilyShard(pack(rng.integers(0, vocab, 3000), 16),
                                 np.arange(0, 3000, 500), ["d"] * 6) for f in ("code", "stem")}
        return m, {c: midtraining.training_windows(shards, c, 16) for c in m.contexts}

    return make
