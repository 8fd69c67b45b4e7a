"""Run directories, stage manifests and ``require()``.

Every stage writes under one run directory (``runs/<preset>/`` by default), into a folder of
its own, and writes ``manifest.json`` last, atomically (temp file, fsync, rename): a stage is
complete exactly when its manifest exists. The manifest holds the stage's config hash, the
hashes of its inputs, package versions, the git SHA, seed, metrics and wall time.

``require(run, "stage")`` returns a complete, up-to-date stage. When the stage is missing, or
was built from another config, small presets (``auto_rebuild: true``) rebuild it through the
function registered in :data:`STAGES`; large presets stop with an error naming the notebook.

One writer per run directory: :class:`RunDirLock` (``fcntl.flock`` on ``<run_dir>/run.lock``,
which holds the holder's PID) is taken by the pipeline for its whole run and by every stage
while it builds. A second pipeline or stage on the same run directory fails at once, naming
the holder's PID; a lock left by a dead process is free (the kernel drops a dead process's
flock) and is taken over. The holder's token travels to its child processes (notebook
kernels, the pre-training child, sweep workers) in ``MAI_REPRO_RUN_LOCKS``, so they re-enter
the lock their parent holds instead of deadlocking on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from mai_repro.config import Config, config_hash, resolve_device
from mai_repro.files import (  # noqa: F401 (re-exported)
    atomic_write,
    atomic_write_json,
    file_hash,
    project_root,
)


@dataclass(frozen=True)
class Stage:
    """A registered stage: its notebook, the function that builds it, what its result depends on."""

    name: str  # also its module, mai_repro/stages/<name>.py, and its notebook NN_<name>.ipynb
    notebook: str  # file name under notebooks/
    sections: tuple[str, ...]  # config sections whose values shape the result
    upstream: tuple[str, ...] = ()
    report_section: str = ""  # what of the MAI-Thinking-1 report (RECIPE.md) it reproduces

    @property
    def module(self) -> str:
        return f"mai_repro.stages.{self.name}"

    @property
    def builder(self) -> str:
        """``module:function``, called as ``function(run)``."""
        return f"{self.module}:build"


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("overview", "00_overview.ipynb", ("overview",),
              report_section="the whole report"),
        Stage("curation", "01_curation.ipynb", ("curation",),
              report_section="1 Data: sources, AI-content removal, filters, dedup"),
        Stage("wikipedia", "02_wikipedia.ipynb", ("wiki",),
              report_section="1 Data: Wikipedia as raw markup"),
        Stage("tokenizer", "03_tokenizer.ipynb",
              ("tokenizer", "mixture", "model.vocab_size", "pretrain.seq_len", "pretrain.steps",
               "pretrain.batch_size"), upstream=("curation",),
              report_section="1 Data: composition and epochs"),
        Stage("architecture", "04_architecture.ipynb", ("model", "probe", "optim"),
              report_section="2 Architecture: periodic attention, LatentMoE, zero-init"),
        Stage("ladder", "05_ladder.ipynb", ("model", "ladder", "optim"),
              upstream=("tokenizer",),
              report_section="3 Scaling ladder and Efficiency Gain"),
        Stage("mixtures", "06_mixtures.ipynb", ("model", "mixsearch", "optim"),
              upstream=("tokenizer",),
              report_section="1 Mixture search, rank non-invariance"),
        Stage("pretraining", "07_pretraining.ipynb", ("model", "pretrain", "optim"),
              upstream=("tokenizer",),
              report_section="5 Infrastructure: checkpoints, restarts, goodput"),
        # the RL held-out sets shape mid-training's procedural part (decontaminated against)
        Stage("midtraining", "08_midtraining.ipynb",
              ("midtrain", "optim", "grpo.kinds", "grpo.eval_difficulty", "grpo.n_eval",
               "distill.specialists"),
              upstream=("pretraining",),
              report_section="4 Mid-training with context extension"),
        Stage("grpo", "09_grpo.ipynb", ("model", "grpo", "optim"), upstream=("midtraining",),
              report_section="6 The RL climb (GRPO) and its stabilisers"),
        Stage("self_distillation", "10_self_distillation.ipynb", ("distill", "optim"),
              upstream=("grpo",), report_section="6 Self-distillation, specialists"),
        Stage("collapse", "11_collapse.ipynb", ("model", "collapse", "optim"),
              upstream=("tokenizer",),
              report_section="1 Why no synthetic data"),
        Stage("agentic", "12_agentic.ipynb", ("agentic",),
              report_section="6 Agentic RL environments: sandbox, anti reward hacking, gated "
                             "and lexicographic reward aggregation"),
        # reads every stage's manifest that exists and rebuilds none of them (no upstream)
        Stage("report", "13_report.ipynb", (), upstream=(),
              report_section="7 Evaluation: the report card"),
    ]
}


class StageError(RuntimeError):
    """A required stage is missing or stale and may not be rebuilt at this preset."""


class RunDirError(RuntimeError):
    """A run directory that cannot be used: a file, not writable, or held by another process."""


# --------------------------------------------------------------------------------------------
# The run-directory lock.

LOCK_FILE = "run.lock"
LOCK_ENV = "MAI_REPRO_RUN_LOCKS"  # tokens of the locks this process's ancestors hold


def check_run_dir(path: Path | str) -> Path:
    """Create ``path`` if needed and make sure files can be written in it; a one-line
    :class:`RunDirError` naming the cause otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run directory {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create run directory {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise RunDirError(f"run directory {path} is not writable")
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunDirLock:
    """An exclusive, non-blocking lock on a run directory (see the module docstring).

    ``acquire()`` raises :class:`RunDirError` at once when another process holds it. It is
    re-entrant for the process that holds it and for its children (the token is in their
    environment); only the acquisition that took the lock releases it.
    """

    def __init__(self, run_dir: Path | str, what: str = ""):
        self.path = Path(run_dir) / LOCK_FILE
        self.what = what or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:200]
        self.took_over_from: int | None = None  # the dead holder whose lock was taken over
        self._fd: int | None = None
        self._token: str | None = None

    def acquire(self) -> RunDirLock:
        check_run_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self.holder()
            if holder.get("token") in _held_tokens():
                return self  # our own process or an ancestor holds it: re-enter
            raise RunDirError(
                f"run directory {self.path.parent} is in use by PID {holder.get('pid', '?')} "
                f"({holder.get('what', 'unknown')}, since {holder.get('since', '?')}); wait "
                f"for it to finish or use another run directory") from None
        previous = self.holder(fd)
        if previous.get("pid") and not _pid_alive(int(previous["pid"])):
            self.took_over_from = int(previous["pid"])
            print(f"run directory {self.path.parent}: taking over the lock left by PID "
                  f"{previous['pid']}, which is no longer running", file=sys.stderr)
        self._fd, self._token = fd, uuid.uuid4().hex
        record = json.dumps({"pid": os.getpid(), "token": self._token, "what": self.what,
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, record + b"\n", 0)
        os.environ[LOCK_ENV] = os.pathsep.join([*_held_tokens(), self._token])
        return self

    def release(self) -> None:
        if self._fd is None:
            return  # re-entered, not taken: the outer holder releases
        os.environ[LOCK_ENV] = os.pathsep.join(t for t in _held_tokens() if t != self._token)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = self._token = None

    def holder(self, fd: int | None = None) -> dict[str, Any]:
        """The record the holder wrote (pid, token, what, since); retried briefly, since a
        holder writes it just after taking the lock."""
        for _ in range(50):
            try:
                raw = os.pread(fd, 4096, 0) if fd is not None else self.path.read_bytes()
                if raw.strip():
                    return json.loads(raw)
            except (OSError, ValueError):
                pass
            if fd is not None:
                return {}
            time.sleep(0.02)
        return {}

    def __enter__(self) -> RunDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _held_tokens() -> list[str]:
    return [t for t in os.environ.get(LOCK_ENV, "").split(os.pathsep) if t]



def stage_hash(cfg: Config, name: str) -> str:
    """The hash a stage's manifest must carry to be current: its sections, seed and upstream."""
    stage = STAGES[name]
    upstream = {u: stage_hash(cfg, u) for u in stage.upstream}
    return hashlib.sha256(
        json.dumps([config_hash(cfg, stage.sections), upstream], sort_keys=True).encode()
    ).hexdigest()[:16]








def _portable(path: Path) -> str:
    """A path relative to the checkout when it is inside it (manifests move with the run)."""
    path = path.resolve()
    try:
        return path.relative_to(project_root()).as_posix()
    except ValueError:
        return str(path)


def changed_inputs(manifest: dict[str, Any], run_dir: Path) -> list[str]:
    """Recorded inputs outside ``run_dir`` whose content no longer matches the manifest
    (inputs inside the run directory are upstream stages' outputs, checked through them)."""
    changed = []
    run_dir = Path(run_dir).resolve()
    for label, where in (manifest.get("input_paths") or {}).items():
        path = Path(where) if Path(where).is_absolute() else project_root() / where
        if path.resolve().is_relative_to(run_dir):
            continue
        if not path.exists():
            changed.append(f"{where} (missing)")
        elif file_hash(path) != manifest["inputs"].get(label):
            changed.append(where)
    return changed


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("mai_repro", "torch", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def git_sha(root: Path | None = None) -> str | None:
    """The checkout's commit (with ``-dirty`` when it has changes), or None outside git."""
    try:
        cwd = root or project_root()
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=cwd, capture_output=True, text=True, timeout=10).stdout
        return sha + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


@dataclass
class StageOutputs:
    """A complete stage: its folder and its manifest."""

    name: str
    dir: Path
    manifest: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest["metrics"]

    def path(self, *parts: str) -> Path:
        return self.dir.joinpath(*parts)


@dataclass
class StageWriter:
    """What a stage fills in while it runs; the manifest is written when the block ends."""

    name: str
    dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)
    input_paths: dict[str, str] = field(default_factory=dict)

    def add_input(self, label: str, path: Path | str) -> None:
        """Record an input file or folder by its content hash (and where it is: an input
        outside the run directory that changes later makes the stage stale)."""
        self.inputs[label] = file_hash(Path(path))
        self.input_paths[label] = _portable(Path(path))

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class Run:
    """One run directory: ``runs/<preset>/`` unless told otherwise."""

    def __init__(self, cfg: Config, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.dir = check_run_dir(Path(run_dir) if run_dir else
                                 project_root() / "runs" / cfg.preset)

    def stage_dir(self, name: str) -> Path:
        return self.dir / name

    def manifest_path(self, name: str) -> Path:
        return self.stage_dir(name) / "manifest.json"

    def read_manifest(self, name: str) -> dict[str, Any] | None:
        path = self.manifest_path(name)
        if not path.is_file():
            return None
        with open(path) as f:
            return json.load(f)

    def status(self, name: str) -> str:
        """``complete``, ``missing`` or ``stale`` (built from another config, or from input
        files that have changed since: see :meth:`stale_reason`)."""
        manifest = self.read_manifest(name)
        if manifest is None:
            return "missing"
        return "stale" if self.stale_reason(name, manifest) else "complete"

    def stale_reason(self, name: str, manifest: dict[str, Any] | None = None) -> str | None:
        """Why a built stage is out of date, or None: another config, or an input file outside
        the run directory (the raw data) that differs from the hash its manifest records,
        here or in an upstream stage."""
        manifest = manifest or self.read_manifest(name)
        if manifest is None:
            return None
        if manifest.get("config_hash") != stage_hash(self.cfg, name):
            return "was built from another config"
        changed = changed_inputs(manifest, self.dir)
        if changed:
            return f"was built from input files that have changed since: {', '.join(changed)}"
        for up in STAGES[name].upstream:
            why = self.stale_reason(up)
            if why and "changed since" in why:
                return f"depends on stage {up!r}, which {why}"
        return None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageWriter]:
        """Run a stage's body; on success write its manifest last, atomically.

        The previous manifest (if any) is moved aside first, so a run that fails halfway
        leaves the stage visibly incomplete instead of pairing old metrics with new files.
        The run directory is locked while the stage builds (:class:`RunDirLock`).
        """
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; registered: {', '.join(STAGES)}")
        with RunDirLock(self.dir, f"stage {name}, {Path(sys.argv[0]).name}"):
            writer = StageWriter(name, self.stage_dir(name))
            writer.dir.mkdir(parents=True, exist_ok=True)
            manifest = self.manifest_path(name)
            if manifest.exists():
                os.replace(manifest, manifest.with_name("manifest.previous.json"))
            start = time.time()
            yield writer
            atomic_write_json(manifest, {
                "stage": name,
                "preset": self.cfg.preset,
                "config_hash": stage_hash(self.cfg, name),
                "seed": self.cfg.seed,
                "inputs": writer.inputs,
            "input_paths": writer.input_paths,
                "upstream": {u: (self.read_manifest(u) or {}).get("config_hash")
                             for u in STAGES[name].upstream},
                "versions": package_versions(),
                "git_sha": git_sha(),
                "metrics": writer.metrics,
                "wall_time_s": round(time.time() - start, 3),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })

    def require(self, name: str) -> StageOutputs:
        return require(self, name)


def load_model(run: Run, stage: str, *path: str, device: str | None = None) -> Any:
    """The one model loader: a stage's model file (``model.pt``, or ``*path`` inside the stage
    folder, e.g. ``"students", "final_only.pt"``), the stage rebuilt at small presets when
    missing; on ``device`` (default: the run's)."""
    from mai_repro.train.checkpoint import load_model_file

    return load_model_file(require(run, stage).path(*(path or ("model.pt",))),
                           device or resolve_device(run.cfg.device))


def require(run: Run, name: str) -> StageOutputs:
    """A complete, current stage; rebuilt at small presets, else a StageError naming the notebook."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; registered: {', '.join(STAGES)}")
    stage = STAGES[name]
    status = run.status(name)
    if status != "complete":
        if not run.cfg.auto_rebuild:
            why = run.stale_reason(name) if status == "stale" else "has not been run"
            raise StageError(
                f"stage {name!r} {why} in {run.dir}. At preset {run.cfg.preset!r} upstream "
                f"stages are not rebuilt automatically: run notebooks/{stage.notebook} first, "
                f"e.g. python -m mai_repro.pipeline --preset {run.cfg.preset} "
                f"--only {stage.notebook[:2]}")
        module, func = stage.builder.split(":")
        getattr(importlib.import_module(module), func)(run)
        if run.status(name) != "complete":
            raise StageError(f"rebuilding stage {name!r} with {stage.builder} wrote no "
                             f"current manifest")
    return StageOutputs(name, run.stage_dir(name), run.read_manifest(name) or {})

