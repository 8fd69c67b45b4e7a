"""Streaming readers for the raw formats behind each source family.

Each reader takes a file and yields :class:`RawItem` (a path inside the file, the raw bytes,
a date when known), in file order, without loading the whole file. A corrupt input (truncated
compression, broken XML or archive, undecodable bytes) never raises out of a reader: it
yields a :class:`ReadError` with the reason and stops (or, for one corrupt member of an
archive, goes on with the next member), so the caller records the input as unreadable and
goes on.

Formats: tar archives (``.tar.gz`` source distributions and document trees; ``.gz`` members
are decompressed), MediaWiki XML dumps (``.xml.bz2``), one document per line, JSON lines
(optionally ``.gz``), WARC (``.warc`` or ``.warc.gz``, records of type response or resource),
and GNU info files split into nodes.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import re
import tarfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class RawItem:
    path: str
    data: bytes
    date: str | None = None
    url: str | None = None


@dataclass(frozen=True)
class ReadError:
    path: str
    reason: str


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


def _open(path: Path):
    """A binary stream, decompressed by suffix (.gz, .bz2)."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    if path.suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb")


def decode(data: bytes) -> str:
    """UTF-8 text; raises UnicodeDecodeError for bytes that are not UTF-8 (callers record it)."""
    return data.decode("utf-8")


# --------------------------------------------------------------------------------------------

def read_tar(path: Path | str, members: str | None = None) -> Iterator[RawItem | ReadError]:
    """Regular files of a tar archive (any compression tarfile knows), ``.gz`` members
    decompressed; ``members`` is an optional regex on member paths.

    A member that cannot be read or decompressed yields a ReadError for that member and the
    archive goes on; an archive that breaks (truncated, corrupt compression) yields one
    ReadError for the archive, saying after how many members it stopped, and ends: what
    follows the break cannot be enumerated from the archive itself (the caller counts the
    lost members against an independent list, data/MANIFEST).
    """
    pattern = re.compile(members) if members else None
    n = 0
    try:
        with tarfile.open(path, "r:*") as tar:
            for info in tar:
                if not info.isfile() or (pattern and not pattern.search(info.name)):
                    continue
                n += 1
                item = _tar_member(tar, info)
                yield item if isinstance(item, RawItem) else ReadError(f"{path}:{info.name}",
                                                                       item)
            trailing = _trailing_data(tar)
            if trailing:
                raise tarfile.ReadError(trailing)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        yield ReadError(str(path), f"broken archive after {n} member(s): "
                                   f"{type(e).__name__}: {e}")


def _trailing_data(tar: tarfile.TarFile) -> str | None:
    """What is wrong after the last member, or None. tarfile ends its iteration silently at an
    invalid header past the first one, so a corrupt archive looks like a short one; what
    follows the last member must be the zero blocks that close a tar archive. Reading to the
    end also makes a compressed stream check its CRC."""
    f = tar.fileobj
    f.seek(tar.offset)
    at = tar.offset
    for chunk in iter(lambda: f.read(1 << 20), b""):
        if chunk.count(0) != len(chunk):
            where = at + next(i for i, b in enumerate(chunk) if b)
            return f"data at byte {where} of the tar stream is not a valid member header"
        at += len(chunk)
    return None


def _tar_member(tar: tarfile.TarFile, info: tarfile.TarInfo) -> RawItem | str:
    """One member's bytes (decompressed when it is a ``.gz``), or why they are corrupt.
    Errors of the archive itself (reading past a break) propagate to the caller."""
    f = tar.extractfile(info)
    data = f.read() if f else b""
    if info.name.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:  # BadGzipFile is an OSError
            return f"corrupt gzip member: {type(e).__name__}: {e}"
    return RawItem(info.name, data, _iso(info.mtime))


