"""The pre-training trainer: the main run of a preset, resumable and data-parallel.

:class:`Trainer` owns one run's model, optimizer, data loader, spike detector and checkpoints.
Each optimizer step:

1. takes the *global* batch from the loader (every rank builds the same one and keeps its
   slice, so 1 and N processes see the same data and the loader state is one small dict);
2. runs forward/backward over micro-batches (gradient accumulation; bf16 autocast on GPU);
3. asks the :class:`~mai_repro.train.spikes.SpikeDetector` about the loss and gradient norm:
   ``ok`` applies the update and the MoE bias balancing (expert load summed over ranks first),
   ``skip`` drops it, ``rollback`` reloads the newest checkpoint and carries on with the data
   after the offending batches (the loader is not rewound);
4. logs loss, gradient norm, lr, tokens/s, MFU and expert load to ``events.jsonl``, evaluates
   per-family held-out loss every ``eval_every`` steps, checkpoints every ``ckpt_every``, and
   writes a heartbeat for the supervisor.

A checkpoint holds the model, optimizer, step, loader state, spike statistics and every RNG, so
a restart continues bitwise (CPU, deterministic algorithms). Run it

- as the stage of notebook 07 (:func:`build`): a child process under
  :func:`~mai_repro.train.faults.supervise`, with the preset's failures injected; goodput
  comes from the event log;
- from a shell, one process or many: ``torchrun --nproc_per_node N -m mai_repro.stages.pretraining
  --preset gpu`` (DDP; ``-p pretrain.parallel=fsdp`` for FSDP2). It resumes from the newest
  checkpoint of the same config when there is one.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_repro.data.loader import Loader, repeat_spans
from mai_repro.model.accounting import forward_flops_per_token
from mai_repro.model.config import ModelConfig
from mai_repro.model.moe import load_cv
from mai_repro.model.transformer import Transformer
from mai_repro.train import checkpoint as ck
from mai_repro.train import distributed
from mai_repro.train.config import OptimConfig, PretrainConfig, parse_steps
from mai_repro.train.distributed import Dist
from mai_repro.train.faults import maybe_fail, write_heartbeat
from mai_repro.train.loop import Schedule, eval_loss, lm_loss_fn, make_optimizer
from mai_repro.train.spikes import SpikeDetector
from mai_repro.train.step import train_step

# Dense BF16 peaks (TFLOP/s) of GPUs we know, matched against torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


# --------------------------------------------------------------------------------------------
# Small pieces.

def peak_flops(device: str, configured_tflops: float = 0.0) -> tuple[float, str]:
    """Peak FLOP/s of one device for MFU, and where the figure comes from."""
    if configured_tflops > 0:
        return configured_tflops * 1e12, "configured"
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(device))
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{name} dense BF16 spec"
        return 0.0, f"unknown GPU {name}: set pretrain.peak_tflops"
    n = 1024  # large enough to reach the BLAS peak; best of 5 rounds (others share the CPU)
    a = torch.randn(n, n)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(4):
            a @ a
        best = min(best, time.perf_counter() - t0)
    return 4 * 2 * n**3 / best, "measured fp32 matmul on this CPU"


def random_batch(shape: tuple[int, ...], vocab_size: int, seed: int, step: int) -> torch.Tensor:
    """A planted bad batch: uniformly random tokens (from its own generator, so it does not
    disturb any global RNG)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, vocab_size, shape, generator=g)


