"""Compare the stage metrics of two run directories key by key, skipping keys that measure time.

    python benchmarks/compare_runs.py RUN_A RUN_B [stage,stage,...] [--show 12]

For each stage, reads ``<run>/<stage>/manifest.json`` on both sides, walks its ``metrics`` to
the leaves (``stages.base[0].wall_s``), skips every key with a part that names a duration, a
rate or a restart count (wall time, tokens/s, MFU, goodput, overhead, stalls...), and prints
how many leaves are identical and the first ``--show`` that differ. This is how a refactor is
checked to reproduce a run's numbers (docs/architecture.md): the same preset, seed and
overrides on the commit before and after, then this script.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mai_repro.artifacts import STAGES

TIMING = re.compile(r"(^|_)(s|wall|time|seconds|tokens_per_s|mfu|goodput|ideal|actual|overhead|"
                    r"stall|dt|peak_flops|peak_source|per_s|elapsed|throughput|restarts|"
                    r"steps_executed|failures|checkpoint_stall)(_|$)|_s$|_ms$|speed|ratio_time")


def leaves(x: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every leaf of nested dicts and lists."""
    if isinstance(x, dict):
        for k, v in x.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(x, list):
        for i, v in enumerate(x):
            yield from leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def timing(key: str) -> bool:
    return any(TIMING.search(part) for part in re.split(r"[.\[\]]", key) if part)


def same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float)
                      and math.isnan(a) and math.isnan(b))


def compare(a: Path, b: Path, stage: str) -> tuple[int, list[tuple[str, Any, Any]], int] | None:
    """(identical leaves, differing (key, a, b), skipped timing leaves); None when a side
    lacks the stage."""
    pa, pb = a / stage / "manifest.json", b / stage / "manifest.json"
    if not (pa.exists() and pb.exists()):
        return None
    ma = dict(leaves(json.loads(pa.read_text())["metrics"]))
    mb = dict(leaves(json.loads(pb.read_text())["metrics"]))
    n_same, diffs, skipped = 0, [], 0
    for k in sorted(set(ma) | set(mb)):
        if timing(k):
            skipped += 1
            continue
        va, vb = ma.get(k, "<absent>"), mb.get(k, "<absent>")
        if same(va, vb):
            n_same += 1
        else:
            diffs.append((k, va, vb))
    return n_same, diffs, skipped


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("stages", nargs="?", default=",".join(STAGES),
                    help="comma-separated stage ids (default: every stage)")
    ap.add_argument("--show", type=int, default=12, help="differences printed per stage")
    args = ap.parse_args(argv)
    for stage in args.stages.split(","):
        r = compare(args.a, args.b, stage)
        if r is None:
            print(f"{stage:18} not in both run directories")
            continue
        n_same, diffs, skipped = r
        print(f"{stage:18} identical {n_same}, different {len(diffs)}, timing keys skipped "
              f"{skipped}")
        for k, va, vb in diffs[:args.show]:
            print(f"    {k}: {va!r} vs {vb!r}")


if __name__ == "__main__":
    main()
