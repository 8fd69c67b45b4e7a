"""Typed, validated configuration sections built from plain dicts.

Every config section is a frozen dataclass. Fields carry their constraints in metadata
(``spec(default, min=..., max=..., help=...)``; NaN and infinities are refused in every number
of a field, lists and mappings included, unless it says ``nonfinite=True``); allowed string values are spelled as
``Literal[...]`` types. :func:`build` turns a nested dict into a dataclass tree and raises a
:class:`ConfigError` that names the full key path (``pretrain.steps``) and what is allowed.
A section may define ``check(self) -> list[tuple[str, str]]`` for rules that involve several
fields (e.g. heads divisible by KV heads); each pair is (field name, message).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import types
from collections.abc import Iterator, Mapping
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or out of range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


def spec(default: Any = dataclasses.MISSING, *, min: float | None = None,
         max: float | None = None, help: str = "", factory: Any = dataclasses.MISSING,
         nonfinite: bool = False) -> Any:
    """A dataclass field with validation metadata (inclusive bounds) and a help text;
    ``nonfinite=True`` lets its numbers be NaN or infinite (refused otherwise)."""
    meta = {"min": min, "max": max, "help": help, "nonfinite": nonfinite}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` and return it in canonical form."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        return build(tp, value, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(key, f"got {value!r}, allowed: {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for option in get_args(tp):
            try:
                return _coerce(value, option, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {value!r}")
        (item_tp, *rest) = get_args(tp)
        items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"expected a mapping, got {value!r}")
        _, val_tp = get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(key, f"expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected a bool (true/false), got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    if tp is Any:
        return value
    raise TypeError(f"{key}: unsupported config type {tp!r}")


def build(cls: type, data: Mapping[str, Any] | None = None, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; defaults fill what ``data`` leaves out."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown key; allowed keys here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        key = f"{path}.{name}" if path else name
        if name in data:
            value = _coerce(data[name], hints[name], key)
        elif dataclasses.is_dataclass(hints[name]) and f.default is dataclasses.MISSING \
                and f.default_factory is dataclasses.MISSING:
            value = build(hints[name], {}, key)
        else:
            continue
        bad = None if f.metadata.get("nonfinite") else _nonfinite(value)
        if bad is not None:  # NaN slips through every range check (all comparisons are False)
            raise ConfigError(key, f"got {bad!r}, expected a finite number")
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                rng = f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"
                raise ConfigError(key, f"got {value!r}, allowed range {rng}")
        kwargs[name] = value
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        for field_name, message in check():
            raise ConfigError(f"{path}.{field_name}" if path else field_name, message)
    return obj


def _nonfinite(value: Any) -> float | None:
    """The first NaN or infinite float in a value, its lists and mappings (not in nested
    sections, which check their own fields)."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, (list, tuple)):
        items: Any = value
    elif isinstance(value, Mapping):
        items = value.values()
    else:
        return None
    for v in items:
        bad = _nonfinite(v)
        if bad is not None:
            return bad
    return None


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain JSON-able Python values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``overrides`` into ``base``; mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def stable_hash(value: Any, length: int = 16) -> str:
    """A hash of a JSON-able value that is stable across runs, machines and dict orders."""
    text = json.dumps(to_dict(value), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def describe(cls: type, path: str = "") -> list[tuple[str, str, Any, str]]:
    """(key path, type, default, help) for every leaf field, for docs and error messages."""
    rows = []
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, key))
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append((key, _type_name(tp), default, f.metadata.get("help", "")))
    return rows


__all__ = ["ConfigError", "spec", "build", "to_dict", "merge", "stable_hash", "describe",
           "resolve_device", "cpu_threads", "ResultError", "load_result", "result_dict"]


# -- small shared helpers ---------------------------------------------------------------------

def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present, else CPU; any other value is returned as it is."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` inside the block (0: unchanged), then restored.
    Small matrices gain nothing from a second thread, and on shared cores a thread waiting for
    a busy sibling stalls every parallel kernel."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)



