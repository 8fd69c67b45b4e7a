"""The loader: bitwise resume, disjoint ranks, epochs, mixture weights, a JSON-able state."""

import json

import numpy as np
import pytest
import torch

from mai_repro.data.loader import Loader, repeat_spans

T = 8


def labelled(sizes):
    """Shards whose row i of family k is filled with k * 1000 + i: a row names its origin."""
    return {f: np.repeat((k * 1000 + np.arange(n, dtype=np.uint16))[:, None], T + 1, axis=1)
            for k, (f, n) in enumerate(sizes.items())}


SHARDS = labelled({"code": 40, "math": 3, "general": 25})
WEIGHTS = {"code": 0.5, "math": 0.2, "general": 0.3}


def origin(batch):
    return [int(v) for v in batch[:, 0]]


def test_batches_are_int64_and_shaped():
    batch = next(Loader(SHARDS, WEIGHTS, batch_size=4, seed=0))
    assert batch.dtype == torch.int64 and batch.shape == (4, T + 1)


@pytest.mark.parametrize("k", [0, 5, 17])
def test_resume_is_bitwise_identical(k):
    ref = Loader(SHARDS, WEIGHTS, batch_size=6, seed=3)
    full = [next(ref) for _ in range(k + 12)]
    first = Loader(SHARDS, WEIGHTS, batch_size=6, seed=3)
    for _ in range(k):
        next(first)
    state = json.loads(json.dumps(first.state_dict()))  # through JSON, as a checkpoint holds it
    resumed = Loader(SHARDS, WEIGHTS, batch_size=6, seed=3)
    resumed.load_state_dict(state)
    for i in range(12):
        assert torch.equal(next(resumed), full[k + i]), f"batch {k + i} differs"
    assert resumed.epoch["math"] > 0  # the run crossed epoch boundaries of the small family


def test_state_is_small_and_plain():
    loader = Loader(SHARDS, WEIGHTS, batch_size=6, seed=3)
    for _ in range(5):
        next(loader)
    state = loader.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert len(json.dumps(state)) < 400
    other = Loader(SHARDS, WEIGHTS, batch_size=6, seed=4)
    with pytest.raises(ValueError, match="seed"):
        other.load_state_dict(state)


def test_seed_changes_the_stream():
    a = next(Loader(SHARDS, WEIGHTS, batch_size=16, seed=0))
    b = next(Loader(SHARDS, WEIGHTS, batch_size=16, seed=1))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_and_cover_each_epoch(world):
    n = 25
    shards = labelled({"general": n})
    loaders = [Loader(shards, {"general": 1.0}, 1, seed=7, rank=r, world_size=world)
               for r in range(world)]
    seen = []
    for loader in loaders:
        rows = [origin(next(loader))[0] for _ in range(len(loader.order("general", 0)))]
        assert loader.epoch["general"] == 0
        seen.append(rows)
    flat = [i for rows in seen for i in rows]
    assert len(flat) == len(set(flat)) == n  # no sequence twice within the epoch
    assert set(flat) == set(range(n))  # together the ranks read the whole family
    # The next read starts epoch 1 with a new permutation, still split by rank.
    nxt = [origin(next(loader))[0] for loader in loaders]
    assert all(loader.epoch["general"] == 1 for loader in loaders)
    assert len(set(nxt)) == world
    assert not np.array_equal(loaders[0].order("general", 1), loaders[0].order("general", 0))


def test_epochs_are_counted():
    loader = Loader(labelled({"math": 3}), {"math": 1.0}, batch_size=3, seed=0)
    batches = [sorted(origin(next(loader))) for _ in range(4)]
    assert batches == [[0, 1, 2]] * 4  # each batch is one full epoch here
    assert loader.epoch["math"] == 3 and loader.epochs()["math"] == 4.0


def test_family_frequencies_converge_to_the_weights():
    weights = {"code": 0.6, "math": 0.1, "general": 0.3}
    loader = Loader(SHARDS, weights, batch_size=64, seed=11)
    counts = dict.fromkeys(weights, 0)
    for _ in range(200):
        for f in loader.next_with_families()[1]:
            counts[f] += 1
    n = sum(counts.values())
    for f, w in weights.items():
        assert abs(counts[f] / n - w) < 0.015, (f, counts[f] / n, w)  # ~4 sigma at n = 12,800


