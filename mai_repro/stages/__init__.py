"""One module per notebook: ``mai_repro/stages/<stage>.py`` holds ``build(run)``, the stage's
figures and its typed metrics (``METRICS``, a dataclass written into the stage's manifest).

:func:`read_metrics` reads a stage's metrics back from its manifest as that dataclass, strictly
(:func:`mai_repro.schema.load_result`): a renamed or missing metric raises there, naming the
stage and the key, instead of being silently absent downstream.
"""

from __future__ import annotations

import importlib
from typing import Any

from mai_repro.artifacts import STAGES, Run
from mai_repro.schema import load_result


def metrics_class(stage: str) -> type | None:
    """The stage module's ``METRICS`` dataclass, or None for a stage without one yet."""
    return getattr(importlib.import_module(STAGES[stage].module), "METRICS", None)


def load_metrics(stage: str, data: dict[str, Any]) -> Any:
    """``data`` (a manifest's ``metrics``) as the stage's typed object; the plain dict for a
    stage without a ``METRICS`` class. Raises :class:`mai_repro.schema.ResultError`."""
    cls = metrics_class(stage)
    return data if cls is None else load_result(cls, data)


def read_metrics(run: Run, stage: str) -> Any:
    """A stage's typed metrics from its manifest, or None when the stage has no manifest."""
    manifest = run.read_manifest(stage)
    if manifest is None:
        return None
    return load_metrics(stage, manifest.get("metrics") or {})
