"""The typed run configuration and its presets.

One knob for scale: a preset (``smoke``, ``laptop``, ``gpu``, ``cluster``) is a YAML file in
``mai_repro/presets/`` that overrides the dataclass defaults below. ``load(preset, overrides)``
merges nested overrides on top, validates every key, type and range, and returns a frozen
:class:`Config`. Mistakes fail early with a :class:`ConfigError` naming the key path::

    >>> load("smoke", {"pretrain": {"stepz": 10}})
    Traceback (most recent call last):
    ...
    mai_repro.schema.ConfigError: pretrain.stepz: unknown key; allowed keys here: steps, ...

Overrides may also use dotted keys (``{"pretrain.steps": 10}``), as the pipeline's ``-p`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mai_repro.data.config import CurationConfig, MixtureConfig, TokenizerConfig, WikiConfig
from mai_repro.model.config import ModelConfig, ProbeConfig
from mai_repro.schema import ConfigError, build, merge, spec, stable_hash, to_dict
from mai_repro.train.config import LadderConfig, MixSearchConfig

PRESETS = ("smoke", "laptop", "gpu", "cluster")
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class OverviewConfig:
    """Assumptions of the MAI-scale arithmetic in notebook 00 (the report states neither)."""

    gpu_peak_tflops: float = spec(2500.0, min=1.0, help="dense BF16 peak of one GPU in TFLOP/s "
                                                        "(GB200: about 2,500)")
    mfu: float = spec(0.40, min=0.01, max=1.0, help="model-FLOPs utilisation assumed for the "
                                                    "GPU-days estimate")


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
    min_lr_ratio: float = spec(0.1, min=0.0, max=1.0, help="final lr of a stage as a share of "
                                                           "the peak (cosine)")
    weight_decay: float = spec(0.1, min=0.0, help="AdamW weight decay")
    grad_clip: float = spec(1.0, min=0.0, help="gradient-norm clip (0 = off)")
    code: float = spec(0.55, min=0.0, max=1.0, help="mix share of code (the report: 55%)")
    stem_math: float = spec(0.35, min=0.0, max=1.0, help="mix share of STEM and math (35%)")
    background: float = spec(0.10, min=0.0, max=1.0, help="mix share of general and "
                                                          "multilingual text (10%)")
    positions: Literal["base", "pi", "none"] = spec(
        "base", help="RoPE of the local layers per stage: base raised NTK-style, position "
                     "interpolation, or unchanged (the recipe kept as model.pt)")
    compare: list[str] = spec(factory=lambda: ["pi"], help="other position treatments "
                                                           "trained the same way, to compare")
    min_doc: int = spec(0, min=0, help="only documents at least this long start a training "
                                       "window (0 = the pre-training length)")
    eval_seqs: int = spec(16, min=1, help="held-out windows for the loss by position")
    probe_depths: list[float] = spec(factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9],
                                     help="where the key is planted, as a share of the length")
    probe_trials: int = spec(8, min=1, help="passkey sequences per length and depth")
    key_len: int = spec(4, min=1, help="random tokens in the planted key")
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
        if self.code + self.stem_math + self.background <= 0:
            return [("code", "the mix shares must not all be zero")]
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


@dataclass(frozen=True)
class GRPOStageConfig:
    """The RL climb with GRPO and MAI's stabilisers (notebook 09; RECIPE.md section 6)."""

    kinds: list[Literal["arithmetic", "expression", "linear"]] = spec(
        factory=lambda: ["arithmetic"], help="task kinds of the training pool and the eval")
    difficulties: list[int] = spec(factory=lambda: [0], help="difficulties mixed in the "
                                                             "training pool")
    eval_difficulty: int = spec(0, min=0, help="difficulty of the held-out evaluation tasks")
    n_train: int = spec(200, min=1, help="training problems per difficulty")
    n_eval: int = spec(64, min=1, help="held-out evaluation problems")
    eval_samples: int = spec(4, min=1, help="samples per held-out problem")
    eval_every: int = spec(10, min=1, help="optimizer steps between held-out evaluations")
    steps: int = spec(100, min=1, help="optimizer steps of the main climb")
    problems: int = spec(8, min=1, help="problems per rollout batch (after the filters)")
    draw: int = spec(16, min=1, help="problems drawn per sampling round")
    max_rounds: int = spec(4, min=1, help="sampling rounds at most per rollout batch")
    group: int = spec(8, min=2, help="G: rollouts per kept problem")
    group_early: int = spec(4, min=1, help="G_early: rollouts drawn before the early exit")
    early_lo: float = spec(0.05, min=0.0, max=1.0, help="early exit: keep if pass rate >= this")
    early_hi: float = spec(0.8, min=0.0, max=1.0, help="early exit: keep if pass rate <= this")
    keep_lo: float = spec(0.1, min=0.0, max=1.0, help="pass-rate filter: lower bound")
    keep_hi: float = spec(0.8, min=0.0, max=1.0, help="pass-rate filter: upper bound")
    max_new_tokens: int = spec(4, min=1, help="rollout length cap of the first curriculum "
                                              "stage (doubled each stage)")
    curriculum_stages: int = spec(2, min=1, help="length-curriculum stages (steps split evenly)")
    temperature: float = spec(1.0, min=0.01, help="sampling temperature (rollouts and eval)")
    top_p: float = spec(0.97, min=0.0, max=1.0, help="nucleus sampling threshold")
    lr: float = spec(1e-4, min=0.0, max=1.0, help="AdamW learning rate (constant)")
    grad_clip: float = spec(1.0, min=0.0, help="gradient-norm clip (0 = off); the norm "
                                               "recorded is before clipping")
    micro_batch: int = spec(0, min=0, help="rows per forward pass; the rest by gradient "
                                           "accumulation (0 = one pass)")
    updates_per_batch: int = spec(2, min=1, help="gradient steps on each rollout batch")
    sync_every: int = spec(1, min=1, help="optimizer steps between inference-weight updates")
    max_staleness: int = spec(8, min=0, help="rollouts sampled more than this many weight "
                                             "updates ago are dropped")
    rollout_dtype: Literal["float32", "bfloat16"] = spec(
        "float32", help="inference-side weights and compute (the learner is float32)")
    eps: float = spec(0.2, min=0.0, max=0.99, help="clip: [1 - eps, (1 - eps)^-1 + k]")
    r_min: float = spec(0.5, min=0.0, help="outer ratio clip, lower")
    r_max: float = spec(2.0, min=1.0, help="outer ratio clip, upper")
    entropy_target: float = spec(0.5, min=0.0, help="H*: target token entropy (nats)")
    entropy_delta: float = spec(0.02, min=0.0, help="k step per optimizer step")
    k_max: float = spec(0.5, min=0.0, help="largest widening of the upper clip bound")
    w_lang: float = spec(0.1, min=0.0, help="weight of the language reward")
    w_len: float = spec(0.25, min=0.0, help="weight of the length penalty (dropped in the "
                                            "last curriculum stage)")
    balance_coef: float = spec(1e-5, min=0.0, help="MoE load-balancing loss weight during RL")
    threads: int = spec(0, min=0, help="torch CPU threads during the climb (0 = unchanged; 1 "
                                       "is fastest for small models on shared cores)")
    ablations: list[Literal["outer_clip", "entropy_control", "top_p_mask", "routing_replay"]] \
        = spec(factory=lambda: ["outer_clip", "entropy_control", "top_p_mask",
                                "routing_replay"],
               help="stabilisers switched off one at a time, same seeds")
    ablation_steps: int = spec(30, min=1, help="optimizer steps of each ablation run")
    checkpoint_every: int = spec(0, min=0, help="optimizer steps between climb checkpoints "
                                                "kept for self-distillation (0 = final only)")
    min_gain: float = spec(0.2, min=-1.0, max=1.0, help="held-out accuracy gain over the "
                                                        "starting checkpoint the notebook "
                                                        "asserts")
    min_reward_gain: float = spec(0.0, min=-2.0, max=2.0,
                                  help="rise of the mean task reward of all rollouts drawn "
                                       "(last third of the steps minus the first third) the "
                                       "notebook asserts")

    @property
    def final_cap(self) -> int:
        """The length cap of the last curriculum stage (held-out evaluation samples with it)."""
        return self.max_new_tokens * 2 ** (self.curriculum_stages - 1)

    def check(self) -> list[tuple[str, str]]:
        if self.group_early > self.group:
            return [("group_early", f"must be <= group={self.group}, got {self.group_early}")]
        if self.early_lo > self.early_hi or self.keep_lo > self.keep_hi:
            return [("keep_lo", "each pass-rate window needs lo <= hi")]
        if not self.difficulties or any(d < 0 for d in self.difficulties):
            return [("difficulties", f"needs at least one difficulty >= 0, got "
                                     f"{self.difficulties}")]
        if not self.kinds:
            return [("kinds", "needs at least one task kind")]
        if self.r_min >= 1.0 - self.eps:
            return [("r_min", f"must be below the inner bound 1 - eps = {1 - self.eps}, got "
                              f"{self.r_min}")]
        return []


