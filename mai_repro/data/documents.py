"""The document type every reader yields, and the record of an input that could not be read."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Document:
    id: str  # stable: <source file>:<path inside it>
    family: str  # code, stem, math, general, multilingual
    text: str
    source: str  # package or dump the document comes from
    version: str
    license: str  # SPDX identifier (or expression); "unknown" when none could be found
    path: str  # path inside the source (archive member, page title, record URI)
    date: str | None = None  # ISO date (created or last modified) when known
    url: str | None = None  # where it was published, for web documents
    sha256: str = ""  # of the raw bytes the text was decoded from

    @property
    def nbytes(self) -> int:
        return len(self.text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class Unreadable:
    """An input that failed to read: recorded with its reason, never silently dropped."""

    id: str
    family: str
    source_file: str
    reason: str
    count: int = 1  # documents this record stands for (the members lost after an archive breaks)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
