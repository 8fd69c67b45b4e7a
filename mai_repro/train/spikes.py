"""Loss-spike handling without intervention.

A spike is a loss (or gradient norm) more than ``z_threshold`` standard deviations above the
mean of the last ``window`` accepted steps. The deviation is floored at ``rel_floor`` times the
mean: over a flat stretch of training the measured deviation can be tiny, and an ordinary
batch a few percent harder than the last ones would otherwise count as a spike. The first response is to skip that update; when
``max_skips`` spikes come in a row, the loop should roll back to the last checkpoint and skip
the batches that caused them. The detector's state is a small dict saved in checkpoints.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["ok", "skip", "rollback"]


@dataclass
class SpikeDetector:
    window: int = 50
    z_threshold: float = 6.0
    max_skips: int = 3
    min_history: int = 10
    rel_floor: float = 0.02
    history: deque = field(default_factory=deque)
    grad_history: deque = field(default_factory=deque)
    consecutive: int = 0
    n_skipped: int = 0
    n_rollbacks: int = 0

    def _z(self, value: float, hist: deque) -> float:
        if len(hist) < self.min_history:
            return 0.0
        mean = sum(hist) / len(hist)
        var = sum((v - mean) ** 2 for v in hist) / len(hist)
        return (value - mean) / max(math.sqrt(var), self.rel_floor * abs(mean),
                                    1e-8 * max(abs(mean), 1.0))

    def check(self, loss: float, grad_norm: float | None = None) -> Action:
        """Classify this step before its update is applied."""
        bad = not math.isfinite(loss) or self._z(loss, self.history) > self.z_threshold
        if grad_norm is not None:
            bad = bad or not math.isfinite(grad_norm) or \
                self._z(grad_norm, self.grad_history) > self.z_threshold
        if not bad:
            self.consecutive = 0
            self._push(self.history, loss)
            if grad_norm is not None:
                self._push(self.grad_history, grad_norm)
            return "ok"
        self.consecutive += 1
        if self.consecutive >= self.max_skips:
            self.consecutive = 0
            self.n_rollbacks += 1
            return "rollback"
        self.n_skipped += 1
        return "skip"

    def _push(self, hist: deque, value: float) -> None:
        hist.append(value)
        while len(hist) > self.window:
            hist.popleft()

    def state_dict(self) -> dict:
        return {"history": list(self.history), "grad_history": list(self.grad_history),
                "consecutive": self.consecutive, "n_skipped": self.n_skipped,
                "n_rollbacks": self.n_rollbacks}

    def load_state_dict(self, state: dict) -> None:
        self.history = deque(state["history"])
        self.grad_history = deque(state["grad_history"])
        self.consecutive = state["consecutive"]
        self.n_skipped = state["n_skipped"]
        self.n_rollbacks = state["n_rollbacks"]