class EventLog:
    """Append-only JSON lines, one write per event (so a kill -9 loses at most the line in
    flight); a no-op without a path (ranks other than 0)."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, event: str, **kw: Any) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps({"event": event, "t": time.time(), **kw}) + "\n")


def read_events(path: Path | str) -> list[dict]:
    """Events of a log; a torn last line (the process was killed mid-write) is dropped."""
    out = []
    with open(path) as f:
        for line in f:
            with contextlib.suppress(json.JSONDecodeError):
                out.append(json.loads(line))
    return out

# --------------------------------------------------------------------------------------------
# The trainer.

class Trainer:
    """One pre-training run (see the module doc). ``train``/``heldout``: family -> (N, T+1)
    token arrays; ``weights``: the mixture over families."""

    def __init__(self, p: PretrainConfig, mcfg: ModelConfig, seed: int, run_hash: str,
                 train: Mapping[str, np.ndarray],
                 heldout: Mapping[str, np.ndarray], weights: Mapping[str, float],
                 out_dir: Path | str, *, dist: Dist | None = None, device: str = "cpu",
                 progress: bool = True,
                 probes: Mapping[str, Callable[[torch.nn.Module], dict]] | None = None,
                 optim: OptimConfig | None = None):
        self.p = p
        self.optim = optim = optim or OptimConfig()  # AdamW and the clip: the shared section
        self.probes = dict(probes or {})  # name -> model -> dict, logged at each evaluation
        dist = dist or Dist()
        self.seed, self.dist, self.device, self.progress = seed, dist, device, progress
        if p.batch_size % dist.world_size:
            raise ValueError(f"pretrain.batch_size {p.batch_size} is not divisible by the "
                             f"{dist.world_size} processes")
        self.rows = p.batch_size // dist.world_size
        self.micro = p.micro_batch or self.rows
        if self.rows % self.micro:
            raise ValueError(f"pretrain.micro_batch {p.micro_batch} does not divide the "
                             f"{self.rows} sequences per process")
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if not device.startswith("cuda"):
            torch.use_deterministic_algorithms(True)
        self.mcfg = mcfg
        self.model = Transformer(self.mcfg).to(device)
        self.net = distributed.wrap(self.model, dist, p.parallel)
        self.fwd = torch.compile(self.net) if p.compile else self.net
        self.opt = make_optimizer(self.net, p.lr, optim)
        self.schedule = Schedule(p.lr, p.warmup_steps, p.steps, min_ratio=optim.min_lr_ratio,
                                 schedule=p.schedule, decay_frac=p.decay_frac)
        self.loader = Loader(train, weights, p.batch_size, seed)
        self.heldout = {f: np.asarray(s[: p.eval_seqs], dtype=np.int64)
                        for f, s in heldout.items() if len(s)}
        self.spikes = SpikeDetector(window=p.spike_window, z_threshold=p.spike_z,
                                    max_skips=p.spike_max_skips, rel_floor=p.spike_rel_floor)
        self.bad = set(parse_steps(p.bad_batches))
        self.out = Path(out_dir)
        self.ckpt = ck.CheckpointManager(self.out / "checkpoints", keep=p.ckpt_keep,
                                         mode=p.ckpt_mode)
        self.log = EventLog(self.out / "events.jsonl" if dist.main else None)
        self.hash = run_hash
        self.step = 0
        self.tokens_per_step = p.batch_size * p.seq_len
        self.flops_per_token = 3 * forward_flops_per_token(self.mcfg, p.seq_len)["total"]
        self.peak, self.peak_source = peak_flops(device, p.peak_tflops)

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        model_sd, optim_sd = distributed.full_state(self.net, self.opt, self.p.parallel,
                                                    self.dist)
        return ck.checkpoint_state(None, None, self.step, self.loader.state_dict(),
                                   {"spikes": self.spikes.state_dict(), "run_hash": self.hash},
                                   model_state=model_sd, optim_state=optim_sd)

    def save(self) -> None:
        state = self.state()  # a collective under FSDP2: every rank takes part
        if self.dist.main:
            t0 = time.perf_counter()
            self.ckpt.save(state)
            self.log.write("checkpoint", step=self.step, stall_s=time.perf_counter() - t0,
                           mode=self.p.ckpt_mode)

    def _load(self, path: Path, *, everything: bool) -> dict[str, Any]:
        state = ck.load(path)
        found = state["extra"].get("run_hash")
        if found != self.hash:
            raise RuntimeError(f"checkpoint {path} was written by another config (run hash "
                               f"{found}, this run {self.hash}); remove {path.parent} or use "
                               f"another run directory")
        distributed.load_full_state(self.net, self.opt, state["model"], state["optimizer"],
                                    self.p.parallel, self.dist)
        if everything:
            self.loader.load_state_dict(state["loader"])
            self.spikes.load_state_dict(state["extra"]["spikes"])
            ck.set_rng_state(state["rng"])
        self.step = int(state["step"])
        return state

    def resume(self) -> int | None:
        """Continue from the newest loadable checkpoint; returns its step, or None."""
        path = self.ckpt.latest()
        if path is None:
            return None
        self._load(path, everything=True)
        return self.step

    # -- one optimizer step -----------------------------------------------------------------
    def _amp(self) -> contextlib.AbstractContextManager:
        if self.device.startswith("cuda"):
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self) -> dict[str, Any]:
        """One step through :func:`mai_repro.train.step.train_step`; the spike detector vetoes
        the update through its ``accept`` hook and may roll back afterwards."""
        p, step = self.p, self.step
        lr = self.schedule(step)
        t0 = time.perf_counter()
        index = self.loader.step  # the batch's index in the data stream (never rewound)
        batch, _, _ = self.loader.next_with_families()
        planted = index in self.bad
        if planted:
            batch = random_batch(tuple(batch.shape), self.mcfg.vocab_size, self.seed, index)
        else:  # some rows hold a passage of their own text twice (p.repeat_share)
            batch = repeat_spans(batch, p.repeat_share, self.seed, index,
                                 shortest=p.repeat_min)
        rows = batch[self.dist.rank * self.rows:(self.dist.rank + 1) * self.rows]
        loss_fn = lm_loss_fn(self.fwd)
        verdict: dict[str, Any] = {}

        def accept(loss_sum: torch.Tensor, norm: float) -> bool:
            loss = float(distributed.mean(loss_sum / len(micros), self.dist))
            verdict.update(loss=loss, action=self.spikes.check(
                loss, norm if p.spike_grad_norm else None))
            return verdict["action"] == "ok"

        micros = [mb.to(self.device, non_blocking=True) for mb in rows.split(self.micro)]
        ddp = self.dist.active and p.parallel == "ddp"
        r = train_step(self.net, self.opt, micros, loss_fn, lr=lr, grad_clip=self.optim.grad_clip,
                       autocast=True, no_sync=self.net.no_sync if ddp else None, accept=accept,
                       reduce_load=lambda t: distributed.sum_(t, self.dist))
        action, load = verdict["action"], r.load
        rolled_to = None
        if action == "rollback":
            rolled_to = self.rollback()
        if rolled_to is None:
            self.step += 1
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens_s = self.tokens_per_step / dt
        return {"step": step, "batch": index, "loss": verdict["loss"], "grad_norm": r.grad_norm,
                "lr": lr, "dt": dt, "tokens_per_s": tokens_s,
                "mfu": self.flops_per_token * tokens_s / (self.peak * self.dist.world_size)
                if self.peak else None,
                "action": action, "planted": planted, "rolled_back_to": rolled_to,
                "load_cv": load_cv(load) if load is not None else None,
                # the full per-expert load at about 100 steps of the run (for the heatmap)
                "load": load.tolist() if load is not None and
                step % max(1, p.steps // 100) == 0 else None}

    def rollback(self) -> int | None:
        """Reload model and optimizer from the newest checkpoint (data moves on); its step."""
        self.ckpt.wait()
        distributed.barrier(self.dist)  # rank 0's newest checkpoint is on disk for every rank
        path = self.ckpt.latest()
        if path is None:
            return None
        self._load(path, everything=False)
        return self.step

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out next-token loss per family (nats per token)."""
        self.net.eval()
        return {family: eval_loss(self.fwd, torch.from_numpy(seqs).split(self.micro),
                                  self.device, autocast=True)
                for family, seqs in self.heldout.items()}

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, heartbeat: Path | str | None = None, stop_at: int | None = None) -> None:
        """Train until ``pretrain.steps`` (or ``stop_at``) steps are done."""
        from tqdm.auto import tqdm

        p = self.p
        end = p.steps if stop_at is None else min(stop_at, p.steps)
        self.log.write("start", step=self.step, world_size=self.dist.world_size,
                       peak_flops=self.peak, peak_source=self.peak_source)

        def beat() -> None:  # progress the supervisor can see: after each step, eval, save
            if heartbeat is not None and self.dist.main:
                write_heartbeat(heartbeat, self.step)

        beat()
        bar = tqdm(total=end, initial=self.step, desc="pre-training", leave=False,
                   disable=not (self.progress and self.dist.main))
        executed = 0
        while self.step < end:
            rec = self.train_step()
            executed += 1
            self.log.write("step", warmup=executed <= 2, **rec)
            if rec["rolled_back_to"] is not None:
                self.log.write("rollback", at=rec["step"], to=rec["rolled_back_to"])
            bar.n = self.step
            bar.set_postfix(loss=f"{rec['loss']:.3f}", refresh=False)
            bar.update(0)
            beat()
            if rec["rolled_back_to"] is None:
                if self.step % p.eval_every == 0 or self.step == p.steps:
                    self.log.write("eval", step=self.step, nll=self.evaluate(),
                                   **{name: fn(self.fwd) for name, fn in self.probes.items()})
                    beat()
                if self.step % p.ckpt_every == 0 or self.step == p.steps:
                    self.save()
                    beat()
            maybe_fail(self.step)
        bar.close()
        self.ckpt.wait()
        if self.step >= p.steps:
            model_sd, _ = distributed.full_state(self.net, None, p.parallel, self.dist)
            if self.dist.main:
                ck.save_model_file(self.mcfg, model_sd, self.out / "model.pt")
            self.log.write("done", step=self.step)

