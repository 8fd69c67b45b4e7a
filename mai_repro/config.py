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

Where a section lives: this module only composes. Each section is defined in the ``config``
module of the package whose code reads it (``model/config.py``: the model, the architecture
probe, the MAI-scale arithmetic of notebook 00; ``data/config.py``: curation, Wikipedia,
tokenizer, mixture; ``train/config.py``: pre-training, mid-training, ladder, mixture search,
collapse and ``optim``, the optimiser every trainer shares; ``rl/config.py``: GRPO,
self-distillation, the agentic environment), so a component never imports this module (see
``mai_repro.layers``). Every key of every preset maps to one of their fields
(``tests/test_config.py``). The rule: a field lives in the section of the stage that owns it; a
field every trainer shares lives in ``optim``. A key that moved between sections (:data:`MOVED`)
is refused with its new name, so an old override fails loudly instead of being ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mai_repro.data.config import CurationConfig, MixtureConfig, TokenizerConfig, WikiConfig
from mai_repro.model.config import ModelConfig, OverviewConfig, ProbeConfig
from mai_repro.rl.config import AgenticConfig, DistillConfig, GRPOStageConfig
from mai_repro.rl.tasks import OPERATIONS
from mai_repro.schema import (  # noqa: F401 (resolve_device re-exported)
    ConfigError,
    build,
    merge,
    resolve_device,
    spec,
    stable_hash,
    to_dict,
)
from mai_repro.train.config import (
    CollapseConfig,
    LadderConfig,
    MidtrainConfig,
    MixSearchConfig,
    OptimConfig,
    PretrainConfig,
)

PRESETS = ("smoke", "laptop", "gpu", "cluster")
PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")

# Keys that moved to another section: old key path -> new key path. Each stage's optimiser
# settings were once repeated per section; every trainer now reads the one ``optim`` section.
MOVED: dict[str, str] = {
    **{f"{section}.{key}": f"optim.{key}"
       for section in ("pretrain", "midtrain")
       for key in ("weight_decay", "grad_clip", "min_lr_ratio")},
    "grpo.grad_clip": "optim.grad_clip",
}


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
    optim: OptimConfig = spec(factory=OptimConfig)
    probe: ProbeConfig = spec(factory=ProbeConfig)
    pretrain: PretrainConfig = spec(factory=PretrainConfig)
    midtrain: MidtrainConfig = spec(factory=MidtrainConfig)
    ladder: LadderConfig = spec(factory=LadderConfig)
    mixsearch: MixSearchConfig = spec(factory=MixSearchConfig)
    collapse: CollapseConfig = spec(factory=CollapseConfig)
    grpo: GRPOStageConfig = spec(factory=GRPOStageConfig)
    distill: DistillConfig = spec(factory=DistillConfig)
    agentic: AgenticConfig = spec(factory=AgenticConfig)

    def check(self) -> list[tuple[str, str]]:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            return [("device", f"got {self.device!r}, allowed: auto, cpu, cuda, cuda:N, mps")]
        if not PRESET_NAME.fullmatch(self.preset):  # it names runs/<preset>/: never a path
            return [("preset", f"got {self.preset!r}, a preset is a name (letters, digits, "
                               f"'_', '-', '.'), not a path")]
        if self.grpo.compare_base and self.midtrain.bootstrap_steps == 0:
            return [("grpo.compare_base", "climbs from the model before the reasoning "
                                          "bootstrap: needs midtrain.bootstrap_steps > 0")]
        if any(k in OPERATIONS for k in self.distill.specialists) \
                and self.grpo.kinds != ["addsub"]:
            return [("distill.specialists", f"add and sub split grpo's addsub problems: "
                                            f"needs grpo.kinds [addsub], got {self.grpo.kinds}")]
        return []


def preset_path(preset: str) -> Path:
    """The YAML file of a preset given by name, or a path to a YAML file of one's own."""
    shipped = Path(str(resources.files("mai_repro") / "presets" / f"{preset}.yaml"))
    if preset in PRESETS or (PRESET_NAME.fullmatch(preset) and shipped.is_file()):
        return shipped  # the four presets, and variants shipped beside them (laptop-worked)
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


def read_preset(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A preset file's settings; ``extends: NAME`` (a preset name or YAML path) merges them on
    top of that preset's, so a variant lists only what it changes."""
    data = read_preset_yaml(path)
    if not isinstance(data, Mapping):
        raise ConfigError("preset", f"{path.name} must hold a mapping of settings")
    data = dict(data)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError("extends", f"{path.name}: extends names one preset, got {base!r}")
    base_path = preset_path(base)
    if base_path.resolve() in _seen or base_path.resolve() == path.resolve():
        raise ConfigError("extends", f"{path.name}: presets extend each other in a cycle")
    return merge(read_preset(base_path, (*_seen, path.resolve())), data)


def refuse_moved(data: Mapping[str, Any]) -> None:
    """Raise a ConfigError naming the new key when ``data`` sets a key listed in :data:`MOVED`
    (e.g. ``pretrain.grad_clip: moved to optim.grad_clip``)."""
    for old, new in MOVED.items():
        section, key = old.split(".")
        value = data.get(section)
        if isinstance(value, Mapping) and key in value:
            raise ConfigError(old, f"moved to {new} (shared by every training loop; see "
                                   f"docs/architecture.md)")


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
    data = read_preset(path)
    data.setdefault("preset", path.stem)
    data = merge(data, expand_dotted(overrides or {}))
    refuse_moved(data)
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


__all__ = ["Config", "ConfigError", "MOVED", "ModelConfig", "OptimConfig", "OverviewConfig",
           "PretrainConfig", "PRESETS", "load", "config_hash", "expand_dotted", "preset_path", "resolve_device",
           "to_dict"]


def main(argv: list[str] | None = None) -> int:
    """``python -m mai_repro.config [PRESET]``: every key, its type, value and meaning."""
    import argparse

    from mai_repro.schema import describe

    parser = argparse.ArgumentParser(prog="python -m mai_repro.config")
    parser.add_argument("preset", nargs="?", default="laptop")
    args = parser.parse_args(argv)
    try:
        values = to_dict(load(args.preset))
    except ConfigError as e:
        parser.error(str(e))
    for key, type_name, _, help_text in describe(Config):
        value: Any = values
        for part in key.split("."):  # a field may itself hold a mapping (curation.cutoffs)
            value = value[part]
        print(f"{key:28} {value!s:>12}  {type_name}{'  - ' + help_text if help_text else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
