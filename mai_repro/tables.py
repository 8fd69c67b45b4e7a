"""Small tables for notebooks: rows of dicts rendered as Markdown."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _cell(value: Any, fmt: str | Callable[[Any], str] | None) -> str:
    if value is None or value == "":
        return ""
    if fmt is not None:
        return fmt(value) if callable(fmt) else format(value, fmt)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
             formats: Mapping[str, str | Callable[[Any], str]] | None = None) -> str:
    """A Markdown table of ``rows``; ``formats`` maps a column to a format spec or function."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())
    formats = formats or {}
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, ""), formats.get(c))
                                       for c in columns) + " |")
    return "\n".join(lines)


def show(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
         formats: Mapping[str, str | Callable[[Any], str]] | None = None) -> Any:
    """Display a table in a notebook (an IPython Markdown object)."""
    from IPython.display import Markdown

    return Markdown(markdown(rows, columns, formats))
