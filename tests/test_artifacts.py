import json
import os

import pytest

from mai_repro import artifacts
from mai_repro.artifacts import Run, StageError, atomic_write_json, require, stage_hash
from mai_repro.config import load


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_crash_mid_write_leaves_previous_manifest_readable(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"version": 1})

    def crash(fd):  # the process "dies" after the new bytes are written, before the rename
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="simulated crash"):
        atomic_write_json(path, {"version": 2, "big": "x" * 100_000})
    assert json.loads(path.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]  # no temp file left


def test_unserialisable_manifest_leaves_previous(tmp_path):
    path = tmp_path / "manifest.json"
    atomic_write_json(path, {"version": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"version": 2, "bad": object()})
    assert json.loads(path.read_text()) == {"version": 1}


def test_stage_writes_manifest_last_with_provenance(tmp_path):
    run = Run(load("smoke"), tmp_path)
    with run.stage("overview") as st:
        assert not run.manifest_path("overview").exists()
        st.path("out.txt").write_text("hello")
        st.add_input("data", st.path("out.txt"))
        st.metrics["answer"] = 42
    m = run.read_manifest("overview")
    assert m["metrics"] == {"answer": 42}
    assert m["config_hash"] == stage_hash(run.cfg, "overview")
    assert m["seed"] == 0 and m["preset"] == "smoke"
    assert len(m["inputs"]["data"]) == 64
    assert {"python", "torch", "numpy"} <= set(m["versions"])
    assert m["wall_time_s"] >= 0 and "git_sha" in m
    assert run.status("overview") == "complete"


def test_failed_stage_leaves_no_manifest_but_keeps_the_previous_aside(tmp_path):
    run = Run(load("smoke"), tmp_path)
    with run.stage("overview") as st:
        st.metrics["n"] = 1
    with pytest.raises(RuntimeError), run.stage("overview"):
        raise RuntimeError("boom")
    assert run.status("overview") == "missing"
    previous = json.loads((run.stage_dir("overview") / "manifest.previous.json").read_text())
    assert previous["metrics"] == {"n": 1}


def test_require_rebuilds_a_missing_stage_at_small_presets(tmp_path):
    run = Run(load("smoke"), tmp_path)
    assert run.status("overview") == "missing"
    out = require(run, "overview")
    assert out.manifest["config_hash"] == stage_hash(run.cfg, "overview")
    assert out.path("figures", "goodput.png").is_file()
    assert out.metrics["goodput"] == pytest.approx(0.9)


def test_require_rebuilds_a_stale_stage(tmp_path, monkeypatch):
    require(Run(load("smoke"), tmp_path), "overview")
    run = Run(load("smoke", {"overview.mfu": 0.3}), tmp_path)
    assert run.status("overview") == "stale"
    out = require(run, "overview")
    assert out.metrics["mfu_assumed"] == 0.3
    assert run.status("overview") == "complete"


def test_require_keeps_a_current_stage(tmp_path, monkeypatch):
    run = Run(load("smoke"), tmp_path)
    first = require(run, "overview").manifest["finished_at"]
    monkeypatch.setattr("mai_repro.stages.overview.build", lambda run: pytest.fail("rebuilt"))
    assert require(run, "overview").manifest["finished_at"] == first


def test_other_sections_do_not_make_a_stage_stale(tmp_path):
    require(Run(load("smoke"), tmp_path), "overview")
    assert Run(load("smoke", {"pretrain.steps": 3}), tmp_path).status("overview") == "complete"


@pytest.mark.parametrize("preset", ["gpu", "cluster"])
def test_require_at_large_presets_names_the_notebook(tmp_path, preset):
    run = Run(load(preset, device="cpu"), tmp_path)
    with pytest.raises(StageError, match="notebooks/00_overview.ipynb") as err:
        require(run, "overview")
    assert "has not been run" in str(err.value)
    assert f"--preset {preset} --only 00" in str(err.value)
    assert run.status("overview") == "missing"


def test_require_stale_at_large_preset(tmp_path):
    with Run(load("gpu"), tmp_path).stage("overview"):
        pass
    run = Run(load("gpu", {"overview.mfu": 0.2}), tmp_path)
    with pytest.raises(StageError, match="built from another config"):
        require(run, "overview")


def test_require_unknown_stage(tmp_path):
    with pytest.raises(KeyError, match="registered"):
        require(Run(load("smoke"), tmp_path), "nope")


def test_builder_that_writes_no_manifest_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr("mai_repro.stages.overview.build", lambda run: None)
    with pytest.raises(StageError, match="wrote no current manifest"):
        require(Run(load("smoke"), tmp_path), "overview")


def test_every_registered_stage_has_its_notebook_and_builder():
    root = artifacts.project_root()
    for stage in artifacts.STAGES.values():
        assert (root / "notebooks" / stage.notebook).is_file(), stage.notebook
        module, func = stage.builder.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))
        assert set(stage.upstream) <= set(artifacts.STAGES)


def test_default_run_dir_is_runs_preset(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "project_root", lambda: tmp_path)
    assert Run(load("smoke")).dir == tmp_path / "runs" / "smoke"
