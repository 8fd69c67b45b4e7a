import os
import random

import numpy as np
import pytest
import torch

from mai_repro.train import checkpoint as ck
from mai_repro.train.loop import lm_step, make_optimizer


def make(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Embedding(16, 8), torch.nn.Linear(8, 16))
    return model, make_optimizer(model, 1e-2, 0.1)


def batch_from_rngs():
    """A batch drawn from all three RNGs, so a restart must restore each of them."""
    a = torch.randint(0, 16, (4, 9))
    a[:, 0] = int(np.random.randint(0, 16))
    a[:, 1] = random.randrange(16)
    return a


def run(model, opt, steps):
    losses = []
    for _ in range(steps):
        losses.append(lm_step(model, opt, batch_from_rngs())[0])
    return losses


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_restart_is_bitwise_identical(tmp_path, mode):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model, opt = make()
    straight = run(model, opt, 10)
    final = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    model, opt = make()
    first = run(model, opt, 4)
    mgr = ck.CheckpointManager(tmp_path, mode=mode)
    mgr.save(ck.checkpoint_state(model, opt, 4, {"pos": 4}))
    mgr.wait()
    del model, opt
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # disturb every RNG

    model, opt = make(seed=7)
    state = ck.load(mgr.latest())
    assert ck.restore(state, model, opt) == 4 and state["loader"] == {"pos": 4}
    rest = run(model, opt, 6)
    assert first + rest == straight  # exact float equality
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), k


def test_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    model, opt = make()
    mgr = ck.CheckpointManager(tmp_path)
    mgr.save(ck.checkpoint_state(model, opt, 1))
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("crash")))
    with pytest.raises(OSError):
        mgr.save(ck.checkpoint_state(model, opt, 2))
    assert [p.name for p in tmp_path.iterdir()] == ["step_00000001.pt"]
    assert ck.load(mgr.latest())["step"] == 1


def test_corrupt_latest_is_skipped_and_old_ones_pruned(tmp_path):
    model, opt = make()
    mgr = ck.CheckpointManager(tmp_path, keep=2)
    for s in (1, 2, 3):
        mgr.save(ck.checkpoint_state(model, opt, s))
    assert [p.name for p in mgr.checkpoints()] == ["step_00000002.pt", "step_00000003.pt"]
    mgr.path(4).write_bytes(b"torn write")
    assert mgr.latest().name == "step_00000003.pt"


def test_async_write_error_surfaces(tmp_path, monkeypatch):
    model, opt = make()
    mgr = ck.CheckpointManager(tmp_path, mode="async")
    monkeypatch.setattr(ck, "atomic_torch_save", lambda *a: (_ for _ in ()).throw(OSError("x")))
    mgr.save(ck.checkpoint_state(model, opt, 1))
    with pytest.raises(RuntimeError, match="background checkpoint write failed"):
        mgr.wait()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        ck.CheckpointManager(tmp_path, mode="lazy")
    with pytest.raises(ValueError, match="keep"):
        ck.CheckpointManager(tmp_path, keep=0)
