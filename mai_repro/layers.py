"""The library's layers, and a check that imports only go down.

Run ``python -m mai_repro.layers``: it prints the import graph between the library's units and
exits 1 when a unit imports one above it, or when units import each other in a cycle. A unit
is a sub-package (``model``, ``data``, ...) or a top-level module (``config``, ``artifacts``).
Bottom to top:

====  ===============================================  ==========================================
rank  units                                            what lives there
====  ===============================================  ==========================================
0     schema, files, reference, plots, tables, layers  typed fields, atomic files, the report's
      stats                                            figures, figure and table style, verdicts
1     model                                            attention, LatentMoE, transformer, sampling
2     data                                             sources, filters, tokenizer, shards, loader
3     train                                            the one training step, trainer, checkpoints
4     rl                                               tasks, rewards, rollouts, GRPO, the climb
5     eval                                             metrics, long-context probes, detector
6     config                                           the whole run's config (composes sections)
7     artifacts                                        run directories, manifests, ``require()``
8     stages                                           one module per notebook: ``build(run)``
9     pipeline                                         the papermill runner
====  ===============================================  ==========================================

Units on one rank may not import each other. Two kinds of import are not counted: those under
``if TYPE_CHECKING:`` (annotations only), and those inside a command-line entry point (a
function named ``main``), which is an application on top of every layer.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = "mai_repro"
RANKS: dict[str, int] = {
    "schema": 0, "files": 0, "reference": 0, "plots": 0, "tables": 0, "layers": 0, "stats": 0,
    "model": 1, "data": 2, "train": 3, "rl": 4, "eval": 5, "config": 6, "artifacts": 7,
    "stages": 8, "pipeline": 9,
}

# The packages that hold components (no stage code): what a stage is built from.
COMPONENT_UNITS = ("model", "data", "train", "rl", "eval")


def unit_of(module: str) -> str | None:
    """``mai_repro.data.shards`` -> ``data``; None for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def _counted_imports(tree: ast.AST) -> list[str]:
    """Modules imported by a file, skipping TYPE_CHECKING blocks and ``main`` functions."""
    out: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main":
            return
        if isinstance(node, ast.Import):
            out.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
            if node.module.split(".")[0] == PACKAGE:  # the names may be modules: import plots
                out.extend(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return out


def imported_modules(path: Path) -> list[str]:
    """The ``mai_repro`` modules a file imports (as :func:`import_graph` counts them)."""
    root = Path(__file__).resolve().parents[1]

    def is_module(name: str) -> bool:
        base = root.joinpath(*name.split("."))
        return base.with_suffix(".py").is_file()

    tree = ast.parse(Path(path).read_text(), str(path))
    return sorted({m for m in _counted_imports(tree) if is_module(m)})


def import_graph(root: Path) -> dict[str, dict[str, list[str]]]:
    """unit -> imported unit -> the files (relative to ``root``) that import it."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted((root / PACKAGE).rglob("*.py")):
        rel = path.relative_to(root)
        me = unit_of(".".join(rel.with_suffix("").parts))
        if me is None or me == "__init__":
            continue
        for module in _counted_imports(ast.parse(path.read_text(), str(rel))):
            other = unit_of(module)
            if other and other != me and other != "__init__":
                graph[me][other].append(str(rel))
    return graph


def violations(graph: dict[str, dict[str, list[str]]]) -> list[str]:
    """Upward or sideways imports, unknown units and cycles, one line each."""
    out = []
    for me, targets in sorted(graph.items()):
        for other, files in sorted(targets.items()):
            for unit in (me, other):
                if unit not in RANKS:
                    out.append(f"unit {unit!r} has no rank in mai_repro.layers.RANKS")
            if me in RANKS and other in RANKS and RANKS[other] >= RANKS[me]:
                where = "above" if RANKS[other] > RANKS[me] else "on the same rank as"
                out.append(f"{me} (rank {RANKS[me]}) imports {other}, {where} it: "
                           f"{', '.join(sorted(set(files)))}")
    return sorted(set(out))


def main(argv: list[str] | None = None) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    graph = import_graph(root)
    for me in sorted(graph, key=lambda u: (RANKS.get(u, 99), u)):
        below = sorted(graph[me], key=lambda u: (RANKS.get(u, 99), u))
        print(f"{RANKS.get(me, '?')} {me:10} -> {', '.join(below)}")
    bad = violations(graph)
    for line in bad:
        print("LAYER VIOLATION:", line)
    print("layers: ok" if not bad else f"layers: {len(bad)} violation(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
