"""Config sections of training: pre-training (notebook 07), the scaling ladder (05) and the
mixture search (06).

Both train many small models through the same loop (``mai_repro.train.loop``) on the
``tokenizer`` stage's shards. A *rung* is one model size: ``widths[i]`` x ``depths[i]``, the
other widths scaled from ``model`` in proportion (see ``mai_repro.stages.ladder.rung_model``),
trained on ``tokens_per_param`` tokens per non-embedding active parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from mai_repro.data.config import FAMILIES
from mai_repro.schema import spec

ABLATIONS = ("standard_init", "standard_moe", "all_moe", "all_global")


def report_objective() -> dict[str, float]:
    """The MAI-Thinking-1 report's mixture objective: weights of the held-out NLL per family."""
    return {"code": 0.5, "stem": 0.175, "math": 0.175, "general": 0.1, "multilingual": 0.05}


@dataclass(frozen=True)
class SweepConfig:
    """What every run of a sweep shares: rung shapes, tokens, optimizer, evaluation."""

    widths: list[int] = spec(factory=lambda: [32, 48, 64, 96],
                             help="d_model of each rung, smallest first")
    depths: list[int] = spec(factory=lambda: [3, 3, 3, 3], help="n_layers of each rung")
    head_dim: int = spec(16, min=2, help="per-head width of the rung models (heads = width / "
                                         "head_dim)")
    tokens_per_param: float = spec(20.0, min=0.01, help="training tokens per non-embedding "
                                                        "active parameter (fixed along the "
                                                        "ladder)")
    batch_size: int = spec(8, min=1, help="sequences per step")
    seq_len: int = spec(128, min=8, help="tokens per sequence (at most the shards' length)")
    lr: float = spec(3e-3, min=0.0, max=1.0, help="peak learning rate")
    warmup_frac: float = spec(0.1, min=0.0, max=0.5, help="share of steps spent warming up")
    eval_seqs: int = spec(16, min=1, help="held-out sequences per family for the objective")
    workers: int = spec(2, min=1, help="parallel training processes (capped at the CPU count)")

    def check(self) -> list[tuple[str, str]]:
        if len(self.widths) != len(self.depths):
            return [("depths", f"needs one depth per width ({len(self.widths)}), got "
                               f"{len(self.depths)}")]
        if any(w % self.head_dim for w in self.widths):
            return [("widths", f"every width must be a multiple of head_dim={self.head_dim}, "
                               f"got {self.widths}")]
        if any(w < 1 for w in self.widths) or any(d < 1 for d in self.depths):
            return [("widths", "widths and depths must be positive")]
        if list(self.widths) != sorted(self.widths):
            return [("widths", f"list rungs smallest first, got {self.widths}")]
        return []


@dataclass(frozen=True)
class LadderConfig(SweepConfig):
    """Notebook 05: the baseline ladder and one-change ablations scored by Efficiency Gain."""

    ablations: list[Literal["standard_init", "standard_moe", "all_moe", "all_global"]] = spec(
        factory=lambda: list(ABLATIONS),
        help="one-change candidates run at every rung: standard_init (random attention output "
             "init), standard_moe (no latent projection, expert width matched for active "
             "compute), all_moe (MoE in every layer), all_global (no local attention)")

    def check(self) -> list[tuple[str, str]]:
        errors = super().check()
        if not errors and not 3 <= len(self.widths) <= 5:
            errors.append(("widths", f"a ladder has 3 to 5 rungs, got {len(self.widths)}"))
        return errors


