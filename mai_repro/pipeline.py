"""Run the notebook sequence through papermill.

    python -m mai_repro.pipeline --preset laptop                 # everything, in order
    python -m mai_repro.pipeline --preset smoke --only 00,03     # some notebooks
    python -m mai_repro.pipeline --preset laptop --from 4 --to 7
    python -m mai_repro.pipeline --preset smoke -p pretrain.steps=10 -p seed=3
    python -m mai_repro.pipeline --preset smoke --prepare runs/nbval   # parameterise only

Every parameter is validated before any notebook runs. Executed notebooks are written to
``<run_dir>/executed/``; a failing cell stops the pipeline with the notebook, the cell, the
error and the path of the partial notebook, and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mai_repro import config
from mai_repro.artifacts import RunDirError, RunDirLock, project_root
from mai_repro.schema import ConfigError

NOTEBOOK_RE = re.compile(r"^(\d{2})_.+\.ipynb$")
FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class Selection:
    only: frozenset[int] | None = None
    first: int | None = None
    last: int | None = None

    def __contains__(self, number: int) -> bool:
        if self.only is not None and number not in self.only:
            return False
        if self.first is not None and number < self.first:
            return False
        return self.last is None or number <= self.last


def discover(notebooks_dir: Path) -> list[tuple[int, Path]]:
    """Numbered notebooks (``NN_name.ipynb``) in order of their two-digit prefix."""
    found = []
    for path in notebooks_dir.glob("*.ipynb"):
        m = NOTEBOOK_RE.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    numbers = [n for n, _ in found]
    dupes = sorted({n for n in numbers if numbers.count(n) > 1})
    if dupes:
        raise SystemExit(f"error: several notebooks share the number(s) {dupes}")
    return sorted(found)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key.path=value`` with the value read as YAML (``10``, ``true``, ``null``, ``[1, 2]``)."""
    if "=" not in text:
        raise ConfigError(text, "expected key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(text, "empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot read value {raw!r}: {e}") from e
    if isinstance(value, str) and FLOAT_RE.fullmatch(value.strip()):
        value = float(value)  # YAML 1.1 reads 1e-3 as a string; a number is meant
    return key, value


def _numbers(text: str) -> frozenset[int]:
    try:
        return frozenset(int(x) for x in text.split(",") if x.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected notebook numbers like 00,03, got "
                                         f"{text!r}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mai_repro.pipeline",
                                description="Run the mai-repro notebooks through papermill.")
    p.add_argument("--preset", default="laptop",
                   help=f"one of {', '.join(config.PRESETS)} or a YAML file (default laptop)")
    p.add_argument("--only", type=_numbers, help="comma-separated notebook numbers, e.g. 00,03")
    p.add_argument("--from", dest="first", type=int, help="first notebook number to run")
    p.add_argument("--to", dest="last", type=int, help="last notebook number to run")
    p.add_argument("-p", "--param", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable), e.g. -p pretrain.steps=10")
    p.add_argument("--run-dir", help="run directory (default runs/<preset>)")
    p.add_argument("--notebooks", default=None, help="notebook folder (default notebooks/)")
    p.add_argument("--prepare", metavar="DIR",
                   help="only write the parameterised notebooks into DIR (for nbval)")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel name")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    root = project_root()
    nb_dir = Path(args.notebooks) if args.notebooks else root / "notebooks"

    # 1. Validate every parameter before anything runs.
    try:
        overrides: dict[str, Any] = {}
        for item in args.param:
            key, value = parse_assignment(item)
            overrides[key] = value
        cfg = config.load(args.preset, overrides)
    except ConfigError as e:
        print(f"error: invalid parameter: {e}", file=sys.stderr)
        return 2
    seed = overrides.pop("seed", None)
    device = overrides.pop("device", None)
    run_dir = Path(args.run_dir) if args.run_dir else root / "runs" / cfg.preset
    run_dir = run_dir.resolve()

    if args.first is not None and args.last is not None and args.first > args.last:
        print(f"error: inverted range: --from {args.first} is after --to {args.last}",
              file=sys.stderr)
        return 2
    selection = Selection(args.only, args.first, args.last)
    notebooks = [(n, p) for n, p in discover(nb_dir) if n in selection]
    if args.only:
        missing = sorted(args.only - {n for n, _ in discover(nb_dir)})
        if missing:
            print(f"error: no notebook numbered {', '.join(f'{n:02d}' for n in missing)} in "
                  f"{nb_dir}", file=sys.stderr)
            return 2
    if not notebooks:
        print(f"error: no notebooks selected in {nb_dir}", file=sys.stderr)
        return 2

    parameters = {"preset": args.preset, "run_dir": str(run_dir), "seed": seed,
                  "device": device, "overrides": overrides}

    # One pipeline per run directory; the notebooks' kernels re-enter this lock (artifacts).
    lock = RunDirLock(run_dir, f"pipeline --preset {args.preset}")
    if not args.prepare:
        try:
            lock.acquire()
        except RunDirError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    import papermill as pm  # imported late: argument errors stay fast

    # the kernels inherit this environment: an empty OMP_NUM_THREADS makes libgomp warn in
    # every notebook ("Invalid value"), and unset means the same default
    if os.environ.get("OMP_NUM_THREADS", None) == "":
        del os.environ["OMP_NUM_THREADS"]

    if args.prepare:
        out_dir = Path(args.prepare)
        out_dir.mkdir(parents=True, exist_ok=True)
        for _, path in notebooks:
            pm.execute_notebook(str(path), str(out_dir / path.name), parameters=parameters,
                                prepare_only=True, kernel_name=args.kernel, log_output=False,
                                progress_bar=False)
        print(f"prepared {len(notebooks)} notebooks at preset {cfg.preset} in {out_dir}")
        return 0

    with lock:
        out_dir = run_dir / "executed"
        out_dir.mkdir(parents=True, exist_ok=True)
        print(f"mai-repro pipeline: preset {cfg.preset}, {len(notebooks)} notebooks, "
              f"run dir {run_dir}")
        start = time.time()
        for i, (_, path) in enumerate(notebooks, 1):
            dest = out_dir / path.name
            t0 = time.time()
            print(f"[{i}/{len(notebooks)}] {path.name}", flush=True)
            try:
                pm.execute_notebook(str(path), str(dest), parameters=parameters,
                                    kernel_name=args.kernel, cwd=str(root), progress_bar=True)
            except pm.PapermillExecutionError as e:
                print(f"\nFAILED: {path.name}, cell {e.cell_index} (execution count "
                      f"{e.exec_count}): {e.ename}: {e.evalue}\n"
                      f"partial notebook: {dest}", file=sys.stderr)
                return 1
            print(f"[{i}/{len(notebooks)}] {path.name} done in {time.time() - t0:.1f} s -> "
                  f"{dest}", flush=True)
        print(f"all {len(notebooks)} notebooks done in {time.time() - start:.1f} s")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