@dataclass(frozen=True)
class DistillConfig:
    """Self-distillation from RL checkpoints and specialist consolidation (notebook 10;
    RECIPE.md section 6)."""

    checkpoints: int = spec(3, min=1, help="climb checkpoints the multi-checkpoint student's "
                                           "traces come from (evenly spaced, the last is final)")
    trace_samples: int = spec(4, min=1, help="samples per training problem when collecting "
                                             "traces (temperature 1, top-p of the climb)")
    traces: int = spec(128, min=1, help="verified traces per student: the same budget for "
                                        "multi-checkpoint and final-only")
    sft_steps: int = spec(60, min=1, help="SFT optimizer steps of each student")
    sft_batch: int = spec(32, min=1, help="traces per SFT step")
    sft_lr: float = spec(3e-4, min=0.0, max=1.0, help="SFT learning rate (constant)")
    dropout: float = spec(0.15, min=0.0, max=0.9, help="dropout during the SFT (report: 0.15)")
    balance_coef: float = spec(1e-2, min=0.0, help="MoE load-balancing weight during the SFT "
                                                    "(report: 1e-2)")
    rl_steps: int = spec(40, min=0, help="GRPO steps of the short climb from each student")
    rl_lr: float = spec(0.0, min=0.0, max=1.0, help="learning rate of the students' climbs, "
                                                    "the specialists and joint RL (0 = grpo.lr)")
    specialists: list[Literal["arithmetic", "expression", "linear"]] = spec(
        factory=lambda: ["arithmetic", "linear"], help="one RL specialist per task kind")
    specialist_steps: int = spec(60, min=1, help="GRPO steps of each specialist; joint RL gets "
                                                 "their sum")
    sample_weights: list[float] = spec(factory=list, help="share of the consolidation traces "
                                                          "from each specialist ([] = equal)")
    token_weights: list[float] = spec(factory=list, help="share of the consolidation SFT loss "
                                                         "from each specialist ([] = as sampled)")
    min_gain: float = spec(0.0, min=-1.0, max=1.0, help="accuracy the multi-checkpoint student's "
                                                        "climb must gain over the pre-RL model "
                                                        "(asserted in the notebook)")

    def check(self) -> list[tuple[str, str]]:
        n = len(self.specialists)
        if n < 2 or len(set(self.specialists)) != n:
            return [("specialists", f"needs two or more distinct task kinds, got "
                                    f"{self.specialists}")]
        for key in ("sample_weights", "token_weights"):
            w = getattr(self, key)
            if w and (len(w) != n or any(x < 0 for x in w) or sum(w) <= 0):
                return [(key, f"needs {n} non-negative weights (one per specialist) with a "
                              f"positive sum, or [] ; got {w}")]
        return []


