from pathlib import Path

import pytest

from mai_repro import config
from mai_repro.config import ConfigError, config_hash, expand_dotted, load
from mai_repro.schema import merge


@pytest.mark.parametrize("preset", config.PRESETS)
def test_every_preset_loads(preset):
    cfg = load(preset)
    assert cfg.preset == preset


def test_presets_differ_in_scale():
    assert load("smoke").model.d_model < load("laptop").model.d_model < load("gpu").model.d_model
    assert load("smoke").auto_rebuild and not load("gpu").auto_rebuild


def test_nested_and_dotted_overrides_merge():
    cfg = load("smoke", {"pretrain": {"steps": 7}, "model.n_layers": 3, "seed": 5})
    assert cfg.pretrain.steps == 7
    assert cfg.model.n_layers == 3
    assert cfg.seed == 5
    # untouched values keep the preset's
    assert cfg.pretrain.batch_size == load("smoke").pretrain.batch_size
    assert cfg.model.d_model == load("smoke").model.d_model


def test_expand_dotted_and_merge():
    assert expand_dotted({"a.b": 1, "a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    assert merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 9}}) == {"a": {"b": 9, "c": 2},
                                                                       "d": 3}


def test_seed_and_device_arguments_override():
    cfg = load("smoke", seed=11, device="cpu")
    assert (cfg.seed, cfg.device) == (11, "cpu")


def test_float_field_accepts_int():
    assert load("smoke", {"pretrain.lr": 1}).pretrain.lr == 1.0


@pytest.mark.parametrize("overrides, key, words", [
    ({"pretrain": {"stepz": 10}}, "pretrain.stepz", "unknown key"),
    ({"pretrainn": {}}, "pretrainn", "unknown key"),
    ({"pretrain.steps": "ten"}, "pretrain.steps", "expected an int"),
    ({"pretrain.steps": 2.5}, "pretrain.steps", "expected an int"),
    ({"pretrain.steps": True}, "pretrain.steps", "expected an int"),
    ({"model.tie_embeddings": 1}, "model.tie_embeddings", "expected a bool"),
    ({"pretrain.lr": "fast"}, "pretrain.lr", "expected a number"),
    ({"model.ffn_layout": "sometimes"}, "model.ffn_layout", "'interleaved'"),
    ({"pretrain.steps": 0}, "pretrain.steps", "allowed range [1, inf]"),
    ({"overview.mfu": 1.5}, "overview.mfu", "allowed range [0.01, 1.0]"),
    ({"model.top_k": 99}, "model.top_k", "n_experts"),
    ({"model.n_kv_heads": 3}, "model.n_kv_heads", "must divide n_heads"),
    ({"model.d_latent": "big"}, "model.d_latent", "int or null"),
    ({"device": "gpu"}, "device", "cuda:N"),
    ({"pretrain": 3}, "pretrain", "expected a mapping"),
])
def test_validation_errors_name_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        load("smoke", overrides)
    assert err.value.key == key
    assert words in str(err.value)


def test_unknown_key_error_lists_allowed_keys():
    with pytest.raises(ConfigError, match="allowed keys here: steps, batch_size"):
        load("smoke", {"pretrain.stepz": 10})


def test_unknown_preset():
    with pytest.raises(ConfigError, match="allowed: smoke, laptop, gpu, cluster"):
        load("huge")


def test_preset_from_a_yaml_file(tmp_path: Path):
    p = tmp_path / "mine.yaml"
    p.write_text("pretrain:\n  steps: 3\n")
    cfg = load(str(p))
    assert cfg.preset == "mine" and cfg.pretrain.steps == 3
    p.write_text("pretrain:\n  steps: -3\n")
    with pytest.raises(ConfigError, match="pretrain.steps"):
        load(str(p))


def test_config_hash_is_stable_and_sensitive():
    a = load("smoke", {"pretrain.steps": 7, "model.n_layers": 3})
    b = load("smoke", {"model.n_layers": 3, "pretrain": {"steps": 7}})
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16
    assert config_hash(a) != config_hash(load("smoke", {"pretrain.steps": 8}))
    # a section hash ignores other sections but not the seed
    assert config_hash(a, ("model",)) == config_hash(load("smoke", {"model.n_layers": 3}),
                                                     ("model",))
    assert config_hash(a, ("model",)) != config_hash(
        load("smoke", {"model.n_layers": 3, "seed": 1}), ("model",))


def test_config_is_frozen():
    cfg = load("smoke")
    with pytest.raises(AttributeError):
        cfg.seed = 3  # type: ignore[misc]


def test_config_hash_of_single_keys():
    a = load("smoke")
    keys = ("mixture", "model.vocab_size")
    assert config_hash(a, keys) == config_hash(load("smoke", {"model.n_layers": 5}), keys)
    assert config_hash(a, keys) != config_hash(load("smoke", {"model.vocab_size": 999}), keys)
    with pytest.raises(KeyError, match="model.nope"):
        config_hash(a, ("model.nope",))


def _leaves(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict) and v:
            yield from _leaves(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def preset_problems(preset: str) -> list[str]:
    """What is wrong with a preset file: it does not load strictly, or one of its keys is not
    a config field holding the file's value. Empty when every key maps to a field."""
    import yaml

    with open(config.preset_path(preset)) as f:
        raw = yaml.safe_load(f)
    try:
        loaded = config.to_dict(config.load(preset))
    except ConfigError as e:
        return [f"does not load: {e}"]
    problems = []
    for key, value in _leaves(raw):
        node = loaded
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                problems.append(f"{key} is not a config field")
                break
            node = node[part]
        else:
            if not (node == value or (isinstance(value, int) and node == float(value))):
                problems.append(f"{key}: the file says {value!r}, the config holds {node!r}")
    return problems


@pytest.mark.parametrize("preset", config.PRESETS)
def test_every_preset_key_maps_to_a_field_with_that_value(preset):
    assert preset_problems(preset) == []


@pytest.mark.parametrize("text, words", [
    ("pretrain:\n  steps: 3\n  stepz: 4\n", "pretrain.stepz: unknown key"),
    ("optim:\n  grad_klip: 0.5\n", "optim.grad_klip: unknown key"),
    ("midtrain:\n  grad_clip: 0.5\n", "midtrain.grad_clip: moved to optim.grad_clip"),
    ("grpo:\n  lr: 1.0e-4\n  grad_clip: 2.0\n", "grpo.grad_clip: moved to optim.grad_clip"),
])
def test_the_preset_check_fails_on_a_planted_bad_preset(tmp_path: Path, text, words):
    """The check above can fail: a preset with an unknown or moved key is caught, by name."""
    p = tmp_path / "planted.yaml"
    p.write_text(text)
    problems = preset_problems(str(p))
    assert len(problems) == 1 and words in problems[0]


@pytest.mark.parametrize("preset", config.PRESETS)
def test_the_config_command_lists_every_key(preset, capsys):
    assert config.main([preset]) == 0
    out = capsys.readouterr().out
    assert "curation.cutoffs" in out and "pretrain.steps" in out


# --------------------------------------------------------------------------------------------
# Issue 20: NaN and infinities, presets as names, YAML syntax errors.

@pytest.mark.parametrize("override, key", [
    ({"pretrain.lr": float("nan")}, "pretrain.lr"),
    ({"optim.weight_decay": float("inf")}, "optim.weight_decay"),
    ({"pretrain.hang_timeout": float("inf")}, "pretrain.hang_timeout"),
    ({"overview.mfu": float("-inf")}, "overview.mfu"),
])
def test_nan_and_inf_are_refused_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"^{key}: got (nan|inf|-inf), expected a finite"):
        load("smoke", override)


def test_every_float_field_refuses_nan():
    """Every float field of every section, lists and mappings of floats included."""
    from mai_repro.schema import describe

    floats = [key for key, tp, _, _ in describe(config.Config) if "float" in tp]
    assert len(floats) > 30
    for key in floats:
        tp = next(t for k, t, _, _ in describe(config.Config) if k == key)
        bad = float("nan")
        value = [bad] if tp.startswith("a list") else {"x": bad} if tp == "a mapping" else bad
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load("smoke", {key: value})


def test_a_field_may_allow_nonfinite():
    from dataclasses import dataclass

    from mai_repro.schema import build, spec

    @dataclass(frozen=True)
    class S:
        limit: float = spec(1.0, nonfinite=True)
        other: float = spec(1.0)

    assert build(S, {"limit": float("inf")}).limit == float("inf")
    with pytest.raises(ConfigError, match="other"):
        build(S, {"other": float("inf")})


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", ""])
def test_preset_is_a_name_not_a_path(name):
    with pytest.raises(ConfigError, match=r"^preset: .*a preset is a name"):
        load("smoke", {"preset": name})


def test_yaml_syntax_error_is_one_line(tmp_path: Path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("pretrain:\n  steps: 3\n   lr: [1\n")
    with pytest.raises(ConfigError) as e:
        load(str(bad))
    msg = str(e.value)
    assert msg.startswith("preset: mine.yaml: line") and "YAML syntax error" in msg
    assert "\n" not in msg
