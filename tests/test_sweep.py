"""The sweep runner: results in job order, one JSON per finished run, resume after a kill."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mai_repro.train import sweep
from mai_repro.train.sweep import Job

HERE = Path(__file__).resolve().parent


def square(x: int, log: str, die_at: int = -1) -> dict:
    """A job that records each call; job ``die_at`` kills the whole process (a SIGKILL), the
    first time only (a file beside the log remembers)."""
    died = Path(log + ".died")
    if x == die_at and not died.exists():
        died.touch()
        os.kill(os.getpid(), 9)
    with open(log, "a") as f:
        f.write(f"{x}\n")
    return {"y": x * x}


def jobs(log: Path, die_at: int = -1, n: int = 6) -> list[Job]:
    return [Job(f"j{x}", "test_sweep:square", {"x": x, "log": str(log), "die_at": die_at})
            for x in range(n)]


def calls(log: Path) -> list[int]:
    return sorted(int(x) for x in log.read_text().split()) if log.exists() else []


@pytest.mark.parametrize("workers", [1, 2])
def test_results_in_job_order_and_written_per_run(tmp_path, workers, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    log = tmp_path / "log"
    out = sweep.run_sweep(jobs(log), tmp_path / "runs", workers=workers, progress=False)
    assert out == [{"y": x * x} for x in range(6)]
    assert calls(log) == list(range(6))
    stored = json.loads((tmp_path / "runs" / "j3.json").read_text())
    assert stored["result"] == {"y": 9} and stored["job"]["kwargs"]["x"] == 3


def test_killed_sweep_resumes_without_redoing_finished_runs(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    log, runs = tmp_path / "log", tmp_path / "runs"
    # a sweep killed (SIGKILL, no clean-up) at its fourth job, run in order in one process
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import test_sweep as t; "
            f"from mai_repro.train import sweep; from pathlib import Path; "
            f"sweep.run_sweep(t.jobs(Path({str(log)!r}), die_at=3), {str(runs)!r}, "
            f"workers=1, progress=False)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert calls(log) == [0, 1, 2]
    assert sorted(p.name for p in runs.glob("*.json")) == ["j0.json", "j1.json", "j2.json"]
    out = sweep.run_sweep(jobs(log, die_at=3), runs, workers=2, progress=False)  # restart
    assert out == [{"y": x * x} for x in range(6)]
    assert calls(log) == [0, 1, 2, 3, 4, 5]  # 0-2 ran once, before the kill


def test_changed_arguments_are_a_new_job(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    log = tmp_path / "log"
    sweep.run_sweep(jobs(log, n=2), tmp_path / "runs", progress=False)
    changed = [Job("j0", "test_sweep:square", {"x": 5, "log": str(log)})]
    assert sweep.run_sweep(changed, tmp_path / "runs", progress=False) == [{"y": 25}]
    assert calls(log) == [0, 1, 5]


def test_keys_must_be_unique_file_names(tmp_path):
    with pytest.raises(ValueError, match="unique file names"):
        sweep.run_sweep([Job("a/b", "x:y")], tmp_path)
    with pytest.raises(ValueError, match="unique file names"):
        sweep.run_sweep([Job("a", "x:y"), Job("a", "x:y")], tmp_path)


def test_background_calls_submitted_later_queue_behind_the_first():
    """grpo: the other seeds' climbs start at once and the ablations join the same child
    process when the main climb branches; results do not depend on where a call ran."""
    import math

    from mai_repro.train.sweep import Background

    here, there = Background({}, 0), Background({"a": (math.comb, (10, 3), {})}, 1)
    assert not here.in_child and there.in_child
    for bg in (here, there):
        bg.submit("b", math.comb, (12, 5))
        with pytest.raises(ValueError, match="already submitted"):
            bg.submit("b", math.comb, (1, 1))
    assert there.result("a") == 120
    assert here.result("b") == there.result("b") == 792
    here.close()
    there.close()
