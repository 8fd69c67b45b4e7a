import hashlib
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
    return model, make_optimizer(model, 1e-2)


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000001.pt",
                                                          "step_00000001.pt.sha256"]
    assert ck.load(mgr.latest())["step"] == 1


def test_corrupt_latest_is_skipped_and_old_ones_pruned(tmp_path):
    model, opt = make()
    mgr = ck.CheckpointManager(tmp_path, keep=2)
    for s in (1, 2, 3):
        mgr.save(ck.checkpoint_state(model, opt, s))
    assert [p.name for p in mgr.checkpoints()] == ["step_00000002.pt", "step_00000003.pt"]
    assert not ck.sidecar(mgr.path(1)).exists()  # pruned with its checkpoint
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


# --------------------------------------------------------------------------------------------
# Integrity: torch.load reads a checkpoint with flipped tensor bytes without complaint (NaN
# weights, issue 20), so resuming must verify each file and say what it skipped and why.

def three_checkpoints(tmp_path, mode="sync"):
    model, opt = make()
    mgr = ck.CheckpointManager(tmp_path, keep=3, mode=mode)
    for s in (10, 20, 30):
        mgr.save(ck.checkpoint_state(model, opt, s))
    mgr.wait()
    return mgr


def flip_middle(path, n=256):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_flipped_bytes_in_newest_are_detected(tmp_path, mode):
    mgr = three_checkpoints(tmp_path, mode)
    newest = mgr.path(30)
    flip_middle(newest)
    ck.load(newest)  # the very failure of issue 20: torch.load alone accepts it
    msgs = []
    assert mgr.latest(report=msgs.append) == mgr.path(20)
    assert "step_00000030.pt" in msgs[0] and "sha256 mismatch" in msgs[0]
    assert "step 20" in msgs[0] and "falling back to step 20" in msgs[-1]


def test_truncated_newest_falls_back_and_says_so(tmp_path, capsys):
    mgr = three_checkpoints(tmp_path)
    truncate(mgr.path(30))
    assert mgr.latest() == mgr.path(20)  # default report: stderr
    err = capsys.readouterr().err
    assert "skipping" in err and "step_00000030.pt" in err and "falling back to step 20" in err


def test_all_bad_gives_none_and_says_why(tmp_path):
    mgr = three_checkpoints(tmp_path)
    flip_middle(mgr.path(30))
    truncate(mgr.path(20))
    mgr.path(10).write_bytes(b"")
    msgs = []
    assert mgr.latest(report=msgs.append) is None
    assert len(msgs) == 3 and "none left" in msgs[-1]
    assert "all 3 checkpoint(s)" in mgr.why_none and "step_00000010.pt" in mgr.why_none


def test_empty_directory_says_no_checkpoint(tmp_path):
    mgr = ck.CheckpointManager(tmp_path)
    assert mgr.latest() is None and mgr.why_none.startswith("no checkpoint in")


def test_checkpoint_without_sidecar_is_checked_by_zip_crc(tmp_path):
    """A checkpoint written before sidecars existed: its zip CRCs catch the flipped bytes."""
    mgr = three_checkpoints(tmp_path)
    for s in (20, 30):
        ck.sidecar(mgr.path(s)).unlink()
    assert mgr.latest(report=lambda m: None) == mgr.path(30)  # intact: accepted
    flip_middle(mgr.path(30))
    msgs = []
    assert mgr.latest(report=msgs.append) == mgr.path(20)
    assert "CRC" in msgs[0] or "not a readable" in msgs[0]


def test_sidecar_records_the_bytes_on_disk(tmp_path):
    mgr = three_checkpoints(tmp_path)
    recorded, name = ck.sidecar(mgr.path(30)).read_text().split()
    assert name == "step_00000030.pt"
    assert recorded == hashlib.sha256(mgr.path(30).read_bytes()).hexdigest()
