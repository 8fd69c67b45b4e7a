"""Run many independent jobs (training runs) in parallel processes, resumably.

A job is a key, a ``"module:function"`` and keyword arguments (JSON-able). Each finished job's
result is written atomically to ``<out_dir>/<key>.json`` together with its function and
arguments; a restarted sweep (after a kill, a crash, a closed laptop) loads those files and runs
only the jobs without one, or whose stored arguments differ from the job's (a changed config is
a new job). Results come back in job order whatever order the processes finish in.

Processes come from :class:`concurrent.futures.ProcessPoolExecutor`; ``workers=1`` runs jobs in
this process. The start method defaults to ``fork`` on Linux (workers inherit the imported
libraries instead of importing torch again, which takes seconds) and ``spawn`` elsewhere; pass
``start_method="spawn"`` when the parent has initialised CUDA.
"""

from __future__ import annotations

import concurrent.futures as cf
import importlib
import json
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mai_repro.files import atomic_write_json

KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Job:
    key: str  # file name of the result (letters, digits, _ . -)
    fn: str  # "module:function", called as function(**kwargs)
    kwargs: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What identifies the job on disk: a result is reused only for the same record."""
        return json.loads(json.dumps({"fn": self.fn, "kwargs": self.kwargs}, sort_keys=True))


def call(fn: str, kwargs: dict[str, Any]) -> Any:
    module, name = fn.split(":")
    return getattr(importlib.import_module(module), name)(**kwargs)


def result_path(out_dir: Path | str, key: str) -> Path:
    return Path(out_dir) / f"{key}.json"


def load_done(jobs: Sequence[Job], out_dir: Path | str) -> dict[str, Any]:
    """Results already on disk for these jobs (same function and arguments)."""
    done = {}
    for job in jobs:
        path = result_path(out_dir, job.key)
        if not path.is_file():
            continue
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue  # cannot happen with atomic writes; treat as not done
        if stored.get("job") == job.record():
            done[job.key] = stored["result"]
    return done


def effective_workers(workers: int) -> int:
    return max(1, min(workers, os.cpu_count() or 1))


def run_sweep(jobs: Sequence[Job], out_dir: Path | str, workers: int = 1,
              progress: bool = True, desc: str = "runs", start_method: str | None = None
              ) -> list[Any]:
    """Run every job not finished yet; returns all results in job order."""
    from tqdm.auto import tqdm

    keys = [j.key for j in jobs]
    bad = [k for k in keys if not KEY_RE.match(k)]
    if bad or len(set(keys)) != len(keys):
        raise ValueError(f"job keys must be unique file names, got {bad or keys}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = load_done(jobs, out_dir)
    todo = [j for j in jobs if j.key not in results]
    bar = tqdm(total=len(jobs), initial=len(results), desc=desc, disable=not progress)

    def finish(job: Job, result: Any) -> None:
        atomic_write_json(result_path(out_dir, job.key), {"job": job.record(), "result": result})
        results[job.key] = result
        bar.update(1)

    workers = effective_workers(workers)
    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                finish(job, call(job.fn, job.kwargs))
        else:
            if start_method is None:
                start_method = "fork" if sys.platform == "linux" else "spawn"
            ctx = multiprocessing.get_context(start_method)
            pool = cf.ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx)
            try:
                futures = {pool.submit(call, j.fn, j.kwargs): j for j in todo}
                for fut in cf.as_completed(futures):
                    finish(futures[fut], fut.result())
            finally:  # on an error, finished jobs are kept and queued ones dropped
                pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
    return [results[k] for k in keys]


class Background:
    """Calls started at once in spawned child processes (``workers`` > 0), or made in this
    process when their result is asked for (``workers`` 0), so that this process can do other
    work meanwhile. ``spawn``, not ``fork``: a forked child of a process whose OpenMP threads
    have run can hang. A call that seeds itself gives the same result either way. ``calls``
    maps a key to ``(function, args, kwargs)``; the function must be importable (module
    level)."""

    def __init__(self, calls: Mapping[str, tuple[Callable, tuple, dict]], workers: int = 0):
        self.calls: dict[str, tuple[Callable, tuple, dict]] = {}
        self.futures: dict[str, cf.Future] = {}
        self.pool: cf.ProcessPoolExecutor | None = None
        if workers > 0:  # the processes start with the first call
            self.pool = cf.ProcessPoolExecutor(
                max_workers=min(workers, len(calls)) if calls else workers,
                mp_context=multiprocessing.get_context("spawn"))
        for k, (fn, args, kw) in calls.items():
            self.submit(k, fn, args, kw)

    def submit(self, key: str, fn: Callable, args: tuple, kw: dict | None = None) -> None:
        """One more call: queued behind the others in the child processes (or made here when
        its result is asked for)."""
        if key in self.calls:
            raise ValueError(f"a call {key!r} was already submitted")
        self.calls[key] = (fn, args, kw or {})
        if self.pool is not None:
            self.futures[key] = self.pool.submit(fn, *args, **(kw or {}))

    @property
    def in_child(self) -> bool:
        return self.pool is not None

    def result(self, key: str) -> Any:
        if key in self.futures:
            return self.futures[key].result()
        fn, args, kw = self.calls[key]
        return fn(*args, **kw)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc: object) -> None:  # on an error too: no child outlives the caller
        self.close()
