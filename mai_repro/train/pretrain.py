"""Pre-training: the main run of a preset, resumable, supervised and data-parallel.

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
- from a shell, one process or many: ``torchrun --nproc_per_node N -m mai_repro.train.pretrain
  --preset gpu`` (DDP; ``-p pretrain.parallel=fsdp`` for FSDP2). It resumes from the newest
  checkpoint of the same config when there is one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_repro import config as config_mod
from mai_repro import plots
from mai_repro.artifacts import Run, RunDirLock, StageOutputs, project_root, require
from mai_repro.config import Config, config_hash, parse_steps, resolve_device
from mai_repro.data.loader import Loader
from mai_repro.data.shards import open_shards
from mai_repro.model.accounting import count_params, forward_flops_per_token
from mai_repro.model.config import ModelConfig
from mai_repro.model.transformer import Transformer
from mai_repro.schema import to_dict
from mai_repro.train import checkpoint as ck
from mai_repro.train import distributed
from mai_repro.train.checkpoint import load_model_file
from mai_repro.train.distributed import Dist
from mai_repro.train.faults import maybe_fail, parse_faults, supervise, write_heartbeat
from mai_repro.train.goodput import GoodputBreakdown, from_events, kept_steps
from mai_repro.train.loop import lm_loss, lr_at, make_optimizer, split_output
from mai_repro.train.spikes import SpikeDetector

STAGE = "pretraining"
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


def load_cv(load: torch.Tensor) -> float:
    """Mean over MoE layers of std/mean of the token-slots each expert received."""
    if load.numel() == 0 or load.sum() == 0:
        return 0.0
    load = load.float()
    return float((load.std(dim=1, unbiased=False) / load.mean(dim=1).clamp_min(1e-9)).mean())


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


def model_config(cfg: Config) -> ModelConfig:
    """The preset's model, with room for the pre-training sequence length."""
    return dataclasses.replace(cfg.model, max_seq_len=max(cfg.model.max_seq_len,
                                                          cfg.pretrain.seq_len))


TRAJECTORY = ("steps", "batch_size", "seq_len", "lr", "warmup_steps", "weight_decay",
              "grad_clip", "schedule", "min_lr_ratio", "decay_frac")


def run_hash(cfg: Config) -> str:
    """What a checkpoint must match to be resumed: the model, the data, the seed and the
    settings that shape the optimisation. Parallelism, micro-batches, evaluation, checkpoint
    and fault settings may change between restarts (checkpoints hold full, unsharded state)."""
    return config_hash(cfg, ("model", "tokenizer", "mixture", "curation",
                             *(f"pretrain.{k}" for k in TRAJECTORY)))


# --------------------------------------------------------------------------------------------
# The trainer.