def test_rows_come_from_their_family():
    batch, fams, idx = Loader(SHARDS, WEIGHTS, batch_size=32, seed=2).next_with_families()
    names = list(SHARDS)
    assert [names.index(f) * 1000 + i for f, i in zip(fams, idx, strict=True)] == origin(batch)


def test_zero_weight_families_are_never_read():
    loader = Loader(SHARDS, {"code": 1.0, "math": 0.0, "general": 0.0}, batch_size=50, seed=0)
    assert set(loader.next_with_families()[1]) == {"code"}


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank"):
        Loader(SHARDS, WEIGHTS, 4, 0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="no family"):
        Loader(SHARDS, {"code": 0.0}, 4, 0)
    with pytest.raises(ValueError, match="without shards"):
        Loader(SHARDS, {"stem": 1.0}, 4, 0)


def test_repeat_spans_copy_a_passage_of_the_row_itself():
    x = torch.arange(4 * 129).view(4, 129)  # every token distinct: a copy is visible
    y = repeat_spans(x, 1.0, seed=0, index=7)
    assert torch.equal(y, repeat_spans(x, 1.0, seed=0, index=7))  # a function of (seed, index)
    assert not torch.equal(y, repeat_spans(x, 1.0, seed=0, index=8))
    assert torch.equal(x, torch.arange(4 * 129).view(4, 129))  # the input is not modified
    for r in range(4):
        changed = (y[r] != x[r]).nonzero().ravel()
        h = len(changed)
        assert 16 <= h <= 64  # the span, at most half the row
        s = int(changed[0]) - h
        assert torch.equal(changed, torch.arange(s + h, s + 2 * h))  # one contiguous span
        assert torch.equal(y[r, s + h:s + 2 * h], x[r, s:s + h])  # ... the one before it
        assert set(y[r].tolist()) <= set(x[r].tolist())  # nothing written from outside the row
    assert torch.equal(repeat_spans(x, 0.0, seed=0, index=7), x)
    shares = [sum(not torch.equal(a, b) for a, b in
                  zip(repeat_spans(x, 0.5, seed=0, index=i), x, strict=True)) for i in range(50)]
    assert 60 <= sum(shares) <= 140  # about half of 200 rows
    with pytest.raises(ValueError, match="too short"):
        repeat_spans(torch.zeros(2, 1, dtype=torch.long), 1.0, seed=0, index=0)
    assert not torch.equal(repeat_spans(x[:, :20], 1.0, seed=0, index=0), x[:, :20])


def test_distant_repeats_copy_passages_of_the_row_far_apart():
    from mai_repro.data.loader import distant_repeats

    x = torch.arange(2 * 1025).view(2, 1025)  # every token distinct: a copy is visible
    y = distant_repeats(x, 1.0, seed=0, index=3)
    assert torch.equal(y, distant_repeats(x, 1.0, seed=0, index=3))  # a function of (seed, index)
    assert not torch.equal(y, distant_repeats(x, 1.0, seed=0, index=4))
    assert torch.equal(x, torch.arange(2 * 1025).view(2, 1025))  # the input is not modified
    gaps = []
    for r in range(2):
        assert set(y[r].tolist()) <= set(x[r].tolist())  # nothing written from outside the row
        changed = (y[r] != x[r]).nonzero().ravel()
        assert 16 <= len(changed) <= 4 * 128  # four spans (one per 256 tokens), overlaps aside
        for t in changed.tolist():  # every changed token is a copy of one earlier in the row
            src = int(y[r, t]) - r * 1025
            assert src < t
            gaps.append(t - src)
    assert max(gaps) > 256  # far apart, not only right after the source
    assert torch.equal(distant_repeats(x, 0.0, seed=0, index=3), x)
    with pytest.raises(ValueError, match="too short"):
        distant_repeats(torch.zeros(2, 1, dtype=torch.long), 1.0, seed=0, index=0)
