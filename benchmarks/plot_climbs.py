"""Held-out pass@1 and pass@k of several climbs, against steps and seconds of climbing.

    python benchmarks/plot_climbs.py --out figures/grpo/worked_credit.png \
        LABEL=HISTORY.json [LABEL=HISTORY.json ...] [--k 4] [--target 0.25]

Each HISTORY is what ``benchmarks/worked_climb.py --history`` wrote (every step's
statistics, the evaluations, their seconds). Left: pass@1 (solid) and pass@k (dashed) by
optimizer step; right: pass@1 by seconds of climbing (the evaluations' own seconds left
out), with the start plus ``--target`` (issue 22: +25 points) and the 10-minute mark drawn.
A history with a ``distilled`` result (``worked_climb.py --distill-steps``) ends in a star:
at its last step on the left, after the distillation's seconds on the right (dotted).
Figures: docs/rl.md, "Sixth round" and "Eighth round".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mai_repro import plots


def climb_seconds(h: dict) -> list[float]:
    """Seconds of climbing at each evaluation: the step's wall time minus the evaluations
    before it (an evaluation at step s runs after that step's row was written)."""
    at = {r["step"]: r["time_s"] for r in h["history"]}
    out = []
    for i, e in enumerate(h["evals"]):
        out.append(0.0 if e["step"] == 0 else at[e["step"]] - sum(h["eval_s"][:i]))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=HISTORY.json")
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=4, help="the k of the histories' pass@k")
    ap.add_argument("--target", type=float, default=0.25)
    ap.add_argument("--budget-s", type=float, default=600.0)
    a = ap.parse_args(argv)
    fig, (by_step, by_s) = plots.new(1, 2, width=5.2, height=3.8)
    start = None
    for i, item in enumerate(a.runs):
        label, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"{item!r}: give LABEL=HISTORY.json")
        h = json.loads(Path(path).read_text())
        steps = [e["step"] for e in h["evals"]]
        p1 = [100 * e["accuracy"] for e in h["evals"]]
        pk = [100 * e["solved_any"] for e in h["evals"]]
        color = plots.PALETTE[i % len(plots.PALETTE)]
        by_step.plot(steps, p1, "o-", color=color, label=label)
        by_step.plot(steps, pk, "--", color=color, alpha=0.6)
        secs = climb_seconds(h)
        by_s.plot(secs, p1, "o-", color=color, label=label)
        d = h.get("distilled")
        if d:  # the distilled model: after the climb's last step, its seconds added
            by_step.plot([steps[-1]], [100 * d["accuracy"]], "*", ms=12, color=color)
            by_step.plot([steps[-1]], [100 * d["solved_any"]], "*", ms=9, color=color,
                         alpha=0.6)
            by_s.plot([secs[-1], secs[-1] + d["distill_s"]], [p1[-1], 100 * d["accuracy"]],
                      ":", color=color)
            by_s.plot([secs[-1] + d["distill_s"]], [100 * d["accuracy"]], "*", ms=12,
                      color=color)
        start = p1[0] if start is None else start
    for ax in (by_step, by_s):
        ax.axhline(start + 100 * a.target, color=plots.REPORT, lw=0.8, ls=":")
        ax.set_ylabel("held-out pass@1 (%)")
    by_s.axvline(a.budget_s, color="grey", lw=0.8, ls=":")
    by_step.set_xlabel(f"optimizer step (dashed: pass@{a.k})")
    by_s.set_xlabel("seconds of climbing")
    by_step.set_title("by step")
    by_s.set_title(f"by time (dotted: start +{100 * a.target:.0f}, {a.budget_s:.0f} s)")
    by_step.legend(fontsize=8)
    print(plots.save(fig, a.out))


if __name__ == "__main__":
    main()
