"""A supervisor that runs training as a child process, injects failures, and restarts it.

The child writes a *heartbeat* (a small JSON file: the step it finished and the time) after
every step, and resumes from its latest checkpoint whenever it starts. The supervisor:

- kills the child with SIGKILL when its heartbeat reaches a scheduled ``kill`` step;
- passes scheduled ``raise`` and ``hang`` faults to the child through the environment
  (``MAI_REPRO_FAULTS="raise@50,hang@80"``), which the child's loop turns into an exception or
  an endless sleep at that step (:func:`maybe_fail`);
- treats a heartbeat older than ``hang_timeout`` seconds as a hang and kills the child; before
  a (re)started child's first heartbeat the limit is ``start_timeout`` instead (default the
  larger of ``hang_timeout`` and 120 s): starting a process (importing torch, loading the
  checkpoint) can take far longer than a step on a busy machine, and is no hang;
- restarts the child after any failure until it exits with code 0 (its budget is done), or
  gives up after ``max_restarts``.

Every start, failure and restart is logged with its time, for goodput accounting.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mai_repro.files import atomic_write_json

FAULTS_ENV = "MAI_REPRO_FAULTS"


@dataclass(frozen=True)
class Fault:
    kind: str  # "kill", "raise" or "hang"
    step: int

    def __post_init__(self) -> None:
        if self.kind not in ("kill", "raise", "hang"):
            raise ValueError(f"fault kind must be kill, raise or hang, got {self.kind!r}")

    def __str__(self) -> str:
        return f"{self.kind}@{self.step}"


def parse_faults(text: str) -> list[Fault]:
    """``"kill@10,raise@20"`` -> faults."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        kind, _, step = item.partition("@")
        if not step.isdigit():
            raise ValueError(f"expected kind@step, got {item!r}")
        out.append(Fault(kind, int(step)))
    return out


def write_heartbeat(path: Path | str, step: int) -> None:
    atomic_write_json(Path(path), {"step": step, "t": time.time()})


def read_heartbeat(path: Path | str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def maybe_fail(step: int) -> None:
    """Called by the child after each step: carries out a fault scheduled for this step."""
    for fault in parse_faults(os.environ.get(FAULTS_ENV, "")):
        if fault.step == step and fault.kind == "raise":
            raise RuntimeError(f"injected failure at step {step}")
        if fault.step == step and fault.kind == "hang":
            while True:  # the supervisor's heartbeat timeout ends this
                time.sleep(3600)


@dataclass
class SupervisorReport:
    exit_code: int
    restarts: int
    events: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        return [e for e in self.events if e["event"] == "failure"]


def supervise(cmd: Sequence[str], heartbeat: Path | str, faults: Sequence[Fault] = (),
              hang_timeout: float = 30.0, max_restarts: int = 10, poll_s: float = 0.05,
              env: dict[str, str] | None = None, log: Path | str | None = None,
              output: Path | str | None = None, on_poll: Callable[[int], None] | None = None,
              start_timeout: float | None = None) -> SupervisorReport:
    """Run ``cmd`` until it succeeds, injecting ``faults`` once each (see module doc).

    ``output``: a file the child's stdout and stderr are appended to (else inherited).
    ``on_poll(step)``: called at every poll with the child's last heartbeat step (progress).
    ``start_timeout``: seconds a started child may take to its first heartbeat (default
    ``max(hang_timeout, 120)``).
    """
    start_limit = start_timeout if start_timeout is not None else max(hang_timeout, 120.0)
    heartbeat = Path(heartbeat)
    pending = sorted(faults, key=lambda f: f.step)
    events: list[dict] = []
    restarts = 0

    def note(event: str, **kw: object) -> None:
        events.append({"event": event, "t": time.time(), **kw})

    while True:
        child_faults = [f for f in pending if f.kind in ("raise", "hang")]
        child_env = {**os.environ, **(env or {}), FAULTS_ENV: ",".join(map(str, child_faults))}
        heartbeat.unlink(missing_ok=True)
        note("start", attempt=restarts)
        sink = open(output, "ab") if output is not None else None  # noqa: SIM115
        try:
            proc = subprocess.Popen(list(cmd), env=child_env, stdout=sink,
                                    stderr=subprocess.STDOUT if sink else None)
        finally:
            if sink is not None:
                sink.close()  # the child holds its own descriptor
        started = time.time()
        cause = None
        try:
            while proc.poll() is None:
                time.sleep(poll_s)
                beat = read_heartbeat(heartbeat)
                step = beat["step"] if beat else -1
                if on_poll is not None:
                    on_poll(step)
                kill = next((f for f in pending if f.kind == "kill" and step >= f.step), None)
                if kill is not None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    pending.remove(kill)
                    cause = f"killed (SIGKILL) at step {step}"
                    break
                last = beat["t"] if beat else started
                if time.time() - last > (hang_timeout if beat else start_limit):
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    hung = next((f for f in pending if f.kind == "hang" and step + 1 >= f.step),
                                None)
                    if hung is not None:
                        pending.remove(hung)
                    cause = (f"hang detected after step {step} (no heartbeat for {hang_timeout} s)"
                             if beat else f"no first heartbeat within {start_limit} s of the "
                                          f"start")
                    break
        except BaseException:  # interrupted (a notebook cell stopped): leave no orphan behind
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise
        code = proc.returncode
        if cause is None and code == 0:
            note("end", exit_code=0)
            report = SupervisorReport(0, restarts, events)
            break
        if cause is None:  # the child raised and exited non-zero
            beat = read_heartbeat(heartbeat)
            step = beat["step"] if beat else -1
            raised = next((f for f in pending if f.kind == "raise" and step + 1 >= f.step),
                          None)
            if raised is not None:
                pending.remove(raised)
            cause = f"exited with code {code} after step {step}"
        note("failure", cause=cause)
        if restarts >= max_restarts:
            note("end", exit_code=code)
            report = SupervisorReport(code if code else 1, restarts, events)
            break
        restarts += 1
    if log is not None:
        atomic_write_json(Path(log), report.events)
    return report