@dataclass(frozen=True)
class MixSearchConfig(SweepConfig):
    """Notebook 06: N mixtures, each trained at every scale (``widths`` x ``depths``)."""

    widths: list[int] = spec(factory=lambda: [32, 64], help="d_model of each scale")
    depths: list[int] = spec(factory=lambda: [3, 3], help="n_layers of each scale")
    n_mixtures: int = spec(20, min=3, help="mixtures searched (the first ones are anchors: the "
                                           "report's shares, code-heavy, STEM-heavy, uniform)")
    concentration: float = spec(1.0, min=0.01, help="Dirichlet concentration of the random "
                                                    "mixtures")
    min_weight: float = spec(0.01, min=0.0, max=0.2, help="floor of every family's weight")
    objective: dict[str, float] = spec(factory=report_objective,
                                       help="weight of each family's held-out NLL")
    n_boot: int = spec(1000, min=10, help="bootstrap resamples of the rank statistics")
    ridge: float = spec(1e-2, min=0.0, help="ridge penalty of the RegMix-style regression")

    def check(self) -> list[tuple[str, str]]:
        errors = super().check()
        if not errors and len(self.widths) < 2:
            errors.append(("widths", "a mixture search needs 2 or more scales"))
        unknown = sorted(set(self.objective) - set(FAMILIES))
        if unknown:
            errors.append(("objective", f"unknown families {unknown}; allowed: "
                                        f"{', '.join(FAMILIES)}"))
        elif sum(self.objective.values()) <= 0 or min(self.objective.values()) < 0:
            errors.append(("objective", "weights must be >= 0 and not all zero"))
        return errors


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training loop settings (notebook 07; steps, batch and length also shape 03's plan)."""

    steps: int = spec(200, min=1, help="optimizer steps")
    batch_size: int = spec(16, min=1, help="sequences per optimizer step")
    seq_len: int = spec(256, min=8, help="tokens per sequence")
    lr: float = spec(3e-3, min=0.0, max=1.0, help="peak learning rate")
    warmup_steps: int = spec(20, min=0, help="linear warm-up steps")
    weight_decay: float = spec(0.1, min=0.0, help="AdamW weight decay")
    grad_clip: float = spec(1.0, min=0.0, help="gradient-norm clip (0 = off)")
    schedule: Literal["cosine", "wsd"] = spec("cosine", help="after warm-up: cosine decay, or "
                                                             "warmup-stable-decay")
    min_lr_ratio: float = spec(0.1, min=0.0, max=1.0, help="final lr as a share of the peak")
    decay_frac: float = spec(0.2, min=0.0, max=1.0, help="wsd: share of steps spent decaying")
    micro_batch: int = spec(0, min=0, help="sequences per forward pass per process; the rest "
                                           "by gradient accumulation (0 = no accumulation)")
    compile: bool = spec(False, help="torch.compile the model (GPU presets)")
    eval_every: int = spec(50, min=1, help="steps between per-family held-out evaluations")
    eval_seqs: int = spec(16, min=1, help="held-out sequences per family in each evaluation")
    ckpt_every: int = spec(50, min=1, help="steps between checkpoints")
    ckpt_keep: int = spec(3, min=1, help="checkpoints kept on disk (the newest)")
    ckpt_mode: Literal["sync", "async"] = spec("async", help="async: copy to host, write in "
                                                             "a background thread")
    faults: str = spec("", help="failures injected by the supervisor, e.g. "
                                "'kill@120,raise@180,hang@240' (empty = none)")
    hang_timeout: float = spec(30.0, min=1.0, help="seconds without a heartbeat that count "
                                                   "as a hang")
    bad_batches: str = spec("", help="data batches (by index in the stream; = step until a "
                                     "roll-back) replaced by random tokens: planted spikes, "
                                     "e.g. '100,200-202'")
    spike_z: float = spec(6.0, min=0.0, help="loss z-score over the window that is a spike")
    spike_window: int = spec(50, min=2, help="accepted steps the spike statistics cover")
    spike_max_skips: int = spec(3, min=1, help="spikes in a row that trigger a roll-back")
    spike_grad_norm: bool = spec(False, help="also treat a gradient-norm z-score above "
                                             "spike_z as a spike (noisier early in training)")
    parallel: Literal["ddp", "fsdp"] = spec("ddp", help="data parallelism under torchrun: DDP "
                                                        "or FSDP2 (fully_shard)")
    peak_tflops: float = spec(0.0, min=0.0, help="peak TFLOP/s of one device for MFU (0 = "
                                                 "known GPU's BF16 peak, or a measured CPU "
                                                 "matmul peak)")

    def check(self) -> list[tuple[str, str]]:
        errors = []
        for item in filter(None, (x.strip() for x in self.faults.split(","))):
            if not re.fullmatch(r"(kill|raise|hang)@\d+", item):
                errors.append(("faults", f"got {item!r}, expected kind@step with kind one of "
                                         f"kill, raise, hang"))
        try:
            parse_steps(self.bad_batches)
        except ValueError as e:
            errors.append(("bad_batches", str(e)))
        return errors


def parse_steps(text: str) -> list[int]:
    """``"100,200-202"`` -> ``[100, 200, 201, 202]``."""
    out: list[int] = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m or (m[2] and int(m[2]) < int(m[1])):
            raise ValueError(f"got {item!r}, expected a step or a range like 200-202")
        out.extend(range(int(m[1]), int(m[2] or m[1]) + 1))
    return sorted(set(out))
