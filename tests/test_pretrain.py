"""The pre-training trainer: bitwise restarts, supervised failures, spikes, DDP (CPU, gloo)."""

import math
import os
import socket
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from mai_repro import config
from mai_repro.stages.pretraining import make_trainer
from mai_repro.train import checkpoint as ck
from mai_repro.train import distributed
from mai_repro.train.checkpoint import load_model_file
from mai_repro.train.faults import Fault, supervise
from mai_repro.train.trainer import read_events

T = 16  # tokens per sequence


def synthetic(n: int, seed: int) -> dict[str, np.ndarray]:
    """Two learnable families: arithmetic progressions of tokens, different strides."""
    rng = np.random.default_rng(seed)
    out = {}
    for family, stride in (("code", 3), ("math", 5)):
        start = rng.integers(0, 200, size=(n, 1))
        out[family] = (start + stride * np.arange(T + 1)) % 211
    return out


def make_cfg(model=None, **pretrain):
    base = dict(steps=12, batch_size=4, seq_len=T, warmup_steps=2, eval_every=4, eval_seqs=4,
                ckpt_every=4, faults="", bad_batches="", ckpt_mode="sync")
    return config.load("smoke", {"pretrain": {**base, **pretrain}, "model": model or {}})


def trainer(cfg, out, **kw):
    return make_trainer(cfg, synthetic(64, 0), synthetic(8, 1), {"code": 0.5, "math": 0.5}, out,
                   progress=False, **kw)


def weights(t):
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def step_losses(path):
    return {e["step"]: e["loss"] for e in read_events(path) if e["event"] == "step"}


@pytest.mark.parametrize("mode, levers", [("sync", False), ("async", False), ("sync", True)])
def test_restart_is_bitwise(tmp_path, mode, levers):
    # levers: the laptop preset's copying levers, smeared keys and repeated spans
    cfg = make_cfg({"smear_keys": True} if levers else None, ckpt_mode=mode,
                   repeat_share=1.0 if levers else 0.0)
    straight = trainer(cfg, tmp_path / "straight")
    straight.fit()
    first = trainer(cfg, tmp_path / "restarted")
    first.fit(stop_at=6)  # checkpoint at step 4; steps 4 and 5 are lost with the process
    del first
    torch.manual_seed(123), np.random.seed(123)  # a new process: every RNG elsewhere
    second = trainer(cfg, tmp_path / "restarted")
    assert second.resume() == 4
    second.fit()
    for k, v in weights(straight).items():
        assert torch.equal(v, second.model.state_dict()[k]), k
    a, b = step_losses(tmp_path / "straight/events.jsonl"), \
        step_losses(tmp_path / "restarted/events.jsonl")
    assert a == b  # every step's loss, the redone ones included, exactly equal


def test_resume_refuses_another_config(tmp_path):
    trainer(make_cfg(), tmp_path).fit(stop_at=4)
    other = trainer(make_cfg(lr=1e-3), tmp_path)
    with pytest.raises(RuntimeError, match="another config"):
        other.resume()


def test_planted_batch_is_skipped_and_burst_rolls_back(tmp_path):
    cfg = make_cfg(steps=40, bad_batches="24,32-34", spike_window=10, ckpt_every=4)
    t = trainer(cfg, tmp_path)
    t.fit()
    events = read_events(tmp_path / "events.jsonl")
    refused = [e for e in events if e["event"] == "step" and e["action"] != "ok"]
    assert [(e["batch"], e["action"]) for e in refused] == \
        [(24, "skip"), (32, "skip"), (33, "skip"), (34, "rollback")]
    rollbacks = [e for e in events if e["event"] == "rollback"]
    assert len(rollbacks) == 1 and rollbacks[0]["to"] == 32  # the checkpoint before the burst
    assert t.step == 40 and events[-1]["event"] == "done"
    final = [e["loss"] for e in events if e["event"] == "step"][-5:]
    assert all(math.isfinite(x) for x in final) and max(final) < refused[0]["loss"]


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.test_pretrain import make_cfg, trainer
    t = trainer(make_cfg(steps=16, ckpt_mode="async"), {out!r})
    t.resume()
    t.fit(heartbeat={hb!r})
""")


def test_supervisor_survives_kill_with_identical_final_weights(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(root=root, out=str(tmp_path / "run"),
                                   hb=str(tmp_path / "hb.json")))
    report = supervise([sys.executable, str(script)], tmp_path / "hb.json",
                       [Fault("kill", 6)], hang_timeout=120)
    assert report.exit_code == 0 and report.restarts == 1
    assert "SIGKILL" in report.failures[0]["cause"]
    supervised = load_model_file(tmp_path / "run/model.pt")
    straight = trainer(make_cfg(steps=16, ckpt_mode="async"), tmp_path / "straight")
    straight.fit()
    for k, v in weights(straight).items():
        assert torch.equal(v, supervised.state_dict()[k]), k
    starts = [e for e in read_events(tmp_path / "run/events.jsonl") if e["event"] == "start"]
    assert [s["step"] for s in starts][0] == 0 and starts[1]["step"] > 0  # resumed, not anew


def test_crash_while_checkpointing_keeps_the_previous_one(tmp_path, monkeypatch):
    t = trainer(make_cfg(), tmp_path)
    t.fit(stop_at=4)
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("power cut")))
    with pytest.raises(OSError):
        t.fit(stop_at=8)
    monkeypatch.undo()
    assert ck.load(t.ckpt.latest())["step"] == 4
    assert trainer(make_cfg(), tmp_path).resume() == 4


def test_corrupted_newest_checkpoint_is_not_resumed(tmp_path):
    """Issue 20: 256 flipped bytes in the newest checkpoint resumed with NaN weights."""
    trainer(make_cfg(), tmp_path).fit(stop_at=9)  # checkpoints at steps 4 and 8
    newest = tmp_path / "checkpoints" / "step_00000008.pt"
    data = bytearray(newest.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 256] = bytes(b ^ 0xFF for b in data[mid:mid + 256])
    newest.write_bytes(bytes(data))
    t = trainer(make_cfg(), tmp_path)
    assert t.resume() == 4
    assert all(torch.isfinite(v).all() for v in t.model.state_dict().values()
               if v.is_floating_point())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, parallel: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist, device = distributed.init("cpu")
    try:
        cfg = make_cfg(BIAS, steps=6, parallel=parallel, micro_batch=1)
        t = trainer(cfg, os.path.join(out, "run"), dist=dist)
        t.fit()
        if dist.main:
            torch.save(weights(t) if parallel == "ddp" else
                       torch.load(os.path.join(out, "run/model.pt"))["model"],
                       os.path.join(out, "w.pt"))
    finally:
        distributed.shutdown(dist)


# Aux-loss-free balancing: the expert load summed over ranks and micro-batches is the whole
# batch's, so the routing biases move exactly as in one process (an auxiliary loss computed per
# micro-batch would not be the whole batch's loss).
BIAS = {"balance": "bias"}


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, parallel):
    """Same global batch (4): two ranks of 2 rows, each in 2 micro-batches, vs one process of
    4 rows. The weights after 6 AdamW steps agree within 1e-5 (summation order differs)."""
    torch.set_num_threads(1)
    one = trainer(make_cfg(BIAS, steps=6), tmp_path / "one")
    one.fit()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), parallel), nprocs=2)
    two = torch.load(tmp_path / "w.pt")
    worst = max((one.model.state_dict()[k].float() - v.float()).abs().max().item()
                for k, v in two.items())
    assert worst < 1e-5, worst
