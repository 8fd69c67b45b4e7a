import bz2
import gzip
import io
import tarfile
from collections import Counter

import pytest

from mai_repro.data import readers
from mai_repro.data.documents import Document, Unreadable
from mai_repro.data.sources import (
    DETECTOR_SOURCES,
    SOURCES,
    Source,
    iter_detector_human,
    iter_sample,
    read_manifest,
    read_source,
)

DUMP = b"""<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">
<siteinfo><base>https://en.wikipedia.org/wiki/Main_Page</base></siteinfo>
<page><title>Ada Lovelace</title><ns>0</ns><id>1</id>
<revision><timestamp>2016-01-02T03:04:05Z</timestamp><text>'''Ada''' [[math]]</text></revision>
</page>
<page><title>Talk:Ada</title><ns>1</ns><id>2</id><revision><text>chat</text></revision></page>
</mediawiki>"""


def test_every_manifest_row_is_read_back_with_its_hash():
    rows = {r["id"]: r for r in read_manifest("data") if r["family"] != "detector"}
    docs = list(iter_sample("data"))
    assert not [d for d in docs if isinstance(d, Unreadable)]
    assert len(docs) == len(rows) > 1000
    for d in docs:
        row = rows[d.id]
        assert (d.family, d.license, d.sha256, str(d.nbytes)) == \
            (row["family"], row["license"], row["sha256"], row["bytes"])
    families = Counter(d.family for d in docs)
    assert set(families) == {"code", "stem", "math", "general", "multilingual"}
    assert all(r["license"] for r in rows.values())


def test_detector_human_prose_is_listed_and_never_in_the_sample():
    """The detector's own human prose (data/raw/detector/) is verified against MANIFEST like
    the sample, but iter_sample (the corpus) never yields it."""
    rows = {r["id"]: r for r in read_manifest("data") if r["family"] == "detector"}
    files = {r["id"]: r for r in read_manifest("data", files=True) if r["family"] == "detector"}
    assert set(files) == {f"detector/{s.file}" for s in DETECTOR_SOURCES}
    docs = list(iter_detector_human("data"))
    skipped = {f"detector/{s.file}:{p}" for s in DETECTOR_SOURCES for p in s.skip}
    assert skipped <= set(rows) and not skipped & {d.id for d in docs}
    assert len(docs) + len(skipped) == len(rows) > 30
    # nothing written after 2021: the pieces that hold the text added in 2023 are skipped
    assert not [d.id for d in docs if "Bullseye" in d.text or "2023" in d.text]
    for d in docs:
        assert (d.family, d.license, d.sha256, str(d.nbytes)) == \
            (rows[d.id]["family"], rows[d.id]["license"], rows[d.id]["sha256"],
             rows[d.id]["bytes"])
    assert {d.source for d in docs} == {s.package for s in DETECTOR_SOURCES}
    assert not any(d.id.startswith("detector/") for d in iter_sample("data"))
    assert list(iter_detector_human("data", ())) == []
    # pieces of a few paragraphs, as the sample's other prose
    assert all(100 <= len(d.text.split()) <= 700 for d in docs)


def test_sample_size_is_within_bounds():
    from pathlib import Path

    size = sum(p.stat().st_size for p in Path("data/raw").rglob("*") if p.is_file())
    assert 10e6 <= size <= 50e6


def test_mediawiki_reader(tmp_path):
    p = tmp_path / "d.xml.bz2"
    p.write_bytes(bz2.compress(DUMP))
    items = list(readers.read_mediawiki(p))
    assert len(items) == 1  # the talk page is another namespace
    assert items[0].path == "Ada Lovelace" and items[0].date == "2016-01-02"
    assert items[0].url == "https://en.wikipedia.org/wiki/Ada_Lovelace"
    assert items[0].data == b"'''Ada''' [[math]]"