def read_mediawiki(path: Path | str, namespaces: Iterable[int] = (0,)
                   ) -> Iterator[RawItem | ReadError]:
    """Pages of a MediaWiki XML export (raw wikitext); url from the dump's site base."""
    keep = set(namespaces)
    base = ""
    try:
        with _open(Path(path)) as f:
            for _, el in ET.iterparse(f, events=("end",)):
                tag = el.tag.rsplit("}", 1)[-1]
                if tag == "base" and el.text:
                    base = el.text.rsplit("/", 1)[0] + "/"
                if tag != "page":
                    continue
                ns = el.tag[: -len("page")]
                title = el.findtext(f"{ns}title") or ""
                page_ns = int(el.findtext(f"{ns}ns") or 0)
                rev = el.find(f"{ns}revision")
                text = rev.findtext(f"{ns}text") if rev is not None else None
                stamp = rev.findtext(f"{ns}timestamp") if rev is not None else None
                if page_ns in keep:
                    yield RawItem(title, (text or "").encode("utf-8"),
                                  stamp[:10] if stamp else None,
                                  base + title.replace(" ", "_") if base else None)
                el.clear()
    except (ET.ParseError, EOFError, OSError, zlib.error) as e:
        yield ReadError(str(path), f"broken dump: {type(e).__name__}: {e}")


def read_lines(path: Path | str) -> Iterator[RawItem | ReadError]:
    """One document per non-empty line."""
    try:
        with _open(Path(path)) as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    yield RawItem(f"line {n}", line.rstrip(b"\r\n"))
    except (EOFError, OSError, zlib.error) as e:
        yield ReadError(str(path), f"broken file: {type(e).__name__}: {e}")


def read_jsonl(path: Path | str, text_key: str = "text") -> Iterator[RawItem | ReadError]:
    """One JSON object per line, its ``text_key`` field as the document."""
    try:
        with _open(Path(path)) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield ReadError(f"{path}:{n}", f"bad JSON line: {e}")
                    continue
                yield RawItem(str(obj.get("id", f"line {n}")),
                              str(obj.get(text_key, "")).encode("utf-8"), obj.get("date"),
                              obj.get("url"))
    except (EOFError, OSError, zlib.error) as e:
        yield ReadError(str(path), f"broken file: {type(e).__name__}: {e}")


def info_nodes(text: str) -> Iterator[tuple[str, str]]:
    """(node name, node text) of a GNU info file (nodes are separated by \\x1f)."""
    for chunk in text.split("\x1f"):
        m = re.search(r"Node: ([^,\n]+)", chunk[:400])
        if m and chunk.strip():
            body = chunk.split("\n", 2)[-1] if chunk.startswith("\n") else chunk
            yield m.group(1).strip(), body.strip("\n")