# -- typed stage results ----------------------------------------------------------------------
# A stage's metrics are a dataclass (``<Name>Metrics`` in its stage module) written into its
# manifest with :func:`result_dict` and read back with :func:`load_result`. Unlike :func:`build`
# (a config: defaults fill gaps), a result is read STRICTLY: a key the class does not know, or a
# field the manifest lacks, is an error naming the class and the key path, so a renamed metric
# fails where it is read instead of turning a report finding into "not run".

class ResultError(ValueError):
    """A stored result does not match its dataclass (unknown key, missing key, wrong type)."""

    def __init__(self, cls: type, key: str, message: str):
        self.cls, self.key = cls, key
        super().__init__(f"{cls.__name__}: {key}: {message}" if key
                         else f"{cls.__name__}: {message}")


_NONFINITE = {"inf": math.inf, "+inf": math.inf, "infinity": math.inf, "-inf": -math.inf,
              "-infinity": -math.inf, "nan": math.nan}


def _load_value(value: Any, tp: Any, key: str, root: type) -> Any:
    """``value`` checked against ``tp`` (see :func:`load_result` for what is supported)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ResultError(root, key, f"expected a mapping for {tp.__name__}, got {value!r}")
        return _load_fields(tp, value, key, root)
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _load_value(value, option, key, root)
            except ResultError:
                continue
        raise ResultError(root, key, f"expected {_type_name(tp)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ResultError(root, key, f"expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ResultError(root, key, f"expected {len(args)} items, got {len(value)}")
            return tuple(_load_value(v, a, f"{key}[{i}]", root)
                         for i, (v, a) in enumerate(zip(value, args, strict=True)))
        items = [_load_value(v, args[0] if args else Any, f"{key}[{i}]", root)
                 for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ResultError(root, key, f"expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (str, Any)
        return {k: _load_value(v, val_tp, f"{key}.{k}", root) for k, v in value.items()}
    if origin is Literal:
        if value not in get_args(tp):
            raise ResultError(root, key, f"got {value!r}, allowed: {_type_name(tp)}")
        return value
    if tp is type(None):
        if value is not None:
            raise ResultError(root, key, f"expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ResultError(root, key, f"expected a bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ResultError(root, key, f"expected an int, got {value!r}")
        return value
    if tp is float:
        # manifests store non-finite numbers as strings ("inf", "-inf", "nan")
        if isinstance(value, str) and value.strip().lower() in _NONFINITE:
            return _NONFINITE[value.strip().lower()]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ResultError(root, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ResultError(root, key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"{root.__name__}: {key}: unsupported result type {tp!r}")


def _load_fields(cls: type, data: Mapping[str, Any], path: str, root: type) -> Any:
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ResultError(root, f"{path}.{unknown[0]}" if path else unknown[0],
                          f"unknown key; {cls.__name__} has: {', '.join(names)}")
    missing = [n for n in names if n not in data]
    if missing:
        raise ResultError(root, f"{path}.{missing[0]}" if path else missing[0],
                          "missing key (renamed or not written?)")
    return cls(**{n: _load_value(data[n], hints[n], f"{path}.{n}" if path else n, root)
                  for n in names})


def load_result(cls: type, data: Mapping[str, Any]) -> Any:
    """Dataclass ``cls`` built from a stored JSON dict, strictly: every field must be present
    and no other key, recursively through nested dataclasses. Field types: bool, int, float
    (also the strings "inf", "-inf", "nan"), str, None, unions of these, ``list[...]``,
    ``tuple[...]``, ``dict[str, ...]``, nested dataclasses and ``Any`` (kept as stored).
    Raises :class:`ResultError` naming the class and the key path."""
    if not isinstance(data, Mapping):
        raise ResultError(cls, "", f"expected a mapping, got {type(data).__name__}")
    return _load_fields(cls, data, "", cls)


def _json_number(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def result_dict(obj: Any) -> Any:
    """A result dataclass as JSON-able values, non-finite floats as "inf"/"-inf"/"nan"
    strings (what :func:`load_result` reads back), so manifests stay strict JSON."""
    value = to_dict(obj)
    if isinstance(value, dict):
        return {k: result_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [result_dict(v) for v in value]
    return _json_number(value)
