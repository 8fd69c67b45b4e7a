"""The library's layers: imports only go down (mai_repro.layers)."""

from pathlib import Path

from mai_repro import layers
from mai_repro.artifacts import STAGES

ROOT = Path(__file__).resolve().parents[1]


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_library_imports_only_downwards():
    graph = layers.import_graph(ROOT)
    assert graph, "the import graph is empty: the check looked at nothing"
    assert layers.violations(graph) == []


def test_an_upward_import_a_sideways_import_and_an_unknown_unit_are_caught(tmp_path):
    _write(tmp_path, "mai_repro/model/a.py", "from mai_repro.train.loop import lm_loss\n")
    _write(tmp_path, "mai_repro/rl/b.py", "import mai_repro.eval.metrics\n")
    _write(tmp_path, "mai_repro/eval/c.py", "from mai_repro import rl\n")
    _write(tmp_path, "mai_repro/gadgets/d.py", "from mai_repro.model import a\n")
    found = layers.violations(layers.import_graph(tmp_path))
    assert any(v.startswith("model (rank 1) imports train, above it") for v in found), found
    assert any(v.startswith("rl (rank 4) imports eval, above it") for v in found), found
    assert any("'gadgets' has no rank" in v for v in found), found
    assert layers.main([str(tmp_path)]) == 1


def test_type_checking_imports_and_command_line_entry_points_are_not_counted(tmp_path):
    _write(tmp_path, "mai_repro/data/x.py", (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mai_repro.config import Config\n"
        "def main():\n    from mai_repro.eval import detector\n"
        "def helper():\n    from mai_repro.train import loop\n"))
    found = layers.violations(layers.import_graph(tmp_path))
    assert found == ["data (rank 2) imports train, above it: mai_repro/data/x.py"]


def test_one_name_per_stage_module_and_notebook():
    for name, stage in STAGES.items():
        assert (ROOT / "mai_repro" / "stages" / f"{name}.py").is_file(), name
        assert stage.notebook[3:] == f"{name}.ipynb", stage.notebook
        assert stage.report_section, name
