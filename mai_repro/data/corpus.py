"""The clean corpus on disk: the contract between curation (01) and tokenisation (03).

The curation stage writes one gzipped JSON-lines file per family under
``<run_dir>/curation/clean/<family>.jsonl.gz``. Each line is one document::

    {"id": "...", "family": "code", "text": "...", "source": "...", "license": "MIT",
     "path": "...", "date": "2019-05-01" or null}

Readers stream; nothing holds the whole corpus in memory.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mai_repro.data.config import FAMILIES

CLEAN_DIR = "clean"
REQUIRED = ("id", "family", "text", "source", "license")


def clean_path(stage_dir: Path | str, family: str) -> Path:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; families: {', '.join(FAMILIES)}")
    return Path(stage_dir) / CLEAN_DIR / f"{family}.jsonl.gz"


def write_jsonl_gz(path: Path | str, records: Iterable[Mapping[str, Any]]) -> int:
    """Write records as gzipped JSON lines (deterministic bytes: mtime 0); returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for rec in records:
            gz.write((json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n").encode())
            n += 1
    return n


def iter_jsonl_gz(path: Path | str) -> Iterator[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def write_clean(stage_dir: Path | str, family: str,
                documents: Iterable[Mapping[str, Any]]) -> int:
    """Write one family's clean documents; every record must carry the REQUIRED fields."""
    def checked() -> Iterator[Mapping[str, Any]]:
        for doc in documents:
            missing = [k for k in REQUIRED if k not in doc]
            if missing:
                raise ValueError(f"document {doc.get('id')!r} lacks {missing}")
            if doc["family"] != family:
                raise ValueError(f"document {doc['id']!r} is {doc['family']!r}, not {family!r}")
            yield doc

    return write_jsonl_gz(clean_path(stage_dir, family), checked())


def iter_clean(stage_dir: Path | str, families: Iterable[str] | None = None
               ) -> Iterator[dict[str, Any]]:
    """Every clean document of the given families (all by default), family by family."""
    for family in families or FAMILIES:
        path = clean_path(stage_dir, family)
        if path.exists():
            yield from iter_jsonl_gz(path)
