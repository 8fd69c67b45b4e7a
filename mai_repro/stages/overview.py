"""Stage ``overview`` (notebook 00): the recipe at a glance and MAI-scale accounting.

Pure arithmetic, no training: parameters of a MAI-Base-1-like config, training compute and
GPU-days, goodput durations, and the report's data-composition table rebuilt by the mixture
planner. Every figure is stored next to the report's value it is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mai_repro import plots, reference
from mai_repro.artifacts import STAGES, Run, project_root
from mai_repro.data.mixture import MixturePlan, plan_mixture, rounding_interval
from mai_repro.layers import COMPONENT_UNITS, imported_modules
from mai_repro.model.accounting import (
    ParamBreakdown,
    count_params,
    gpu_days,
    mai_base_1,
    training_flops,
)
from mai_repro.model.config import ModelConfig
from mai_repro.schema import result_dict
from mai_repro.train.goodput import GoodputBreakdown, from_goodput_and_overhead

HOUR = 3600.0


# The training phases of the report's section 4, in order.
REPORT_PHASES = ("pre-training", "mid-training 1", "mid-training 2")


STAGE = "overview"


@dataclass
class OverviewMetrics:
    """What the stage's manifest records (``metrics``), read back by attribute."""

    total_params: int  # of the MAI-Base-1-like config built from the report's architecture
    active_params: int
    total_params_rel_err: float  # ours / the report's - 1
    active_params_rel_err: float
    pretrain_flops: float  # 6 N D of pre-training
    pretrain_days_at_mfu: float  # on the report's GPUs at mfu_assumed
    mfu_assumed: float
    implied_mfu: float  # what the report's own figures imply
    goodput: float
    ideal_hours: float
    actual_hours: float
    overhead_shares: dict[str, float]  # share of the overhead hours per part
    mixture_training_tokens_ok: bool  # the planner rebuilds the composition table's tokens
    mixture_epochs_ok: bool  # ... and its epochs within rounding


METRICS = OverviewMetrics


@dataclass
class OverviewResult:
    mai_config: ModelConfig
    params: ParamBreakdown
    compute: list[dict[str, Any]]
    implied_mfu: float
    goodput: GoodputBreakdown
    mixture: MixturePlan
    mixture_check: list[dict[str, Any]]
    figures: dict[str, Any]
    metrics: OverviewMetrics


def roadmap() -> list[dict[str, str]]:
    """The map of the reproduction, generated from the stage registry
    (:data:`mai_repro.artifacts.STAGES`): each notebook, the part of the report it reproduces,
    its stage module and the component modules that module uses (read from its imports)."""
    root = project_root()
    rows = []
    for stage in STAGES.values():
        path = root / "mai_repro" / "stages" / f"{stage.name}.py"
        used = sorted({m.removeprefix("mai_repro.") for m in imported_modules(path)
                       if m.split(".")[1:2] and m.split(".")[1] in COMPONENT_UNITS})
        rows.append({"notebook": stage.notebook.removesuffix(".ipynb"),
                     "report section": stage.report_section,
                     "stage module": f"stages.{stage.name}",
                     "uses (mai_repro.)": ", ".join(used),
                     "present": "yes" if (root / "notebooks" / stage.notebook).exists()
                     else "not yet"})
    return rows


def compute_table(active_params: float, n_gpus: int, peak_flops: float, mfu: float
                  ) -> list[dict[str, Any]]:
    """Training compute (6 N D) per phase and its duration on ``n_gpus`` at ``mfu``."""
    rows = []
    for phase in REPORT_PHASES:
        tokens = reference.STAGES[phase]["tokens"]
        flops = training_flops(active_params, tokens)
        days = gpu_days(flops, n_gpus, peak_flops, mfu)
        rows.append({"phase": phase, "tokens": tokens, "flops": flops,
                     "days": days, "gpu_days": days * n_gpus})
    return rows


def report_goodput() -> GoodputBreakdown:
    """Ideal and actual pre-training durations from 90% goodput and 51 h of overhead."""
    parts = {k: hours * HOUR for k, (hours, _) in reference.OVERHEAD_PARTS.items()}
    return from_goodput_and_overhead(reference.GOODPUT, reference.OVERHEAD_HOURS * HOUR, parts)


def report_mixture() -> tuple[MixturePlan, list[dict[str, Any]]]:
    """Re-plan the report's composition table from its unique tokens and shares."""
    comp = reference.COMPOSITION
    plan = plan_mixture({k: v[0] * reference.T for k, v in comp.items()},
                        {k: v[2] for k, v in comp.items()}, reference.TRAINING_TOKENS)
    checks = []
    for fam, (unique, training, share, epochs) in comp.items():
        row = plan[fam]
        lo, hi = rounding_interval(unique, share / 100, 30.0, unique_step=0.1, share_step=0.001)
        checks.append({
            "family": fam,
            "training_T (ours)": row.training_tokens / reference.T, "training_T (report)": training,
            "epochs (ours)": row.epochs, "epochs (report)": epochs,
            "epochs interval from rounding": (lo, hi),
            "training within 0.06T": abs(row.training_tokens / reference.T - training) <= 0.06,
            "report epochs in interval": lo <= epochs <= hi,
        })
    return plan, checks


