import gzip

import pytest

from mai_repro.data.corpus import clean_path, iter_clean, write_clean


def doc(i, family="code", text="x = 1\n"):
    return {"id": f"d{i}", "family": family, "text": text, "source": "pkg", "license": "MIT"}


def test_round_trip_and_deterministic_bytes(tmp_path):
    docs = [doc(0), doc(1, text="ünïcode ✓\n")]
    assert write_clean(tmp_path / "a", "code", docs) == 2
    write_clean(tmp_path / "b", "code", docs)
    assert list(iter_clean(tmp_path / "a")) == docs
    a, b = clean_path(tmp_path / "a", "code"), clean_path(tmp_path / "b", "code")
    assert a.read_bytes() == b.read_bytes()
    assert gzip.decompress(a.read_bytes()).count(b"\n") == 2


def test_family_selection_and_order(tmp_path):
    write_clean(tmp_path, "math", [doc(2, "math")])
    write_clean(tmp_path, "code", [doc(1)])
    assert [d["id"] for d in iter_clean(tmp_path)] == ["d1", "d2"]
    assert [d["id"] for d in iter_clean(tmp_path, ["math"])] == ["d2"]


def test_bad_records_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        write_clean(tmp_path, "code", [{"id": "x", "family": "code", "text": ""}])
    with pytest.raises(ValueError, match="not 'code'"):
        write_clean(tmp_path, "code", [doc(0, "math")])
    with pytest.raises(ValueError, match="unknown family"):
        clean_path(tmp_path, "poetry")
