"""Full-state checkpoints: everything a bitwise-identical restart needs.

A checkpoint holds the model, the optimizer, the step, the data loader's state, any extra
state a stage keeps (spike detector, scaling history) and every random number generator:
Python's, NumPy's, torch's CPU generator and each CUDA device's. It is written atomically
(temp file, fsync, rename), so a crash mid-write leaves the previous checkpoint intact, and
loaded with ``torch.load(weights_only=True)``: no pickled code runs on load.

Integrity: ``torch.load`` reads a checkpoint with flipped bytes in a tensor without complaint
(it does not check the zip CRCs), so each ``step_N.pt`` has a sidecar ``step_N.pt.sha256``
(``sha256sum`` format) holding the sha256 of the bytes written, put in place before the
checkpoint's own rename. On resume, :meth:`CheckpointManager.latest` verifies it and skips a
bad checkpoint with a message naming it and the step it falls back to; a checkpoint without a
sidecar (written by an older version) is checked against its zip CRCs instead.

Asynchronous mode (the report's): the state is copied to host memory during the step, and
written by a background thread while training continues; ``stall_s`` records how long the
training loop waited, so sync and async can be compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import re
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_repro.files import atomic_write, file_hash

CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")
SIDECAR = ".sha256"  # step_N.pt -> step_N.pt.sha256


# --------------------------------------------------------------------------------------------
# Random number generators as plain data (weights_only-loadable).

def rng_state() -> dict[str, Any]:
    """Every RNG's state as tensors, ints and lists."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_plain(random.getstate()),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].copy()),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(x: Any) -> Any:
    return [_to_plain(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


# --------------------------------------------------------------------------------------------
# Writing and reading.

def _to_host(obj: Any) -> Any:
    """A deep copy with every tensor detached and on the CPU (safe to write in the background)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return obj


class _HashingWriter:
    """A write-only file that passes bytes through and keeps their sha256 (what torch.save
    needs of a buffer is ``write`` and ``flush``), so hashing costs no second read."""

    def __init__(self, f: Any):
        self.f, self.sha = f, hashlib.sha256()

    def write(self, b: bytes) -> int:
        self.sha.update(b)
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


def atomic_torch_save(obj: Any, path: Path,
                      before_rename: Callable[[str], None] | None = None) -> str:
    """``torch.save`` to ``path`` atomically; returns the sha256 of the bytes written.
    ``before_rename(sha256)`` runs once the bytes are written, before ``path`` appears."""
    digest: list[str] = []

    def write(f: Any) -> None:
        w = _HashingWriter(f)
        torch.save(obj, w)
        digest.append(w.sha.hexdigest())
        if before_rename is not None:
            before_rename(digest[0])

    atomic_write(path, write, binary=True)
    return digest[0]


def sidecar(path: Path) -> Path:
    """The integrity sidecar of a checkpoint file."""
    return path.with_name(path.name + SIDECAR)


def save_checkpoint_file(state: dict[str, Any], path: Path) -> None:
    """Write a checkpoint and its sha256 sidecar; the sidecar lands before the checkpoint's
    rename, so no checkpoint is ever visible without the record it is verified against."""
    path = Path(path)
    atomic_torch_save(state, path, before_rename=lambda sha: atomic_write(
        sidecar(path), lambda f: f.write(f"{sha}  {path.name}\n")))


def verify(path: Path) -> str | None:
    """Why the checkpoint file ``path`` is not intact, or None when it is.

    With a sidecar: the file's sha256 must match it. Without one (an older checkpoint): every
    zip record's CRC must match (``zipfile.testzip``), which also catches a truncated file.
    """
    path = Path(path)
    side = sidecar(path)
    if side.is_file():
        try:
            expected = side.read_text().split()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            return f"its sidecar {side.name} is unreadable"
        found = file_hash(path)
        if found != expected:
            return (f"sha256 mismatch (file {found[:12]}..., recorded in {side.name} "
                    f"{expected[:12]}...): the file was corrupted or truncated after writing")
        return None
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"not a readable checkpoint archive ({type(e).__name__}: {e}) and no sidecar"
    if bad is not None:
        return f"CRC mismatch in record {bad!r} (no sha256 sidecar)"
    return None


def save_model_file(cfg: Any, state_dict: dict[str, Any], path: Path) -> None:
    """A stage's model (``<stage>/model.pt``): its config as a plain dict and its weights,
    written atomically; :func:`load_model_file` reads it back with ``weights_only``."""
    atomic_torch_save({"config": dataclasses.asdict(cfg), "model": state_dict}, path)


def load_model_file(path: Path | str, device: str = "cpu") -> torch.nn.Module:
    """The model a stage saved with :func:`save_model_file`, in eval mode on ``device``."""
    from mai_repro.model.config import ModelConfig
    from mai_repro.model.transformer import Transformer

    state = torch.load(path, map_location=device, weights_only=True)
    model = Transformer(ModelConfig(**state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def checkpoint_state(model: torch.nn.Module | None, optimizer: torch.optim.Optimizer | None,
                     step: int, loader_state: dict | None = None,
                     extra: dict | None = None, *, model_state: dict | None = None,
                     optim_state: dict | None = None) -> dict[str, Any]:
    """The full training state. ``model_state``/``optim_state`` stand in for the modules'
    own state dicts where those are sharded (FSDP2 gathers them first)."""
    if model_state is None:
        model_state = model.state_dict()
    if optim_state is None and optimizer is not None:
        optim_state = optimizer.state_dict()
    return {
        "step": step,
        "model": model_state,
        "optimizer": optim_state,
        "loader": loader_state,
        "extra": extra or {},
        "rng": rng_state(),
    }


def load(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint's state, loaded without unpickling code."""
    return torch.load(path, map_location=map_location, weights_only=True)


def restore(state: dict[str, Any], model: torch.nn.Module,
            optimizer: torch.optim.Optimizer | None = None, rng: bool = True) -> int:
    """Put model, optimizer and RNGs back; returns the step to continue from."""
    model.load_state_dict(state["model"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if rng:
        set_rng_state(state["rng"])
    return int(state["step"])


@dataclass
class CheckpointManager:
    """Saves ``step_<8-digit step>.pt`` files in ``directory``, keeps the last ``keep``.

    ``mode="async"`` copies the state to host memory in the caller's thread (the stall) and
    writes it in a background thread; ``wait()`` joins the pending write.
    """

    directory: Path
    keep: int = 3
    mode: str = "sync"
    stall_s: list[float] = field(default_factory=list)
    why_none: str | None = None  # set by latest(): why there is nothing to resume from
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {self.mode!r}")
        if self.keep < 1:
            raise ValueError(f"keep must be >= 1, got {self.keep}")
        self.directory = Path(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}.pt"

    def save(self, state: dict[str, Any]) -> Path:
        t0 = time.perf_counter()
        self.wait()  # one write in flight at a time
        path = self.path(int(state["step"]))
        if self.mode == "sync":
            save_checkpoint_file(state, path)
            self._prune()
        else:
            host = _to_host(state)
            self._thread = threading.Thread(target=self._write, args=(host, path), daemon=True)
            self._thread.start()
        self.stall_s.append(time.perf_counter() - t0)
        return path

    def _write(self, state: dict[str, Any], path: Path) -> None:
        try:
            save_checkpoint_file(state, path)
            self._prune()
        except BaseException as e:  # surfaced by wait() in the training thread
            self._error = e

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError("background checkpoint write failed") from err

    def checkpoints(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if CKPT_RE.match(p.name))

    def latest(self, report: Callable[[str], None] | None = None) -> Path | None:
        """The newest intact checkpoint; a torn, truncated or corrupted one is skipped, never
        trusted. Each skip is reported (to stderr by default) naming the file, why, and the
        step it falls back to; when none is usable, :attr:`why_none` says why."""
        report = report or _to_stderr
        candidates = list(reversed(self.checkpoints()))
        skipped: list[str] = []
        for i, p in enumerate(candidates):
            why = self._unusable(p)
            if why is None:
                if skipped:
                    report(f"checkpoint: falling back to step {_step(p)} ({p.name})")
                self.why_none = None
                return p
            nxt = next(iter(candidates[i + 1:]), None)
            then = f"trying step {_step(nxt)} ({nxt.name})" if nxt else "none left"
            report(f"checkpoint: skipping {p} : {why}; {then}")
            skipped.append(f"{p.name}: {why}")
        self.why_none = (f"no checkpoint in {self.directory}" if not skipped else
                         f"all {len(skipped)} checkpoint(s) in {self.directory} are unusable "
                         f"({'; '.join(skipped)})")
        return None

    def _unusable(self, p: Path) -> str | None:
        """Why checkpoint ``p`` cannot be resumed from, or None."""
        why = verify(p)
        if why is not None:
            return why
        try:
            step = int(load(p)["step"])
        except Exception as e:  # noqa: BLE001 - any unreadable file is not a checkpoint
            return f"does not load ({type(e).__name__}: {e})"
        if step != _step(p):
            return f"holds step {step}, not the step in its name"
        return None

    def _prune(self) -> None:
        for p in self.checkpoints()[: -self.keep]:
            for q in (p, sidecar(p)):
                with contextlib.suppress(FileNotFoundError):
                    q.unlink()


def _step(p: Path) -> int:
    return int(CKPT_RE.match(p.name).group(1))  # type: ignore[union-attr]


def _to_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
