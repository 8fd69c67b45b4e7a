"""One place for figure style and saving.

Stage builders draw with :func:`new`, save PNGs under their stage folder with :func:`save`
(which closes the figure), and notebooks display the saved file with :func:`show`, so the
notebook shows exactly the file that `make figures` copies into figures/.

    python -m mai_repro.plots collect runs/laptop figures   # what `make figures` runs
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules:  # scripts and tests draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 120,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.frameon": False,
}
# Colours by meaning, reused across notebooks: ours vs the report's anchor.
OURS = "#1f77b4"
REPORT = "#d62728"
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def new(nrows: int = 1, ncols: int = 1, *, width: float = 6.4, height: float = 4.0,
        **kwargs: Any) -> tuple[plt.Figure, Any]:
    """A figure in the project's style."""
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                                 **kwargs)
    return fig, axes


def save(fig: plt.Figure, path: Path | str) -> Path:
    """Save as PNG (creating folders) and close the figure."""
    path = Path(path).with_suffix(".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with plt.rc_context(STYLE):
        fig.tight_layout()
        fig.savefig(path)
    plt.close(fig)
    return path


def show(path: Path | str) -> Any:
    """Display a saved figure in a notebook (returns an IPython Image)."""
    from IPython.display import Image

    return Image(filename=str(path))


def collect(run_dir: Path | str, dest: Path | str) -> list[Path]:
    """Copy every stage's figures of a run into ``dest/<stage>/``."""
    run_dir, dest = Path(run_dir), Path(dest)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}: run `make reproduce` first")
    copied = []
    for png in sorted(run_dir.glob("*/figures/*.png")):
        target = dest / png.parent.parent.name / png.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, target)
        copied.append(target)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mai_repro.plots")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="copy a run's figures into a folder")
    c.add_argument("run_dir")
    c.add_argument("dest")
    args = parser.parse_args(argv)
    try:
        copied = collect(args.run_dir, args.dest)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"copied {len(copied)} figures into {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