@dataclass(frozen=True)
class Config:
    """Everything a stage needs to know. Sections group the settings of one stage or part."""

    preset: str = spec("laptop", help="name of the preset this config was built from")
    seed: int = spec(0, min=0, help="seed of every random number generator")
    device: str = spec("auto", help="auto, cpu, cuda, cuda:N or mps")
    auto_rebuild: bool = spec(True, help="rebuild missing or stale upstream stages on require() "
                                         "(small presets); else stop and name the notebook")
    overview: OverviewConfig = spec(factory=OverviewConfig)
    curation: CurationConfig = spec(factory=CurationConfig)
    wiki: WikiConfig = spec(factory=WikiConfig)
    tokenizer: TokenizerConfig = spec(factory=TokenizerConfig)
    mixture: MixtureConfig = spec(factory=MixtureConfig)
    model: ModelConfig = spec(factory=ModelConfig)
    probe: ProbeConfig = spec(factory=ProbeConfig)
    pretrain: PretrainConfig = spec(factory=PretrainConfig)
    midtrain: MidtrainConfig = spec(factory=MidtrainConfig)
    ladder: LadderConfig = spec(factory=LadderConfig)
    mixsearch: MixSearchConfig = spec(factory=MixSearchConfig)
    collapse: CollapseConfig = spec(factory=CollapseConfig)
    grpo: GRPOStageConfig = spec(factory=GRPOStageConfig)
    distill: DistillConfig = spec(factory=DistillConfig)

    def check(self) -> list[tuple[str, str]]:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            return [("device", f"got {self.device!r}, allowed: auto, cpu, cuda, cuda:N, mps")]
        if not PRESET_NAME.fullmatch(self.preset):  # it names runs/<preset>/: never a path
            return [("preset", f"got {self.preset!r}, a preset is a name (letters, digits, "
                               f"'_', '-', '.'), not a path")]
        return []


