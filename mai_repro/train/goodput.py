"""Goodput in the MAI-Thinking-1 report's terms.

Goodput = ideal training duration / actual wall-clock duration. The gap (the overhead) is split
into recomputation (steps redone after failures), non-stepping time (start-up, checkpoint
stalls, restarts) and the MFU drop (steps that ran slower than the steady state); whatever the
parts do not explain is kept as "unattributed", never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class GoodputBreakdown:
    ideal_s: float
    actual_s: float
    parts_s: dict[str, float]  # overhead by cause, in seconds, "unattributed" included

    @property
    def goodput(self) -> float:
        return self.ideal_s / self.actual_s

    @property
    def overhead_s(self) -> float:
        return self.actual_s - self.ideal_s

    def shares(self) -> dict[str, float]:
        """Each part as a share of the overhead."""
        return {k: v / self.overhead_s for k, v in self.parts_s.items()}


def breakdown(ideal_s: float, actual_s: float, parts_s: Mapping[str, float]) -> GoodputBreakdown:
    """Overhead parts plus an "unattributed" remainder that makes them add up to the gap."""
    if ideal_s <= 0 or actual_s < ideal_s:
        raise ValueError(f"need 0 < ideal <= actual, got ideal={ideal_s}, actual={actual_s}")
    parts = dict(parts_s)
    rest = (actual_s - ideal_s) - sum(parts.values())
    if rest < -1e-9 * actual_s:
        raise ValueError(f"overhead parts ({sum(parts.values()):.4g}) exceed the overhead "
                         f"({actual_s - ideal_s:.4g})")
    parts["unattributed"] = max(rest, 0.0)
    return GoodputBreakdown(float(ideal_s), float(actual_s), parts)


def from_goodput_and_overhead(goodput: float, overhead_s: float,
                              parts_s: Mapping[str, float]) -> GoodputBreakdown:
    """Recover ideal and actual durations from a goodput ratio and the overhead it leaves.

    overhead = actual - ideal and goodput = ideal / actual, so actual = overhead / (1 - goodput).
    """
    if not 0 < goodput < 1:
        raise ValueError(f"goodput must lie in (0, 1), got {goodput}")
    actual = overhead_s / (1.0 - goodput)
    return breakdown(actual - overhead_s, actual, parts_s)


# --------------------------------------------------------------------------------------------
# Goodput of a real run, from its event log.

def kept_steps(events: list[dict]) -> list[dict]:
    """The step records the final model descends from: the last execution of each step (an
    earlier execution was redone after a failure), in order."""
    steps = [e for e in events if e["event"] == "step"]
    last = {e["step"]: i for i, e in enumerate(steps)}
    return [steps[i] for i in sorted(last.values())]


def from_events(events: list[dict], warmup_steps: int = 2) -> GoodputBreakdown:
    """Goodput of a run from its events, with parts that add up to the wall clock exactly.

    Events (dicts, in time order, times in seconds):
      ``{"event": "step", "step": n, "t": end_time, "dt": duration}`` for every executed step
      (a step redone after a failure appears again), plus any other events, of which the
      first and last times bound the run.

    - ideal: unique steps x steady step time (median duration, first ``warmup_steps`` of
      each process start excluded: compilation and cache warm-up are start-up costs), but no
      more than the kept steps took;
    - recomputation: executions of a step that a later execution of the same step replaced;
    - MFU drop: how much longer the kept executions took than the steady time (net);
    - non-stepping time: everything outside steps (start-up, checkpoint stalls, restarts,
      hang detection).
    """
    if not events:
        raise ValueError("no events")
    steps = [e for e in events if e["event"] == "step"]
    if not steps:
        raise ValueError("no step events")
    start, end = min(e["t"] for e in events), max(e["t"] for e in events)
    kept = kept_steps(steps)
    kept_ids = {id(e) for e in kept}
    redone = [e for e in steps if id(e) not in kept_ids]
    steady_pool = [e["dt"] for e in steps if not e.get("warmup", False)] or \
        [e["dt"] for e in steps]
    steady = float(sorted(steady_pool)[len(steady_pool) // 2])
    # The ideal never exceeds the time the kept steps took: when redone or warm-up steps were
    # the slow ones, the median overstates the steady time.
    ideal = min(steady * len(kept), sum(e["dt"] for e in kept))
    recompute = sum(e["dt"] for e in redone)
    mfu_drop = sum(e["dt"] for e in kept) - ideal
    non_stepping = (end - start) - sum(e["dt"] for e in steps)
    actual = end - start
    if actual < ideal:  # a run faster than its own median: nothing to attribute
        actual = ideal
    return breakdown(ideal, actual, {"recomputation": recompute,
                                     "non-stepping time": max(non_stepping, 0.0),
                                     "MFU drop": max(mfu_drop, 0.0)})