def prose_chunks(text: str, min_words: int = 250, max_words: int = 600
                 ) -> Iterator[tuple[str, str]]:
    """(``p<first paragraph>``, text) pieces of long prose: consecutive paragraphs (split at
    blank lines) packed until a piece holds at least ``min_words`` words, never past
    ``max_words`` unless one paragraph alone is longer. A short tail joins the piece before
    it. Pieces the size of a web page or a forum post, whatever the length of the book."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[tuple[int, list[str], int]] = []  # (first paragraph, paragraphs, words)
    for i, para in enumerate(paragraphs):
        n = len(para.split())
        if pieces and pieces[-1][2] < min_words and pieces[-1][2] + n <= max_words:
            first, paras, words = pieces[-1]
            pieces[-1] = (first, [*paras, para], words + n)
        else:
            pieces.append((i, [para], n))
    if len(pieces) > 1 and pieces[-1][2] < min_words // 2:
        first, paras, words = pieces.pop(-2)
        pieces[-1] = (first, paras + pieces[-1][1], words + pieces[-1][2])
    for first, paras, _ in pieces:
        yield f"p{first:04d}", "\n\n".join(paras)


# --------------------------------------------------------------------------------------------
# WARC: the format of web crawls. A small writer too, for fixtures built from the sample.

def write_warc(path: Path | str, records: Iterable[tuple[str, str, bytes]]) -> int:
    """Write (target URI, ISO date, HTML/text body) as WARC/1.0 ``resource`` records,
    one gzip member per record (as crawlers do). Deterministic bytes."""
    n = 0
    with open(path, "wb") as raw:
        for uri, date, body in records:
            header = (f"WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: {uri}\r\n"
                      f"WARC-Date: {date}\r\nWARC-Record-ID: <urn:mai-repro:{n}>\r\n"
                      f"Content-Type: text/plain; charset=utf-8\r\n"
                      f"Content-Length: {len(body)}\r\n\r\n").encode()
            raw.write(gzip.compress(header + body + b"\r\n\r\n", mtime=0))
            n += 1
    return n


def read_warc(path: Path | str) -> Iterator[RawItem | ReadError]:
    """``response`` and ``resource`` records (an HTTP response's headers are stripped)."""
    try:
        with _open(Path(path)) as f:
            stream = io.BufferedReader(f) if not isinstance(f, io.BufferedReader) else f
            while True:
                line = stream.readline()
                if not line:
                    return
                if not line.strip():
                    continue
                if not line.startswith(b"WARC/"):
                    yield ReadError(str(path), f"not a WARC record header: {line[:40]!r}")
                    return
                headers = {}
                for hline in iter(stream.readline, b"\r\n"):
                    if not hline:
                        raise EOFError("truncated WARC header")
                    key, _, value = hline.decode("utf-8", "replace").partition(":")
                    headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = stream.read(length)
                if len(body) < length:
                    raise EOFError("truncated WARC record")
                kind = headers.get("warc-type")
                if kind == "response" and b"\r\n\r\n" in body:
                    body = body.split(b"\r\n\r\n", 1)[1]
                if kind in ("response", "resource"):
                    uri = headers.get("warc-target-uri", "")
                    yield RawItem(uri, body, headers.get("warc-date", "")[:10] or None, uri)
    except (EOFError, OSError, ValueError, zlib.error) as e:
        yield ReadError(str(path), f"broken WARC: {type(e).__name__}: {e}")


# --------------------------------------------------------------------------------------------
# License detection.

SPDX_RE = re.compile(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+-]+(?:\s+(?:AND|OR|WITH)\s+"
                     r"[A-Za-z0-9.+-]+)*)")
CLASSIFIERS = {
    "MIT License": "MIT", "BSD License": "BSD-3-Clause", "Apache Software License": "Apache-2.0",
    "Python Software Foundation License": "PSF-2.0", "ISC License (ISCL)": "ISC",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.1-or-later",
}
TEXT_MARKERS = [  # (phrase in a LICENSE file, SPDX id), most specific first
    ("Apache License", "Apache-2.0"),
    ("Permission is hereby granted, free of charge", "MIT"),
    ("Neither the name", "BSD-3-Clause"),
    ("Redistribution and use in source and binary forms", "BSD-2-Clause"),
    ("PYTHON SOFTWARE FOUNDATION LICENSE", "PSF-2.0"),
    ("GNU GENERAL PUBLIC LICENSE", "GPL-2.0-or-later"),
]


def spdx_in_text(text: str) -> str | None:
    """An ``SPDX-License-Identifier:`` expression in the first lines of a file."""
    m = SPDX_RE.search(text[:4000])
    return m.group(1) if m else None


def license_from_metadata(pkg_info: str) -> str | None:
    """SPDX from a PKG-INFO / METADATA file: License-Expression, a short License field, or a
    classifier."""
    m = re.search(r"^License-Expression:\s*(.+)$", pkg_info, re.M)
    if m:
        return m.group(1).strip()
    m = re.search(r"^License:\s*([A-Za-z0-9.+-]{2,40})\s*$", pkg_info, re.M)
    if m and m.group(1) != "UNKNOWN":
        short = {"MIT": "MIT", "BSD": "BSD-3-Clause", "Apache 2.0": "Apache-2.0"}
        return short.get(m.group(1), m.group(1))
    for name in re.findall(r"^Classifier: License :: (?:OSI Approved :: )?(.+)$", pkg_info,
                           re.M):
        if name.strip() in CLASSIFIERS:
            return CLASSIFIERS[name.strip()]
    return None


def license_from_text(license_text: str) -> str | None:
    for phrase, spdx in TEXT_MARKERS:
        if phrase.lower() in license_text.lower():
            return spdx
    return None


def detect_sdist_license(path: Path | str) -> str:
    """The license of a source distribution: its metadata, else its LICENSE/COPYING file."""
    metadata, license_file = None, None
    for item in read_tar(path):
        if isinstance(item, ReadError):
            break
        name = item.path.rsplit("/", 1)[-1]
        if name == "PKG-INFO" and item.path.count("/") == 1:
            metadata = item.data.decode("utf-8", "replace")
        elif name.upper().startswith(("LICENSE", "COPYING")) and license_file is None:
            license_file = item.data.decode("utf-8", "replace")
    return (license_from_metadata(metadata or "") or license_from_text(license_file or "")
            or "unknown")