class Trainer:
    """One pre-training run (see the module doc). ``train``/``heldout``: family -> (N, T+1)
    token arrays; ``weights``: the mixture over families."""

    def __init__(self, cfg: Config, train: Mapping[str, np.ndarray],
                 heldout: Mapping[str, np.ndarray], weights: Mapping[str, float],
                 out_dir: Path | str, *, dist: Dist | None = None, device: str = "cpu",
                 progress: bool = True):
        p = self.p = cfg.pretrain
        dist = dist or Dist()
        self.cfg, self.dist, self.device, self.progress = cfg, dist, device, progress
        if p.batch_size % dist.world_size:
            raise ValueError(f"pretrain.batch_size {p.batch_size} is not divisible by the "
                             f"{dist.world_size} processes")
        self.rows = p.batch_size // dist.world_size
        self.micro = p.micro_batch or self.rows
        if self.rows % self.micro:
            raise ValueError(f"pretrain.micro_batch {p.micro_batch} does not divide the "
                             f"{self.rows} sequences per process")
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        if not device.startswith("cuda"):
            torch.use_deterministic_algorithms(True)
        self.mcfg = model_config(cfg)
        self.model = Transformer(self.mcfg).to(device)
        self.net = distributed.wrap(self.model, dist, p.parallel)
        self.fwd = torch.compile(self.net) if p.compile else self.net
        self.opt = make_optimizer(self.net, p.lr, p.weight_decay)
        self.loader = Loader(train, weights, p.batch_size, cfg.seed)
        self.heldout = {f: np.asarray(s[: p.eval_seqs], dtype=np.int64)
                        for f, s in heldout.items() if len(s)}
        self.spikes = SpikeDetector(window=p.spike_window, z_threshold=p.spike_z,
                                    max_skips=p.spike_max_skips)
        self.bad = set(parse_steps(p.bad_batches))
        self.out = Path(out_dir)
        self.ckpt = ck.CheckpointManager(self.out / "checkpoints", keep=p.ckpt_keep,
                                         mode=p.ckpt_mode)
        self.log = EventLog(self.out / "events.jsonl" if dist.main else None)
        self.hash = run_hash(cfg)
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

    def _balance(self) -> torch.Tensor:
        """Sum the expert load over ranks, update the routing biases; returns the load."""
        moes = self.model.moe_layers
        if not moes:
            return torch.zeros(0)
        for m in moes:
            distributed.sum_(m.load, self.dist)
        load = torch.stack([m.load.detach().float().cpu() for m in moes])
        self.model.update_balance()
        return load

    def train_step(self) -> dict[str, Any]:
        p, step = self.p, self.step
        lr = lr_at(step, peak=p.lr, warmup=p.warmup_steps, total=p.steps,
                   min_ratio=p.min_lr_ratio, schedule=p.schedule, decay_frac=p.decay_frac)
        for group in self.opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        index = self.loader.step  # the batch's index in the data stream (never rewound)
        batch, _, _ = self.loader.next_with_families()
        planted = index in self.bad
        if planted:
            batch = random_batch(tuple(batch.shape), self.mcfg.vocab_size, self.cfg.seed,
                                 index)
        rows = batch[self.dist.rank * self.rows:(self.dist.rank + 1) * self.rows]
        micros = rows.split(self.micro)
        self.net.train()
        self.opt.zero_grad(set_to_none=True)
        loss_sum = torch.zeros((), device=self.device)
        for i, mb in enumerate(micros):
            mb = mb.to(self.device, non_blocking=True)
            quiet = self.dist.active and self.p.parallel == "ddp" and i < len(micros) - 1
            with (self.net.no_sync() if quiet else contextlib.nullcontext()), self._amp():
                logits, aux = split_output(self.fwd(mb[:, :-1]))
                loss = lm_loss(logits, mb[:, 1:])
                total = loss if aux is None else loss + aux
            (total / len(micros)).backward()
            loss_sum += loss.detach()
        loss_val = float(distributed.mean(loss_sum / len(micros), self.dist))
        norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(),
                                              p.grad_clip if p.grad_clip > 0 else math.inf)
        norm_val = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        action = self.spikes.check(loss_val, norm_val if p.spike_grad_norm else None)
        load = None
        if action == "ok":
            self.opt.step()
            load = self._balance()
        else:
            self.opt.zero_grad(set_to_none=True)
            for m in self.model.moe_layers:
                m.load.zero_()
        rolled_to = None
        if action == "rollback":
            rolled_to = self.rollback()
        if rolled_to is None:
            self.step += 1
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens_s = self.tokens_per_step / dt
        return {"step": step, "batch": index, "loss": loss_val, "grad_norm": norm_val, "lr": lr, "dt": dt,
                "tokens_per_s": tokens_s,
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
        out = {}
        for family, seqs in self.heldout.items():
            total, n = 0.0, 0
            for chunk in torch.from_numpy(seqs).split(self.micro):
                chunk = chunk.to(self.device)
                with self._amp():
                    logits, _ = split_output(self.fwd(chunk[:, :-1]))
                total += lm_loss(logits, chunk[:, 1:]).item() * chunk[:, 1:].numel()
                n += chunk[:, 1:].numel()
            out[family] = total / n
        return out

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
                    self.log.write("eval", step=self.step, nll=self.evaluate())
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


def open_stage_shards(stage: StageOutputs | Path) -> tuple[dict, dict, dict]:
    """(train arrays, held-out arrays, plan weights) of a ``tokenizer`` stage."""
    stage_dir = Path(getattr(stage, "dir", stage))
    plan = json.loads((stage_dir / "plan.json").read_text())
    train = {f: s.seqs for f, s in open_shards(stage_dir / "shards", "train").items()}
    heldout = {f: s.seqs for f, s in open_shards(stage_dir / "shards", "heldout").items()}
    return train, heldout, plan["weights"]


def load_model(run: Run, device: str = "cpu") -> Transformer:
    """The pre-trained model of a run (rebuilt at small presets when missing)."""
    return load_model_file(require(run, STAGE).path("model.pt"), device)


# --------------------------------------------------------------------------------------------
# The command line (one process, or one rank of a torchrun launch).

def main(argv: list[str] | None = None) -> int:
    from mai_repro.pipeline import parse_assignment

    ap = argparse.ArgumentParser(prog="python -m mai_repro.train.pretrain",
                                 description="Pre-train the preset's model (resumes from the "
                                             "newest checkpoint of the same config).")
    ap.add_argument("--preset", default="laptop", help="preset name or YAML file")
    ap.add_argument("--run-dir", default=None, help="default: runs/<preset>")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. -p pretrain.steps=100 (repeatable)")
    ap.add_argument("--heartbeat", default=None, help="file to write the step to (supervisor)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    try:
        overrides = dict(parse_assignment(a) for a in args.param)
        cfg = config_mod.load(args.preset, overrides, seed=args.seed, device=args.device)
    except (ValueError, config_mod.ConfigError) as e:
        ap.error(str(e))
    dist, device = distributed.init(resolve_device(cfg.device))
    try:
        run = Run(cfg, args.run_dir)
        if dist.main:  # one writer per run dir (re-entered when notebook 07 runs this child)
            RunDirLock(run.dir, "python -m mai_repro.train.pretrain").acquire()
            require(run, "tokenizer")
        distributed.barrier(dist)
        train, heldout, weights = open_stage_shards(run.stage_dir("tokenizer"))
        trainer = Trainer(cfg, train, heldout, weights, run.stage_dir(STAGE), dist=dist,
                          device=device, progress=not args.no_progress)
        resumed = trainer.resume()
        if dist.main:
            print(f"pre-training {cfg.preset}: {dist.world_size} process(es) on {device}, "
                  f"{'resuming at step ' + str(resumed) if resumed is not None else 'from scratch'}"
                  f"{'' if resumed is not None else ' (' + str(trainer.ckpt.why_none) + ')'}",
                  flush=True)
        try:
            trainer.fit(heartbeat=args.heartbeat)
        finally:  # on an exception, let a background checkpoint write finish (or fail) first
            with contextlib.suppress(Exception):
                trainer.ckpt.wait()
    finally:
        distributed.shutdown(dist)
    return 0


# --------------------------------------------------------------------------------------------
# Stage 07: the supervised main run, its goodput and figures.

@dataclass
class PretrainResult:
    events: list[dict]
    failures: list[dict]
    goodput: GoodputBreakdown
    metrics: dict[str, Any]
    figures: dict[str, Path]


def checkpoint_stalls(model: torch.nn.Module, directory: Path, repeats: int = 3
                      ) -> dict[str, float]:
    """Mean time the training loop waits per checkpoint, sync vs async, on this model."""
    opt = make_optimizer(model, 1e-3, 0.0)
    out = {}
    for mode in ("sync", "async"):
        mgr = ck.CheckpointManager(directory / mode, keep=1, mode=mode)
        for i in range(repeats):
            mgr.save(ck.checkpoint_state(model, opt, i))
            time.sleep(0.05)  # training would run here while the async write proceeds
        mgr.wait()
        out[mode] = statistics.mean(mgr.stall_s)
        shutil.rmtree(directory / mode, ignore_errors=True)
    return out


def _figures(events: list[dict], failures: list[dict], gp: GoodputBreakdown, st
             ) -> dict[str, Path]:
    kept = kept_steps(events)
    steps = [e for e in events if e["event"] == "step"]
    kept_ids = {id(e) for e in kept}
    redone = [e for e in steps if id(e) not in kept_ids]
    figs: dict[str, Path] = {}

    fig, ax = plots.new(width=7.5, height=3.8)
    ax.plot([e["step"] for e in kept], [e["loss"] for e in kept], color=plots.OURS, lw=1,
            label="training loss (kept steps)")
    if redone:
        ax.scatter([e["step"] for e in redone], [e["loss"] for e in redone], s=6,
                   color="0.6", label="steps redone after a failure or roll-back", zorder=2)
    for e in steps:
        if e["action"] != "ok":
            ax.scatter(e["step"], e["loss"], marker="x", s=50, color=plots.REPORT, zorder=3,
                       label=f"spike: {e['action']}")
    for f in failures:
        ax.axvline(f["step"], color=plots.PALETTE[2], ls="--", lw=1)
        ax.annotate(f["kind"], (f["step"], 1.0), xycoords=("data", "axes fraction"),
                    rotation=90, va="top", ha="right", fontsize=8, color=plots.PALETTE[2])
    handles, labels = ax.get_legend_handles_labels()
    uniq = dict(zip(labels, handles, strict=True))
    ax.legend(uniq.values(), uniq.keys(), fontsize=8)
    ax.set(title="pre-training loss with injected failures (dashed) and planted spikes",
           xlabel="optimizer step", ylabel="nats per token")
    figs["loss"] = plots.save(fig, st.path("figures", "loss"))

    fig, ax = plots.new(width=7.5, height=2.2)
    left = 0.0
    ax.barh(0, gp.ideal_s, color=plots.OURS, label=f"ideal {gp.ideal_s:.1f} s")
    left = gp.ideal_s
    for (name, sec), colour in zip(gp.parts_s.items(), plots.PALETTE[1:], strict=False):
        ax.barh(0, sec, left=left, color=colour, label=f"{name} {sec:.1f} s")
        left += sec
    ax.set(yticks=[], xlabel="seconds of wall clock",
           title=f"goodput {gp.goodput:.1%}: ideal time and where the rest went")
    ax.legend(fontsize=8, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.45))
    figs["goodput"] = plots.save(fig, st.path("figures", "goodput"))

    evals = [e for e in events if e["event"] == "eval"]
    last_eval = {e["step"]: e for e in evals}
    evals = [last_eval[s] for s in sorted(last_eval)]
    fig, axes = plots.new(1, 3, width=4.4, height=3.4)
    for family in (evals[0]["nll"] if evals else {}):
        axes[0].plot([e["step"] for e in evals], [e["nll"][family] for e in evals],
                     marker="o", ms=3, label=family)
    axes[0].set(title="held-out loss by family", xlabel="step", ylabel="nats per token")
    axes[0].legend(fontsize=8)
    ok = [e for e in kept if not e.get("warmup")]
    axes[1].plot([e["step"] for e in ok], [e["tokens_per_s"] for e in ok], lw=1,
                 color=plots.OURS)
    axes[1].set(title="throughput", xlabel="step", ylabel="tokens / s")
    if ok and ok[0]["mfu"] is not None:
        ax2 = axes[1].twinx()
        ax2.plot([e["step"] for e in ok], [100 * e["mfu"] for e in ok], lw=0.6,
                 color=plots.PALETTE[1], alpha=0.7)
        ax2.set_ylabel("MFU (%)", color=plots.PALETTE[1])
    with_load = [e for e in kept if e.get("load")]
    if with_load:
        share = np.array([np.asarray(e["load"])[0] / max(np.sum(e["load"][0]), 1)
                          for e in with_load]).T
        im = axes[2].imshow(share, aspect="auto", cmap="viridis", vmin=0,
                            extent=(with_load[0]["step"], with_load[-1]["step"],
                                    share.shape[0] - 0.5, -0.5))
        axes[2].grid(False)
        fig.colorbar(im, ax=axes[2], label="share of token-slots")
    axes[2].set(title="expert load, first MoE layer", xlabel="step", ylabel="expert")
    figs["curves"] = plots.save(fig, st.path("figures", "curves"))
    return figs


def _failures(sup_events: list[dict], events: list[dict]) -> list[dict]:
    """Each failure with its kind and the last step the child had finished."""
    out = []
    for e in sup_events:
        if e["event"] != "failure":
            continue
        cause = e["cause"]
        kind = "kill -9" if "SIGKILL" in cause else "hang" if "hang" in cause else "exception"
        before = [s["step"] + 1 for s in events if s["event"] == "step" and s["t"] <= e["t"]
                  and s.get("rolled_back_to") is None]
        out.append({"kind": kind, "cause": cause, "t": e["t"],
                    "step": before[-1] if before else 0})
    return out


def build(run: Run) -> PretrainResult:
    """Stage 07: the preset's pre-training under the supervisor, with injected failures."""
    cfg, p = run.cfg, run.cfg.pretrain
    import yaml
    from tqdm.auto import tqdm

    tok = require(run, "tokenizer")
    with run.stage(STAGE) as st:
        for stale in ("checkpoints", "events.jsonl", "heartbeat.json", "model.pt",
                      "child.log", "supervisor.json"):
            path = st.dir / stale
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        cfg_file = st.path("config.yaml")
        cfg_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        st.add_input("shards", tok.path("shards"))
        cmd = [sys.executable, "-m", "mai_repro.train.pretrain", "--preset", str(cfg_file),
               "--run-dir", str(run.dir), "--heartbeat", str(st.path("heartbeat.json")),
               "--no-progress"]
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(project_root()),
                                                           os.environ.get("PYTHONPATH")]))}
        bar = tqdm(total=p.steps, desc="pre-training (supervised)", leave=False)

        def on_poll(step: int) -> None:
            if step >= 0 and step != bar.n:
                bar.n = step
                bar.refresh()

        faults = parse_faults(p.faults)
        report = supervise(cmd, st.path("heartbeat.json"), faults,
                           hang_timeout=p.hang_timeout, env=env,
                           log=st.path("supervisor.json"), output=st.path("child.log"),
                           on_poll=on_poll, max_restarts=len(faults) + 3)
        bar.close()
        if report.exit_code != 0:
            tail = st.path("child.log").read_text()[-3000:]
            raise RuntimeError(f"pre-training failed after {report.restarts} restarts "
                               f"(exit code {report.exit_code}); end of child.log:\n{tail}")
        events = read_events(st.path("events.jsonl"))
        timeline = sorted(events + report.events, key=lambda e: e["t"])
        gp = from_events(timeline)
        failures = _failures(report.events, events)
        model = load_model_file(st.path("model.pt"))
        stalls = checkpoint_stalls(model, st.dir / "stall_probe")
        kept = kept_steps(events)
        steady = [e for e in kept if not e.get("warmup")]
        evals = {e["step"]: e["nll"] for e in events if e["event"] == "eval"}
        final_nll = evals[max(evals)] if evals else {}
        first_nll = evals[min(evals)] if evals else {}
        spikes = [e for e in events if e["event"] == "step" and e["action"] != "ok"]
        planted = sorted({e["step"] for e in events if e["event"] == "step" and e["planted"]})
        params = count_params(model.cfg)
        mfus = [e["mfu"] for e in steady if e["mfu"] is not None]
        starts = [e for e in events if e["event"] == "start"]
        st.metrics.update({
            "steps": p.steps, "tokens": p.steps * p.batch_size * p.seq_len,
            "total_params": params.total, "active_params": params.active,
            "final_loss": float(np.mean([e["loss"] for e in kept[-10:]])),
            "heldout_nll_first": first_nll, "heldout_nll_final": final_nll,
            "tokens_per_s": statistics.median(e["tokens_per_s"] for e in steady),
            "mfu": statistics.median(mfus) if mfus else None,
            "peak_flops": starts[0]["peak_flops"] if starts else None,
            "peak_source": starts[0]["peak_source"] if starts else None,
            "goodput": gp.goodput, "ideal_s": gp.ideal_s, "actual_s": gp.actual_s,
            "overhead_s": gp.parts_s,
            "failures": [{k: f[k] for k in ("kind", "step", "cause")} for f in failures],
            "restarts": report.restarts,
            "planted_bad_steps": planted,
            "spikes": [{"step": e["step"], "action": e["action"], "loss": e["loss"],
                        "planted": e["planted"]} for e in spikes],
            "rollbacks": sum(e["event"] == "rollback" for e in events),
            "steps_executed": sum(e["event"] == "step" for e in events),
            "checkpoint_stall_s": stalls,
            "final_load_cv": next((e["load_cv"] for e in reversed(kept)
                                   if e["load_cv"] is not None), None),
        })
        figures = _figures(events, failures, gp, st)
        metrics = dict(st.metrics)
    return PretrainResult(events, failures, gp, metrics, figures)


if __name__ == "__main__":
    raise SystemExit(main())
