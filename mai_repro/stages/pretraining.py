"""Stage ``pretraining`` (notebook 07): the preset's main run as a supervised child process.

The trainer itself is :class:`mai_repro.train.trainer.Trainer`. This module is

- the command line of one training process (or one rank of a torchrun launch):
  ``python -m mai_repro.stages.pretraining --preset gpu``; it resumes from the newest checkpoint
  of the same config;
- the stage of notebook 07 (:func:`build`): that command as a child process under
  :func:`~mai_repro.train.faults.supervise`, with the preset's failures injected; goodput comes
  from the event log; the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
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
from mai_repro.config import Config, config_hash, resolve_device
from mai_repro.data.shards import open_shards
from mai_repro.data.tokenizer import SPECIALS
from mai_repro.eval.longctx import induction_score
from mai_repro.model.accounting import count_params
from mai_repro.model.config import ModelConfig
from mai_repro.schema import result_dict, to_dict
from mai_repro.train import checkpoint as ck
from mai_repro.train import distributed
from mai_repro.train.checkpoint import load_model_file
from mai_repro.train.faults import parse_faults, supervise
from mai_repro.train.goodput import GoodputBreakdown, from_events, kept_steps
from mai_repro.train.loop import make_optimizer
from mai_repro.train.trainer import Trainer, read_events

STAGE = "pretraining"

def model_config(cfg: Config) -> ModelConfig:
    """The preset's model, with room for the pre-training sequence length."""
    return dataclasses.replace(cfg.model, max_seq_len=max(cfg.model.max_seq_len,
                                                          cfg.pretrain.seq_len))


TRAJECTORY = ("steps", "batch_size", "seq_len", "lr", "warmup_steps", "schedule", "decay_frac")


def run_hash(cfg: Config) -> str:
    """What a checkpoint must match to be resumed: the model, the data, the seed and the
    settings that shape the optimisation. Parallelism, micro-batches, evaluation, checkpoint
    and fault settings may change between restarts (checkpoints hold full, unsharded state)."""
    return config_hash(cfg, ("model", "tokenizer", "mixture", "curation", "optim",
                             *(f"pretrain.{k}" for k in TRAJECTORY)))



def open_stage_shards(stage: StageOutputs | Path) -> tuple[dict, dict, dict]:
    """(train arrays, held-out arrays, plan weights) of a ``tokenizer`` stage."""
    stage_dir = Path(getattr(stage, "dir", stage))
    plan = json.loads((stage_dir / "plan.json").read_text())
    train = {f: s.seqs for f, s in open_shards(stage_dir / "shards", "train").items()}
    heldout = {f: s.seqs for f, s in open_shards(stage_dir / "shards", "heldout").items()}
    return train, heldout, plan["weights"]




