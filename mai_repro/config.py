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
from mai_repro.rl.config import DistillConfig, GRPOStageConfig
from mai_repro.schema import (  # noqa: F401 (resolve_device re-exported)
    ConfigError,
    build,
    merge,
    resolve_device,
    spec,
    stable_hash,
    to_dict,
)
from mai_repro.train.config import LadderConfig, MixSearchConfig, PretrainConfig

PRESETS = ("smoke", "laptop", "gpu", "cluster")


@dataclass(frozen=True)
class OverviewConfig:
    """Assumptions of the MAI-scale arithmetic in notebook 00 (the report states neither)."""

    gpu_peak_tflops: float = spec(2500.0, min=1.0, help="dense BF16 peak of one GPU in TFLOP/s "
                                                        "(GB200: about 2,500)")
    mfu: float = spec(0.40, min=0.01, max=1.0, help="model-FLOPs utilisation assumed for the "
                                                    "GPU-days estimate")




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
    with open(path) as f:
        data = yaml.safe_load(f) or {}
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