def _figure_params(params: ParamBreakdown, path) -> Any:
    rows = [r for r in params.rows() if r[1] > 0]
    names = [r[0] for r in rows]
    y = np.arange(len(rows))
    fig, ax = plots.new(width=7.5, height=3.8)
    ax.barh(y + 0.2, [r[1] / 1e9 for r in rows], height=0.4, label="total", color=plots.OURS)
    ax.barh(y - 0.2, [r[2] / 1e9 for r in rows], height=0.4, label="active per token",
            color=plots.PALETTE[1])
    ax.set_yticks(y, names)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (billions, log scale)")
    ax.set_title(f"MAI-Base-1-like config: {params.total / 1e12:.3f}T total, "
                 f"{params.active / 1e9:.1f}B active (report: ~1T, 35B)")
    ax.legend(loc="lower right")
    return plots.save(fig, path)


def _figure_goodput(gp: GoodputBreakdown, path) -> Any:
    fig, ax = plots.new(width=8.0, height=2.8)
    left = gp.ideal_s / HOUR
    ax.barh([0], [left], color="#9ecae1", label=f"ideal {left:.0f} h")
    for (name, secs), colour in zip(gp.parts_s.items(), plots.PALETTE[1:], strict=False):
        ax.barh([0], [secs / HOUR], left=left, color=colour,
                label=f"{name} {secs / HOUR:.1f} h ({secs / gp.overhead_s:.0%})")
        left += secs / HOUR
    ax.set_yticks([])
    ax.set_xlim(0, gp.actual_s / HOUR * 1.02)
    ax.set_xlabel("hours of the pre-training run on 8,192 GPUs")
    ax.set_title(f"Goodput {gp.goodput:.1%}: ideal {gp.ideal_s / HOUR:.0f} h, actual "
                 f"{gp.actual_s / HOUR:.0f} h, overhead {gp.overhead_s / HOUR:.0f} h")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3, fontsize=8)
    return plots.save(fig, path)


def _figure_mixture(checks: list[dict[str, Any]], path) -> Any:
    fams = [c["family"] for c in checks]
    x = np.arange(len(fams))
    fig, ax = plots.new(width=8.0, height=3.8)
    ax.bar(x - 0.2, [c["epochs (report)"] for c in checks], 0.4, label="report",
           color=plots.REPORT)
    ax.bar(x + 0.2, [c["epochs (ours)"] for c in checks], 0.4, label="planner",
           color=plots.OURS)
    for i, c in enumerate(checks):
        lo, hi = c["epochs interval from rounding"]
        ax.plot([i + 0.2, i + 0.2], [lo, hi], color="black", lw=1)
    ax.set_xticks(x, fams, rotation=25, ha="right")
    ax.set_ylabel("epochs over unique tokens")
    ax.set_title("Epochs per family: the report's table vs the planner (bars: rounding range)")
    ax.legend()
    return plots.save(fig, path)


def build(run: Run) -> OverviewResult:
    """Compute everything notebook 00 shows, save figures and the stage manifest."""
    cfg = run.cfg.overview
    with run.stage(STAGE) as st:
        mai = mai_base_1()
        params = count_params(mai)
        peak = cfg.gpu_peak_tflops * 1e12
        n_gpus = reference.STAGES["pre-training"]["gpus"]
        compute = compute_table(params.active, n_gpus, peak, cfg.mfu)
        gp = report_goodput()
        # The MFU the report's own figures imply: 6 N D over the ideal (fully productive) time.
        implied_mfu = compute[0]["flops"] / (n_gpus * peak * gp.ideal_s)
        plan, checks = report_mixture()
        figures = {
            "params": _figure_params(params, st.path("figures", "params")),
            "goodput": _figure_goodput(gp, st.path("figures", "goodput")),
            "mixture": _figure_mixture(checks, st.path("figures", "mixture")),
        }
        shares = gp.shares()
        metrics = OverviewMetrics(
            total_params=params.total,
            active_params=params.active,
            total_params_rel_err=params.total / reference.TOTAL_PARAMS - 1,
            active_params_rel_err=params.active / reference.ACTIVE_PARAMS - 1,
            pretrain_flops=compute[0]["flops"],
            pretrain_days_at_mfu=compute[0]["days"],
            mfu_assumed=cfg.mfu,
            implied_mfu=implied_mfu,
            goodput=gp.goodput,
            ideal_hours=gp.ideal_s / HOUR,
            actual_hours=gp.actual_s / HOUR,
            overhead_shares=shares,
            mixture_training_tokens_ok=all(c["training within 0.06T"] for c in checks),
            mixture_epochs_ok=all(c["report epochs in interval"] for c in checks),
        )
        st.metrics.update(result_dict(metrics))
    return OverviewResult(mai, params, compute, implied_mfu, gp, plan, checks, figures, metrics)
