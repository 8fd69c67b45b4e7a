"""The raw sample checked against data/MANIFEST as it is read.

data/MANIFEST lists one row per raw file (id ``<family>/<file>``, its sha256 and size) and
one row per document (id ``<family>/<file>:<path inside it>``, the sha256 of its raw bytes).
:class:`SampleManifest` reads both; the curation stage verifies each raw file against its row
before reading it and each document against its row as it is read, so a raw file changed
after MANIFEST was written (a line appended, a byte flipped) or a MANIFEST row edited stops
curation with an error naming the file, instead of a different corpus built silently.
The document rows are also the independent enumeration the ledger is checked against
(:meth:`SampleManifest.expected_ids`): a document that a reader or a step loses fails it.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mai_repro.files import file_hash


class SampleIntegrityError(RuntimeError):
    """The raw sample differs from data/MANIFEST."""


REBUILD = ("restore the file (git checkout data/) or, if the change is meant, rebuild the "
           "sample and its MANIFEST: python -m mai_repro.data.collect --out data")


def is_file_row(row_id: str) -> bool:
    """File rows are ``<family>/<file>``; document ids add ``:<path inside>``."""
    return ":" not in row_id


@dataclass
class SampleManifest:
    """data/MANIFEST: raw files (sha256, bytes) and documents (sha256), in file order."""

    path: Path
    files: dict[str, tuple[str, int]] = field(default_factory=dict)
    docs: dict[str, str] = field(default_factory=dict)
    ids_by_source: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, data_dir: Path | str) -> SampleManifest:
        path = Path(data_dir) / "MANIFEST"
        out = cls(path)
        with open(path, newline="") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if is_file_row(row["id"]):
                    out.files[row["id"]] = (row["sha256"], int(row["bytes"]))
                else:
                    out.docs[row["id"]] = row["sha256"]
                    out.ids_by_source[row["id"].split(":", 1)[0]].append(row["id"])
        return out

    def verify_file(self, source_id: str, path: Path) -> None:
        """The raw file's sha256 and size must match its MANIFEST row."""
        if not path.is_file():
            raise SampleIntegrityError(f"{path} is missing; {self.path} lists it; {REBUILD}")
        if source_id not in self.files:
            raise SampleIntegrityError(f"{path}: no row for {source_id} in {self.path}; "
                                       f"{REBUILD}")
        expected, size = self.files[source_id]
        found = file_hash(path)
        if found != expected:
            raise SampleIntegrityError(
                f"{path} differs from {self.path}: sha256 {found[:16]}... ({path.stat().st_size}"
                f" bytes), recorded {expected[:16]}... ({size} bytes); {REBUILD}")

    def verify_document(self, doc_id: str, sha256: str, source_file: Path | str) -> None:
        """A document's raw bytes must hash to its MANIFEST row."""
        expected = self.docs.get(doc_id)
        if expected is None:
            raise SampleIntegrityError(f"{source_file}: document {doc_id} is not in "
                                       f"{self.path}; {REBUILD}")
        if expected != sha256:
            raise SampleIntegrityError(
                f"{source_file}: document {doc_id} has sha256 {sha256[:16]}..., {self.path} "
                f"records {expected[:16]}...; {REBUILD}")

    def expected_ids(self, source_ids: Iterable[str], limit: int | None = None) -> list[str]:
        """The documents MANIFEST lists for these sources (the first ``limit`` of each)."""
        return [i for s in source_ids for i in self.ids_by_source.get(s, [])[:limit or None]]
