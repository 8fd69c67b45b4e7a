import pytest

from mai_repro import plots


def test_save_and_collect(tmp_path):
    fig, ax = plots.new()
    ax.plot([0, 1], [1, 0])
    saved = plots.save(fig, tmp_path / "run" / "stage_a" / "figures" / "curve")
    assert saved.suffix == ".png" and saved.read_bytes()[:4] == b"\x89PNG"
    copied = plots.collect(tmp_path / "run", tmp_path / "figures")
    assert copied == [tmp_path / "figures" / "stage_a" / "curve.png"]
    assert plots.main(["collect", str(tmp_path / "run"), str(tmp_path / "f2")]) == 0


def test_collect_without_run_says_what_to_do(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="make reproduce"):
        plots.collect(tmp_path / "missing", tmp_path / "figures")
    assert plots.main(["collect", str(tmp_path / "missing"), str(tmp_path / "f")]) == 1
    assert "make reproduce" in capsys.readouterr().err
