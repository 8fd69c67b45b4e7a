import subprocess
import sys

import nbformat
import pytest

from mai_repro import pipeline
from mai_repro.artifacts import project_root
from mai_repro.config import ConfigError


def write_nb(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


PARAMS = "preset = 'laptop'\nrun_dir = None\nseed = None\ndevice = None\noverrides = {}"


@pytest.mark.parametrize("value, parsed", [("10", 10), ("1e-3", 1e-3), ("true", True),
                                           ("null", None), ("abc", "abc"), ("[1, 2]", [1, 2]), ("nan", "nan"),
                                           ("a=b", "a=b")])
def test_parse_assignment(value, parsed):
    assert pipeline.parse_assignment(f"x.y={value}") == ("x.y", parsed)


def test_parse_assignment_rejects_missing_equals():
    with pytest.raises(ConfigError, match="key.path=value"):
        pipeline.parse_assignment("pretrain.steps")


def test_unknown_key_fails_before_any_notebook_runs(tmp_path):
    """The acceptance command itself, as a user types it."""
    proc = subprocess.run([sys.executable, "-m", "mai_repro.pipeline", "--preset", "smoke",
                           "-p", "pretrain.stepz=10", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=project_root(), timeout=120)
    assert proc.returncode == 2
    assert "pretrain.stepz" in proc.stderr and "unknown key" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("param, key", [("pretrain.steps=ten", "pretrain.steps"),
                                        ("model.tie_embeddings=3", "model.tie_embeddings"),
                                        ("seed=-1", "seed")])
def test_wrong_type_or_range_fails_before_running(tmp_path, capsys, param, key):
    code = pipeline.main(["--preset", "smoke", "-p", param, "--run-dir", str(tmp_path / "r")])
    assert code == 2
    assert key in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_missing_notebook_number(tmp_path, capsys):
    write_nb(tmp_path / "00_a.ipynb", PARAMS)
    code = pipeline.main(["--preset", "smoke", "--notebooks", str(tmp_path), "--only", "00,07",
                          "--run-dir", str(tmp_path / "r")])
    assert code == 2 and "07" in capsys.readouterr().err


def test_selection():
    s = pipeline.Selection(frozenset({1, 3, 5}), first=2, last=4)
    assert [n for n in range(7) if n in s] == [3]
    assert [n for n in range(4) if n in pipeline.Selection()] == [0, 1, 2, 3]


def test_failing_cell_stops_the_pipeline_naming_notebook_and_cell(tmp_path, capsys):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_nb(nbs / "00_ok.ipynb", PARAMS, "assert preset == 'smoke', preset\n"
             "assert overrides == {'pretrain.steps': 3}, overrides")
    write_nb(nbs / "01_fails.ipynb", PARAMS, "x = 1", "raise ValueError('planted failure')")
    write_nb(nbs / "02_never.ipynb", PARAMS, "open('should_not_run', 'w')")
    code = pipeline.main(["--preset", "smoke", "--notebooks", str(nbs), "-p",
                          "pretrain.steps=3", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1
    assert "01_fails.ipynb" in err and "ValueError: planted failure" in err
    # papermill inserts its injected-parameters cell after ours: the failing cell is index 3
    assert "cell 3" in err
    partial = tmp_path / "run" / "executed" / "01_fails.ipynb"
    assert str(partial) in err and partial.is_file()
    assert (tmp_path / "run" / "executed" / "00_ok.ipynb").is_file()
    assert not (tmp_path / "run" / "executed" / "02_never.ipynb").exists()


def test_prepare_injects_parameters(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_nb(nbs / "00_a.ipynb", PARAMS)
    out = tmp_path / "prepared"
    assert pipeline.main(["--preset", "smoke", "--notebooks", str(nbs), "--prepare", str(out),
                          "-p", "seed=4", "--run-dir", str(tmp_path / "r")]) == 0
    nb = nbformat.read(out / "00_a.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    src = injected[0].source
    assert 'preset = "smoke"' in src and "seed = 4" in src and str(tmp_path / "r") in src


# Issue 20: one-line errors naming the cause, before anything runs.

def test_inverted_range_is_named(tmp_path, capsys):
    code = pipeline.main(["--preset", "smoke", "--from", "7", "--to", "3",
                          "--run-dir", str(tmp_path / "r"), "--notebooks", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: inverted range: --from 7 is after --to 3"


@pytest.mark.parametrize("param, key", [("pretrain.lr=.nan", "pretrain.lr"),
                                        ("optim.weight_decay=.inf", "optim.weight_decay"),
                                        ("pretrain.hang_timeout=.inf", "pretrain.hang_timeout"),
                                        ("preset=../../x", "preset")])
def test_nan_inf_and_path_presets_are_refused(tmp_path, capsys, param, key):
    nbs = tmp_path / "nbs"  # a trivial notebook: without the check, it runs (and not 13)
    nbs.mkdir()
    write_nb(nbs / "00_x.ipynb", PARAMS)
    code = pipeline.main(["--preset", "smoke", "-p", param, "--run-dir", str(tmp_path / "r"),
                          "--notebooks", str(nbs)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: invalid parameter: {key}: ")
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_preset_yaml_syntax_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "mine.yaml"
    bad.write_text("seed: [1\n")
    code = pipeline.main(["--preset", str(bad), "--run-dir", str(tmp_path / "r"),
                          "--notebooks", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "mine.yaml: line" in err and "YAML syntax error" in err
    assert len(err.strip().splitlines()) == 1
