"""Run directories, stage manifests and ``require()``.

Every stage writes under one run directory (``runs/<preset>/`` by default), into a folder of
its own, and writes ``manifest.json`` last, atomically (temp file, fsync, rename): a stage is
complete exactly when its manifest exists. The manifest holds the stage's config hash, the
hashes of its inputs, package versions, the git SHA, seed, metrics and wall time.

``require(run, "stage")`` returns a complete, up-to-date stage. When the stage is missing, or
was built from another config, small presets (``auto_rebuild: true``) rebuild it through the
function registered in :data:`STAGES`; large presets stop with an error naming the notebook.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import platform
import subprocess
import time
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
        Stage("architecture", "04_architecture.ipynb", ("model", "probe"),
              report_section="2 Architecture: periodic attention, LatentMoE, zero-init"),
        Stage("ladder", "05_ladder.ipynb", ("model", "ladder"), upstream=("tokenizer",),
              report_section="3 Scaling ladder and Efficiency Gain"),
        Stage("mixtures", "06_mixtures.ipynb", ("model", "mixsearch"), upstream=("tokenizer",),
              report_section="1 Mixture search, rank non-invariance"),
        Stage("pretraining", "07_pretraining.ipynb", ("model", "pretrain"),
              upstream=("tokenizer",),
              report_section="5 Infrastructure: checkpoints, restarts, goodput"),
        Stage("midtraining", "08_midtraining.ipynb", ("midtrain",), upstream=("pretraining",),
              report_section="4 Mid-training with context extension"),
        Stage("grpo", "09_grpo.ipynb", ("model", "grpo"), upstream=("midtraining",),
              report_section="6 The RL climb (GRPO) and its stabilisers"),
        Stage("self_distillation", "10_self_distillation.ipynb", ("distill",),
              upstream=("grpo",), report_section="6 Self-distillation, specialists"),
        Stage("collapse", "11_collapse.ipynb", ("model", "collapse"), upstream=("tokenizer",),
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




def stage_hash(cfg: Config, name: str) -> str:
    """The hash a stage's manifest must carry to be current: its sections, seed and upstream."""
    stage = STAGES[name]
    upstream = {u: stage_hash(cfg, u) for u in stage.upstream}
    return hashlib.sha256(
        json.dumps([config_hash(cfg, stage.sections), upstream], sort_keys=True).encode()
    ).hexdigest()[:16]








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

    def add_input(self, label: str, path: Path | str) -> None:
        """Record an input file or folder by its content hash."""
        self.inputs[label] = file_hash(Path(path))

    def path(self, *parts: str) -> Path:
        p = self.dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


class Run:
    """One run directory: ``runs/<preset>/`` unless told otherwise."""

    def __init__(self, cfg: Config, run_dir: str | Path | None = None):
        self.cfg = cfg
        self.dir = Path(run_dir) if run_dir else project_root() / "runs" / cfg.preset
        self.dir.mkdir(parents=True, exist_ok=True)

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
        """``complete``, ``missing`` or ``stale`` (built from another config)."""
        manifest = self.read_manifest(name)
        if manifest is None:
            return "missing"
        return "complete" if manifest.get("config_hash") == stage_hash(self.cfg, name) else "stale"

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageWriter]:
        """Run a stage's body; on success write its manifest last, atomically.

        The previous manifest (if any) is moved aside first, so a run that fails halfway
        leaves the stage visibly incomplete instead of pairing old metrics with new files.
        """
        if name not in STAGES:
            raise KeyError(f"unknown stage {name!r}; registered: {', '.join(STAGES)}")
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
            why = "was built from another config" if status == "stale" else "has not been run"
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