@pytest.mark.parametrize("corrupt, reason", [
    (lambda b: bz2.compress(b)[:60], "broken dump"),  # truncated bz2
    (lambda b: bz2.compress(b[:150]), "broken dump"),  # broken XML
])
def test_corrupt_dumps_are_reported_not_raised(tmp_path, corrupt, reason):
    p = tmp_path / "d.xml.bz2"
    p.write_bytes(corrupt(DUMP))
    items = list(readers.read_mediawiki(p))
    assert isinstance(items[-1], readers.ReadError) and reason in items[-1].reason


def make_tar(path, files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue()))


def test_source_level_fates_of_bad_inputs(tmp_path):
    src = Source("stem", "t.tar.gz", "deb", "pkg", "1", "tar", "per-file",
                 default_license="MIT")
    (tmp_path / "raw" / "stem").mkdir(parents=True)
    path = tmp_path / "raw" / "stem" / "t.tar.gz"
    make_tar(path, [("a.1", b".\\\" SPDX-License-Identifier: GPL-2.0-or-later\nok"),
                    ("b.1", b"latin-1 \xe9\xe8"), ("c.1.gz", gzip.compress(b"zipped"))])
    out = list(read_source(src, tmp_path))
    assert isinstance(out[0], Document) and out[0].license == "GPL-2.0-or-later"
    assert isinstance(out[1], Unreadable) and "undecodable" in out[1].reason
    assert isinstance(out[2], Document) and out[2].text == "zipped" and out[2].license == "MIT"
    path.write_bytes(path.read_bytes()[:40])  # truncated archive
    out = list(read_source(src, tmp_path))
    assert len(out) == 1 and isinstance(out[0], Unreadable) and "broken archive" in out[0].reason
    path.write_bytes(b"")
    assert [u.reason for u in read_source(src, tmp_path)] == ["empty file"]
    path.unlink()
    assert [u.reason for u in read_source(src, tmp_path)] == ["missing file"]


def test_warc_round_trip_and_truncation(tmp_path):
    p = tmp_path / "w.warc.gz"
    recs = [("https://a.org/x", "2020-01-01T00:00:00Z", "héllo".encode()),
            ("https://b.org/y", "2021-05-05T00:00:00Z", b"two\r\n\r\nlines")]
    assert readers.write_warc(p, recs) == 2
    items = list(readers.read_warc(p))
    assert [(i.url, i.date, i.data) for i in items] == [
        ("https://a.org/x", "2020-01-01", "héllo".encode()),
        ("https://b.org/y", "2021-05-05", b"two\r\n\r\nlines")]
    p.write_bytes(p.read_bytes()[:-30])
    items = list(readers.read_warc(p))
    assert isinstance(items[-1], readers.ReadError)


def test_jsonl_and_lines(tmp_path):
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(gzip.compress(b'{"id": "a", "text": "one"}\nnot json\n{"text": "three"}\n'))
    items = list(readers.read_jsonl(p))
    assert items[0].path == "a" and items[0].data == b"one"
    assert isinstance(items[1], readers.ReadError) and items[2].path == "line 3"
    q = tmp_path / "l.txt"
    q.write_bytes(b"first\n\nsecond\n")
    assert [i.data for i in readers.read_lines(q)] == [b"first", b"second"]


def test_license_detection():
    assert readers.spdx_in_text("# SPDX-License-Identifier: Apache-2.0 OR MIT\n") == \
        "Apache-2.0 OR MIT"
    assert readers.license_from_metadata("License-Expression: MIT\n") == "MIT"
    assert readers.license_from_metadata(
        "Classifier: License :: OSI Approved :: Apache Software License\n") == "Apache-2.0"
    assert readers.license_from_text("Permission is hereby granted, free of charge, ...") == "MIT"
    assert readers.license_from_text("all rights reserved") is None


def test_info_nodes():
    text = "intro\n\x1f\nFile: m.info,  Node: Intro,  Next: A\n\nHello\n\x1f\n" \
           "File: m.info,  Node: A,  Prev: Intro\n\nWorld\n"
    assert [n for n, _ in readers.info_nodes(text)] == ["Intro", "A"]


def test_sources_table_is_consistent():
    files = [s.file for s in SOURCES]
    assert len(files) == len(set(files))
    assert {s.family for s in SOURCES} == {"code", "stem", "math", "general", "multilingual"}
