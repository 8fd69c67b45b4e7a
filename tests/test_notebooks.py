"""Notebooks are committed clean and follow the conventions (DESIGN.md)."""

import re

import nbformat
import pytest
import yaml

from mai_repro.artifacts import project_root

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = project_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.get("outputs") or c.get("execution_count"))]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `make strip`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_conventions(path):
    assert re.match(r"^\d{2}_[a-z0-9_]+\.ipynb$", path.name)
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    names = set(re.findall(r"^(\w+)\s*=", params[0].source, re.M))
    assert {"preset", "run_dir", "seed", "device", "overrides"} <= names
    assert any("mai_repro.config.load(preset, overrides" in c.source for c in nb.cells)


def test_dependencies_recorded_in_both_files():
    def name(req):
        return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = {name(d) for d in project["dependencies"]}
    deps |= {name(d) for extra in project["optional-dependencies"].values() for d in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_deps = {name(d) for d in env["dependencies"] if isinstance(d, str)}
    env_deps |= {name(d) for d in pip if not d.startswith("-")}
    env_deps.discard("python")
    env_deps.discard("pip")
    assert deps == env_deps
