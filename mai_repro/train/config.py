"""Config sections of training: the optimiser every trainer shares (``optim``), pre-training
(notebook 07), mid-training (08), the scaling ladder (05), the mixture search (06) and the
collapse generations (11).

The rule for where a field lives: a field lives in the section of the stage that owns it
(learning rates, step counts and warm-ups differ by stage by design); a field every trainer
shares lives in ``optim`` (AdamW's settings, the gradient clip, the final learning rate of a
decaying schedule).

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
class OptimConfig:
    """AdamW and the gradient clip of every loop that trains (``optim``): pre-training,
    mid-training, the ladder and mixture search, the collapse generations, the architecture
    probe, the GRPO learner and self-distillation's SFT. Read by
    :func:`mai_repro.train.loop.make_optimizer` and passed to
    :func:`mai_repro.train.step.train_step` as its clip."""

    weight_decay: float = spec(0.1, min=0.0, help="AdamW weight decay of the matrices (norms "
                                                  "and other 1-D parameters get none) when "
                                                  "training a language model: pre-, mid-"
                                                  "training, ladder, mixtures, collapse, probe")
    rl_weight_decay: float = spec(0.0, min=0.0, help="AdamW weight decay of post-training from "
                                                     "a trained checkpoint: the GRPO learner "
                                                     "and self-distillation's SFT")
    beta1: float = spec(0.9, min=0.0, max=0.9999, help="AdamW first-moment decay")
    beta2: float = spec(0.95, min=0.0, max=0.9999, help="AdamW second-moment decay")
    eps: float = spec(1e-8, min=0.0, max=1.0, help="AdamW epsilon (added to the root of the "
                                                   "second moment)")
    grad_clip: float = spec(1.0, min=0.0, help="gradient-norm clip of every training step "
                                               "(0 = off); the norm recorded is before "
                                               "clipping")
    min_lr_ratio: float = spec(0.1, min=0.0, max=1.0, help="final learning rate of a decaying "
                                                           "schedule (cosine, wsd) as a share "
                                                           "of its peak")
    impl: Literal["auto", "for_loop", "foreach", "fused"] = spec(
        "auto", help="AdamW implementation: auto = torch's default (foreach on CUDA, a loop "
                     "over tensors on CPU), or one forced (fused: one kernel, CUDA and CPU)")


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
    allocation_ratios: list[float] = spec(
        factory=lambda: [0.25, 4.0],
        help="multiples of tokens_per_param at which the baseline is also trained at every "
             "rung, for the fit L(N, D) that says how large a model a compute budget affords "
             "(notebook 07's shape); [] = no allocation fit")

    def check(self) -> list[tuple[str, str]]:
        errors = super().check()
        if any(m <= 0 or m == 1 for m in self.allocation_ratios):
            errors.append(("allocation_ratios", f"multiples must be positive and not 1 (the "
                                                f"ladder itself), got {self.allocation_ratios}"))
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
    schedule: Literal["cosine", "wsd"] = spec("cosine", help="after warm-up: cosine decay, or "
                                                             "warmup-stable-decay")
    decay_frac: float = spec(0.2, min=0.0, max=1.0, help="wsd: share of steps spent decaying")
    micro_batch: int = spec(0, min=0, help="sequences per forward pass per process; the rest "
                                           "by gradient accumulation (0 = no accumulation)")
    compile: bool = spec(False, help="torch.compile the model (GPU presets)")
    eval_every: int = spec(50, min=1, help="steps between per-family held-out evaluations")
    eval_seqs: int = spec(16, min=1, help="held-out sequences per family in each evaluation")
    induction_seqs: int = spec(16, min=0, help="repeated random sequences of the induction "
                                               "score at each evaluation (0 = off)")
    repeat_share: float = spec(0.0, min=0.0, max=1.0, help="share of training rows in which a "
                               "random span of repeat_min-128 tokens of the row's own text is "
                               "repeated right after itself (rewards copying; "
                               "data.loader.repeat_spans)")
    repeat_min: int = spec(16, min=1, help="shortest repeated span (tokens; the longest is 128 "
                                           "or half the row)")
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
    spike_rel_floor: float = spec(0.02, min=0.0, help="floor of the spike statistics' "
                                                      "deviation, as a share of the mean loss")
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


@dataclass(frozen=True)
class MidtrainConfig:
    """Mid-training with context extension (notebook 08): stages of growing context."""

    contexts: list[int] = spec(factory=lambda: [1024, 4096],
                               help="context length of each stage (the report: 4x per stage)")
    steps: list[int] = spec(factory=lambda: [40, 30], help="optimizer steps of each stage")
    tokens_per_step: int = spec(4096, min=8, help="tokens per optimizer step: the batch of a "
                                                  "stage is this // its context (at least 1)")
    lr: float = spec(1e-3, min=0.0, max=1.0, help="peak learning rate of each stage")
    warmup_steps: int = spec(5, min=0, help="linear warm-up steps at the start of each stage")
    code: float = spec(0.55, min=0.0, max=1.0, help="mix share of code (the report: 55%)")
    stem_math: float = spec(0.35, min=0.0, max=1.0, help="mix share of STEM and math (35%)")
    background: float = spec(0.10, min=0.0, max=1.0, help="mix share of general and "
                                                          "multilingual text (10%)")
    procedural: float = spec(
        0.5, min=0.0, max=1.0,
        help="share of the STEM/math part given to procedurally generated worked arithmetic "
             "and algebra (mai_repro.rl.worked; never in pre-training); 0 = none")
    procedural_difficulties: list[int] = spec(
        factory=lambda: [0, 1, 2, 3, 4],
        help="difficulties of the worked solutions (the RL tasks' scale: below to above theirs)")
    # the kinds of rl.tasks.Kind (train sits below rl in the layers: tests/test_layers.py)
    procedural_kinds: list[Literal["arithmetic", "expression", "linear", "addsub"]] = spec(
        factory=lambda: ["arithmetic", "expression", "linear"],
        help="task kinds of the worked solutions (addsub: additions and subtractions only, "
             "the two-digit RL task of issue 22)")
    bootstrap_steps: int = spec(
        0, min=0,
        help="steps of the reasoning bootstrap after the last stage: the mid-trained model "
             "fine-tuned on worked solutions alone (procedural_kinds, procedural_difficulties; "
             "none an RL held-out problem), tokens_per_step a step; 0 = none")
    bootstrap_lr: float = spec(1e-3, min=0.0, max=1.0, help="peak learning rate of the "
                                                          "bootstrap (20 warm-up steps, cosine "
                                                          "to a tenth)")
    bootstrap_context: int = spec(256, min=8, help="window length of the bootstrap's packed "
                                                   "worked solutions")
    bootstrap_texts: int = spec(16_000, min=1, help="worked solutions generated for the "
                                                    "bootstrap at most (windows are taken "
                                                    "again in turn when its steps need more)")
    bootstrap_control: bool = spec(
        False,
        help="also train the model before the bootstrap for the bootstrap's steps, context, "
             "tokens and rate on the corpus's STEM and math text (human-written) instead of "
             "worked solutions: notebook 09's base without the procedural family at the same "
             "compute (model_control.pt)")
    positions: Literal["base", "pi", "none"] = spec(
        "base", help="RoPE of the local layers per stage: base raised NTK-style, position "
                     "interpolation, or unchanged (the recipe kept as model.pt)")
    compare: list[str] = spec(factory=lambda: ["pi"], help="other position treatments "
                                                           "trained the same way, to compare")
    repeat_share: float = spec(
        0.0, min=0.0, max=1.0,
        help="share of training windows in which passages of the window's own text are "
             "repeated far apart (one per 256 tokens, copied anywhere later in the window: "
             "data.loader.distant_repeats); teaches retrieval across the longer context")
    min_doc: int = spec(0, min=0, help="only documents at least this long start a training "
                                       "window (0 = the pre-training length)")
    eval_seqs: int = spec(16, min=1, help="held-out windows for the loss by position")
    probe_depths: list[float] = spec(factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9],
                                     help="where the key is planted, as a share of the length")
    probe_trials: int = spec(8, min=1, help="passkey sequences per length and depth")
    key_len: int = spec(4, min=1, help="random tokens in the planted key")
    min_context_gain: float = spec(
        0.0, min=-1.0, max=1.0,
        help="how much more the context past the pre-training length must be worth after "
             "mid-training than before (nats/token) for notebook 08's assert; smoke runs a few "
             "steps, where the two differ by noise")
    min_gain: float = spec(0.0, min=-1.0, max=1.0,
                           help="retrieval-accuracy gain at the final context over the "
                                "pre-trained model that notebook 08 asserts")

    def check(self) -> list[tuple[str, str]]:
        if len(self.steps) != len(self.contexts) or not self.contexts:
            return [("steps", f"needs one entry per context ({len(self.contexts)}), got "
                              f"{len(self.steps)}")]
        if any(c < 8 for c in self.contexts) or list(self.contexts) != sorted(self.contexts):
            return [("contexts", f"must grow stage by stage, each >= 8, got {self.contexts}")]
        if any(s < 1 for s in self.steps):
            return [("steps", f"every stage needs at least one step, got {self.steps}")]
        bad = [c for c in self.compare if c not in ("base", "pi", "none")]
        if bad or self.positions in self.compare:
            return [("compare", f"allowed: base, pi, none, other than positions="
                                f"{self.positions!r}; got {self.compare}")]
        if any(not 0.0 <= d <= 1.0 for d in self.probe_depths):
            return [("probe_depths", f"each must be in [0, 1], got {self.probe_depths}")]
        if not self.procedural_difficulties or min(self.procedural_difficulties) < 0:
            return [("procedural_difficulties", f"needs at least one difficulty >= 0, got "
                                                f"{self.procedural_difficulties}")]
        if not self.procedural_kinds:
            return [("procedural_kinds", "needs at least one task kind")]
        if self.code + self.stem_math + self.background <= 0:
            return [("code", "the mix shares must not all be zero")]
        if self.bootstrap_control and self.bootstrap_steps == 0:
            return [("bootstrap_control", "the control matches the reasoning bootstrap's "
                                          "compute: needs bootstrap_steps > 0")]
        return []


@dataclass(frozen=True)
class CollapseConfig:
    """Recursive training on a model's own samples (notebook 11)."""

    generations: int = spec(4, min=1, help="generations trained on samples, after generation 0")
    n_seqs: int = spec(256, min=8, help="sequences in the real dataset and in each generation's "
                                        "sample")
    seq_len: int = spec(128, min=8, help="tokens per sequence (at most the shards' length)")
    steps: int = spec(100, min=1, help="optimizer steps per generation (from scratch)")
    batch_size: int = spec(16, min=1, help="sequences per step")
    lr: float = spec(3e-3, min=0.0, max=1.0, help="peak learning rate")
    eval_seqs: int = spec(128, min=4, help="held-out human sequences for perplexity")
    temperature: float = spec(1.0, min=0.0, help="sampling temperature (1 = the model's own "
                                                 "distribution)")
    real_fraction: float = spec(0.1, min=0.0, max=1.0, help="share of real data kept by the "
                                                            "keep_real regime")
    rare_below: float = spec(1e-4, min=0.0, max=1.0, help="a token is rare when its frequency "
                                                          "in the human corpus is below this")
    d_model: int = spec(0, min=0, help="model width for these runs (0 = the preset model's); "
                                       "FFN, expert and latent widths follow it")
    n_layers: int = spec(0, min=0, help="layers for these runs (0 = the preset model's)")
    detector_seqs: int = spec(64, min=1, help="samples per generation scored by notebook 01's "
                                              "AI-content detector")
