"""mai_repro: a small-scale, notebook-driven reproduction of the MAI-Thinking-1 recipe.

Start at notebooks/00_overview.ipynb; the modules a stage uses are listed in its map.
"""

__version__ = "0.1.0"
