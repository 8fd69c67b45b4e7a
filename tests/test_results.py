"""Typed stage results: strict loading (schema.load_result) and every stage's metrics class
against the report card's findings."""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin, get_type_hints

import pytest

from mai_repro.schema import ResultError, load_result, result_dict


def skeleton(cls: type) -> dict[str, Any]:
    """The smallest stored metrics that load into ``cls``: zeros, empty strings, lists and
    dicts, None where allowed, nested dataclasses filled the same way. Tests override the keys
    a finding reads."""
    hints = get_type_hints(cls)
    return {f.name: _blank(hints[f.name]) for f in dataclasses.fields(cls)}


def _blank(tp: Any) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return skeleton(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        return None if type(None) in args else _blank(args[0])
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    return {bool: False, int: 0, float: 0.0, str: ""}.get(tp)


@dataclass
class Inner:
    x: float
    tags: list[str] = field(default_factory=list)


@dataclass
class Outer:
    n: int
    name: str
    inner: Inner
    by_family: dict[str, float]
    maybe: float | None
    flags: list[bool]
    extra: Any


def sample() -> dict[str, Any]:
    return {"n": 3, "name": "a", "inner": {"x": 1.5, "tags": ["p"]},
            "by_family": {"web": 0.5, "code": "inf"}, "maybe": None, "flags": [True],
            "extra": {"free": [1, "two"]}}


def test_load_result_round_trip_and_inf_strings():
    r = load_result(Outer, sample())
    assert r.inner.x == 1.5 and r.inner.tags == ["p"] and r.extra == {"free": [1, "two"]}
    assert r.by_family["code"] == math.inf and r.maybe is None
    assert result_dict(r) == sample()  # inf written back as the string it was read from
    nan = load_result(Inner, {"x": "nan", "tags": []})
    assert math.isnan(nan.x) and result_dict(nan)["x"] == "nan"
    assert load_result(Inner, {"x": "-inf", "tags": []}).x == -math.inf


def test_load_result_unknown_key_names_class_and_path():
    data = sample()
    data["inner"]["y"] = 2
    with pytest.raises(ResultError, match=r"Outer: inner\.y: unknown key"):
        load_result(Outer, data)


def test_load_result_missing_key_names_class_and_path():
    data = sample()
    del data["inner"]["tags"]  # missing even though the field has a default: results are strict
    with pytest.raises(ResultError, match=r"Outer: inner\.tags: missing key"):
        load_result(Outer, data)
    data = sample()
    del data["name"]
    with pytest.raises(ResultError, match=r"Outer: name: missing"):
        load_result(Outer, data)


def test_load_result_wrong_types():
    for key, bad in [("n", 1.5), ("n", True), ("name", 3), ("flags", [1]), ("maybe", "x"),
                     ("by_family", {"web": "lots"}), ("inner", [1])]:
        data = sample()
        data[key] = bad
        with pytest.raises(ResultError, match=key):
            load_result(Outer, data)
