"""Full-state checkpoints: everything a bitwise-identical restart needs.

A checkpoint holds the model, the optimizer, the step, the data loader's state, any extra
state a stage keeps (spike detector, scaling history) and every random number generator:
Python's, NumPy's, torch's CPU generator and each CUDA device's. It is written atomically
(temp file, fsync, rename), so a crash mid-write leaves the previous checkpoint intact, and
loaded with ``torch.load(weights_only=True)``: no pickled code runs on load.

Asynchronous mode (the report's): the state is copied to host memory during the step, and
written by a background thread while training continues; ``stall_s`` records how long the
training loop waited, so sync and async can be compared.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mai_repro.files import atomic_write

CKPT_RE = re.compile(r"^step_(\d{8})\.pt$")


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


def atomic_torch_save(obj: Any, path: Path) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)


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
            atomic_torch_save(state, path)
            self._prune()
        else:
            host = _to_host(state)
            self._thread = threading.Thread(target=self._write, args=(host, path), daemon=True)
            self._thread.start()
        self.stall_s.append(time.perf_counter() - t0)
        return path

    def _write(self, state: dict[str, Any], path: Path) -> None:
        try:
            atomic_torch_save(state, path)
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

    def latest(self) -> Path | None:
        """The newest checkpoint that loads; a torn or corrupt file is skipped, not trusted."""
        for p in reversed(self.checkpoints()):
            try:
                load(p)
                return p
            except Exception:  # noqa: BLE001 - any unreadable file is simply not a checkpoint
                continue
        return None

    def _prune(self) -> None:
        for p in self.checkpoints()[: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