def preset_path(preset: str) -> Path:
    """The YAML file of a preset given by name, or a path to a YAML file of one's own."""
    if preset in PRESETS:
        return Path(str(resources.files("mai_repro") / "presets" / f"{preset}.yaml"))
    path = Path(preset)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise ConfigError("preset", f"got {preset!r}, allowed: {', '.join(PRESETS)} "
                                f"or the path of a YAML file")


def read_preset_yaml(path: Path) -> Any:
    """A preset file's YAML; a syntax error is a one-line ConfigError naming file and line."""
    with open(path) as f:
        try:
            return yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ConfigError("preset", f"{path.name}:{where}: YAML syntax error: "
                                        f"{what}") from None


def expand_dotted(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "a": {"c": 2}}`` -> ``{"a": {"b": 1, "c": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            value = expand_dotted(value)
        head, *rest = str(key).split(".")
        for part in reversed(rest):
            value = {part: value}
        if isinstance(value, Mapping) and isinstance(out.get(head), Mapping):
            out[head] = merge(out[head], value)
        else:
            out[head] = value
    return out


def load(preset: str = "laptop", overrides: Mapping[str, Any] | None = None, *,
         seed: int | None = None, device: str | None = None) -> Config:
    """The validated config of ``preset`` with nested (or dotted) ``overrides`` merged on top.

    ``seed`` and ``device`` (when not None) override the preset's, as papermill passes them.
    """
    path = preset_path(preset)
    data = read_preset_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError("preset", f"{path.name} must hold a mapping of settings")
    data.setdefault("preset", path.stem)
    data = merge(data, expand_dotted(overrides or {}))
    if seed is not None:
        data["seed"] = seed
    if device is not None:
        data["device"] = device
    return build(Config, data)


def config_hash(cfg: Config, sections: tuple[str, ...] | None = None) -> str:
    """A stable hash of the whole config, or of the named keys plus the seed.

    ``sections`` names top-level sections (``"mixture"``) or single keys (``"model.vocab_size"``),
    so a stage is invalidated by exactly the settings that shape its result.
    """
    d = to_dict(cfg)
    if sections is not None:
        picked = {}
        for key in ("seed", *sections):
            value: Any = d
            for part in key.split("."):
                if not isinstance(value, Mapping) or part not in value:
                    raise KeyError(f"config has no key {key!r}")
                value = value[part]
            picked[key] = value
        d = picked
    return stable_hash(d)


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present, else CPU; any other value is returned as it is."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


__all__ = ["Config", "ConfigError", "ModelConfig", "OverviewConfig", "PretrainConfig",
           "PRESETS", "load", "config_hash", "expand_dotted", "preset_path", "resolve_device",
           "to_dict"]


def main(argv: list[str] | None = None) -> int:
    """``python -m mai_repro.config [PRESET]``: every key, its type, value and meaning."""
    import argparse

    from mai_repro.schema import describe

    parser = argparse.ArgumentParser(prog="python -m mai_repro.config")
    parser.add_argument("preset", nargs="?", default="laptop")
    args = parser.parse_args(argv)
    try:
        flat = _flatten(to_dict(load(args.preset)))
    except ConfigError as e:
        parser.error(str(e))
    for key, type_name, _, help_text in describe(Config):
        print(f"{key:28} {flat[key]!s:>12}  {type_name}{'  - ' + help_text if help_text else ''}")
    return 0


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, Mapping) else {key: v})
    return out


if __name__ == "__main__":
    raise SystemExit(main())