def make_trainer(cfg: Config, train: Mapping[str, np.ndarray], heldout: Mapping[str, np.ndarray],
                 weights: Mapping[str, float], out_dir: Path | str, **kw: Any) -> Trainer:
    """The preset's :class:`Trainer` (keyword arguments: ``dist``, ``device``, ``progress``),
    with the induction score as a probe at each evaluation."""
    p = cfg.pretrain
    probes = {}
    if p.induction_seqs:
        def induction(model: torch.nn.Module) -> dict[str, float]:
            s = induction_score(model, cfg.model.vocab_size, half_len=max(2, p.seq_len // 2),
                                n_seqs=p.induction_seqs, seed=cfg.seed, low=len(SPECIALS),
                                device=next(model.parameters()).device)
            return {"first": s.first, "second": s.second, "ratio": s.ratio}

        probes["induction"] = induction
    return Trainer(p, model_config(cfg), cfg.seed, run_hash(cfg), train, heldout, weights,
                   out_dir, probes=probes, optim=cfg.optim, **kw)


# --------------------------------------------------------------------------------------------
# The command line (one process, or one rank of a torchrun launch).

def main(argv: list[str] | None = None) -> int:
    from mai_repro.pipeline import parse_assignment

    ap = argparse.ArgumentParser(prog="python -m mai_repro.stages.pretraining",
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
            RunDirLock(run.dir, "python -m mai_repro.stages.pretraining").acquire()
            require(run, "tokenizer")
        distributed.barrier(dist)
        train, heldout, weights = open_stage_shards(run.stage_dir("tokenizer"))
        trainer = make_trainer(cfg, train, heldout, weights, run.stage_dir(STAGE), dist=dist,
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
class Failure:
    kind: str  # "kill -9", "hang" or "exception"
    step: int  # the last step the child had finished
    cause: str


@dataclass
class Induction:
    """The induction score at one evaluation (eval.longctx.induction_score)."""

    step: int
    tokens: int
    first: float  # nats per token on the first copy of repeated random tokens
    second: float  # ... on the second copy
    ratio: float  # second / first


@dataclass
class Spike:
    """A step whose update the spike guard refused (or rolled back)."""

    step: int
    action: str
    loss: float
    planted: bool  # a bad batch planted on purpose (else a false alarm)


@dataclass
class PretrainingMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute. Families are
    keys of the held-out NLL dicts."""

    steps: int
    tokens: int
    total_params: int
    active_params: int
    final_loss: float  # mean training loss of the last 10 kept steps
    heldout_nll_first: dict[str, float]  # family -> held-out NLL at the first evaluation
    heldout_nll_final: dict[str, float]  # ... at the last
    tokens_per_s: float  # median over the steady (post-warmup) steps
    mfu: float | None  # None when the device's peak FLOPs are unknown
    peak_flops: float | None
    peak_source: str | None
    goodput: float
    ideal_s: float
    actual_s: float
    overhead_s: dict[str, float]  # seconds lost per part
    failures: list[Failure]  # injected failures, in order
    restarts: int
    planted_bad_steps: list[int]
    spikes: list[Spike]
    rollbacks: int
    steps_executed: int  # steps run, re-runs after restarts and roll-backs included
    checkpoint_stall_s: dict[str, float]  # "sync" / "async": training-thread wait per save
    final_load_cv: float | None  # expert-load CV at the last step that measured it
    # the induction score at each evaluation: loss on the second copy of repeated random
    # tokens over the first (copying has formed when it is well below 1)
    induction: list[Induction]
    induction_ratio_final: float | None


METRICS = PretrainingMetrics


@dataclass
class PretrainResult:
    events: list[dict]
    failures: list[dict]
    goodput: GoodputBreakdown
    metrics: PretrainingMetrics
    figures: dict[str, Path]


def checkpoint_stalls(model: torch.nn.Module, directory: Path, repeats: int = 3
                      ) -> dict[str, float]:
    """Mean time the training loop waits per checkpoint, sync vs async, on this model."""
    opt = make_optimizer(model, 1e-3)  # only its state's size matters here
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

    ind = [e for e in evals if "induction" in e]
    if ind:
        fig, ax = plots.new(width=6.4, height=3.6)
        steps_ = [e["step"] for e in ind]
        ax.plot(steps_, [e["induction"]["first"] for e in ind], marker="o", ms=3,
                color=plots.PALETTE[1], label="first copy (nothing to copy from)")
        ax.plot(steps_, [e["induction"]["second"] for e in ind], marker="o", ms=3,
                color=plots.OURS, label="second copy (copy from the first)")
        ax.set(title="induction: loss on repeated random tokens", xlabel="step",
               ylabel="nats per token")
        ax.legend(fontsize=8)
        figs["induction"] = plots.save(fig, st.path("figures", "induction"))
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
        cmd = [sys.executable, "-m", "mai_repro.stages.pretraining", "--preset", str(cfg_file),
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
        last_eval = {e["step"]: e for e in events if e["event"] == "eval" and "induction" in e}
        induction = [Induction(k, k * p.batch_size * p.seq_len, **last_eval[k]["induction"])
                     for k in sorted(last_eval)]
        metrics = PretrainingMetrics(
            steps=p.steps, tokens=p.steps * p.batch_size * p.seq_len,
            total_params=params.total, active_params=params.active,
            final_loss=float(np.mean([e["loss"] for e in kept[-10:]])),
            heldout_nll_first=first_nll, heldout_nll_final=final_nll,
            tokens_per_s=statistics.median(e["tokens_per_s"] for e in steady),
            mfu=statistics.median(mfus) if mfus else None,
            peak_flops=starts[0]["peak_flops"] if starts else None,
            peak_source=starts[0]["peak_source"] if starts else None,
            goodput=gp.goodput, ideal_s=gp.ideal_s, actual_s=gp.actual_s,
            overhead_s=gp.parts_s,
            failures=[Failure(f["kind"], f["step"], f["cause"]) for f in failures],
            restarts=report.restarts,
            planted_bad_steps=planted,
            spikes=[Spike(e["step"], e["action"], e["loss"], e["planted"]) for e in spikes],
            rollbacks=sum(e["event"] == "rollback" for e in events),
            steps_executed=sum(e["event"] == "step" for e in events),
            checkpoint_stall_s=stalls,
            final_load_cv=next((e["load_cv"] for e in reversed(kept)
                                if e["load_cv"] is not None), None),
            induction=induction,
            induction_ratio_final=induction[-1].ratio if induction else None,
        )
        st.metrics.update(result_dict(metrics))
        figures = _figures(events, failures, gp, st)
    return PretrainResult(events, failures, gp, metrics, figures)


if __name__ == "__main__":
    raise SystemExit(main())


# -- how big a model for this budget: the ladder's allocation ----------------------------------

@dataclass
class Allocation:
    """The preset's pre-training (N non-embedding active parameters, D tokens, C = 6 N D)
    against the ladder's fitted optimum for the same compute (notebook 05's L(N, D))."""

    params: int
    tokens: int
    compute: float
    optimal_params: float
    optimal_tokens: float
    loss_preset: float  # L(N, D) predicted for the preset's run
    loss_optimal: float  # ... for the optimum at the same compute
    candidates: list[dict[str, Any]]  # shapes near the optimum: width, depth, N, D, L


def allocation(cfg: Config, loss_nd: Any, widths: tuple[int, ...] = (64, 96, 128, 160, 192),
               depths: tuple[int, ...] = (3, 6, 9)) -> Allocation:
    """Where the preset's (N, D) sits on the ladder's fit ``loss_nd`` (a
    :class:`~mai_repro.train.scaling.LossND`), and the predicted loss of other shapes of the
    same family (:func:`mai_repro.stages.ladder.rung_model`) given the same compute."""
    from mai_repro.stages.ladder import nonembedding_params, rung_model

    p, m = cfg.pretrain, model_config(cfg)
    n = nonembedding_params(m)
    d = p.steps * p.batch_size * p.seq_len
    c = 6.0 * n * d
    n_opt, d_opt = loss_nd.optimal(c)
    head_dim = m.d_model // m.n_heads
    rows = []
    for w in widths:
        for depth in depths:
            if w % head_dim or depth % m.attn_period:
                continue
            shape = rung_model(m, w, depth, head_dim, p.seq_len)
            nn = nonembedding_params(shape)
            rows.append({"width": w, "depth": depth, "N": nn, "D": c / (6 * nn),
                         "predicted loss": float(loss_nd.loss(nn, c / (6 * nn))),
                         "preset": (w, depth) == (m.d_model, m.n_layers)})
    return Allocation(n, d, c, n_opt, d_opt, float(loss_nd.loss(n, d)),
                      float(loss_nd.loss(n_opt, d_opt)),
                      sorted(rows, key=lambda r: r["predicted loss"]))
