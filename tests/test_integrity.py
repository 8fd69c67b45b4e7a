"""Corrupt archives, lost documents and a raw sample that drifted from data/MANIFEST (issue 20)."""

import gzip
import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from mai_repro.artifacts import Run, StageError, require
from mai_repro.config import load
from mai_repro.data import readers
from mai_repro.data.documents import Document, Unreadable
from mai_repro.data.integrity import SampleIntegrityError, SampleManifest
from mai_repro.data.sources import SOURCES, Source, read_source, source_id
from mai_repro.data.steps import Ledger, finish, run_steps
from mai_repro.stages.curation import read_all

SRC = Source("stem", "t.tar.gz", "deb", "pkg", "1", "tar", "MIT")


def man_pages(n=71):
    """Distinct, incompressible-enough pages, so that the gzip stream spans many blocks."""
    import random

    rng = random.Random(0)
    return [(f"p{i:03d}.1", " ".join(f"w{rng.randrange(10**6)}" for _ in range(300)).encode())
            for i in range(n)]


def write_tar(path, files, *, gz_members=False):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            if gz_members:
                name, data = name + ".gz", gzip.compress(data, mtime=0)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))


def sample_dir(tmp_path, files, **kw):
    """A data dir holding one source and a MANIFEST written by collect for it."""
    from mai_repro.data import collect

    path = tmp_path / "raw" / SRC.family / SRC.file
    write_tar(path, files, **kw)
    orig = collect.SOURCES, collect.DETECTOR_SOURCES, collect.iter_sample
    collect.SOURCES, collect.DETECTOR_SOURCES = (SRC,), ()
    collect.iter_sample = lambda d: read_source(SRC, d)
    try:
        collect.write_manifest(tmp_path)
    finally:
        collect.SOURCES, collect.DETECTOR_SOURCES, collect.iter_sample = orig
    return path


def flip_middle(path, n=64):
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + n] = bytes(b ^ 0xFF for b in data[mid:mid + n])
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# Readers: a corrupt archive or member never raises, and says how far it got.

def test_corrupt_gz_member_is_an_error_for_that_member_only(tmp_path):
    path = tmp_path / "t.tar.gz"
    good = gzip.compress(b"fine", mtime=0)
    bad = bytearray(gzip.compress(b"x" * 5000, mtime=0))
    bad[len(bad) // 2] ^= 0xFF  # the zlib.error of issue 20
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("a.1.gz", good), ("b.1.gz", bytes(bad)), ("c.1.gz", good)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buf.getvalue()))
    items = list(readers.read_tar(path))  # must not raise
    assert [type(i).__name__ for i in items] == ["RawItem", "ReadError", "RawItem"]
    assert items[1].path.endswith(":b.1.gz") and "corrupt gzip member" in items[1].reason


def test_flipped_bytes_in_tar_gz_never_pass_silently(tmp_path):
    """Issue 20: tarfile stopped at the corruption and the source yielded 36 of 71 documents
    with no word about the rest."""
    path = sample_dir(tmp_path, man_pages(71))
    manifest = SampleManifest.read(tmp_path)
    flip_middle(path)
    out = list(read_source(SRC, tmp_path))  # no MANIFEST: a fate, count unknown
    docs = [d for d in out if isinstance(d, Document)]
    assert len(docs) < 71 and isinstance(out[-1], Unreadable)
    assert "broken archive after" in out[-1].reason and "unknown number" in out[-1].reason
    with pytest.raises(SampleIntegrityError, match="t.tar.gz differs from"):
        manifest.verify_file(source_id(SRC), path)  # what curation does before reading
    with pytest.raises(SampleIntegrityError, match="t.tar.gz: document"):
        list(read_source(SRC, tmp_path, manifest))  # corrupted bytes decoded before the break


def test_truncated_tar_gz_gives_the_count_of_unread_documents(tmp_path):
    path = sample_dir(tmp_path, man_pages(71))
    manifest = SampleManifest.read(tmp_path)
    assert len(manifest.ids_by_source[source_id(SRC)]) == 71
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    out = list(read_source(SRC, tmp_path, manifest))
    docs = [d for d in out if isinstance(d, Document)]
    lost = [u for u in out if isinstance(u, Unreadable)]
    assert 0 < len(docs) < 71 and len(lost) == 1
    assert lost[0].count == 71 - len(docs)
    assert f"{71 - len(docs)} document(s) of MANIFEST not read" in lost[0].reason
    assert "broken archive after" in lost[0].reason
    # every document has a fate: the ledger balances against MANIFEST's enumeration
    ledger = Ledger()
    for u in lost:
        ledger.record_removed(u.id, u.family, 0, "read", "unreadable", u.reason, count=u.count)
    finish(docs, ledger)
    ledger.check(manifest.expected_ids([source_id(SRC)]))
    assert ledger.n_inputs == 71
    ledger.fates.pop()  # a document lost on the way
    with pytest.raises(AssertionError, match="70 with a fate"):
        ledger.check(manifest.expected_ids([source_id(SRC)]))


def test_corrupt_gz_member_in_a_source_is_one_unreadable_fate(tmp_path):
    path = sample_dir(tmp_path, man_pages(5), gz_members=True)
    raw = io.BytesIO(gzip.decompress(path.read_bytes()))
    with tarfile.open(fileobj=raw) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    name, data = members[2]
    data = bytearray(data)
    data[len(data) // 2] ^= 0xFF
    members[2] = (name, bytes(data))
    write_tar(path, members)
    out = list(read_source(SRC, tmp_path, SampleManifest.read(tmp_path)))
    bad = [u for u in out if isinstance(u, Unreadable)]
    assert len(out) == 5 and len(bad) == 1 and bad[0].count == 1
    assert bad[0].id == f"{source_id(SRC)}:p002.1.gz" and "corrupt gzip member" in bad[0].reason


# --------------------------------------------------------------------------------------------
# The ledger against an independent enumeration.

def test_ledger_check_catches_a_lost_document():
    from tests.test_steps import STEPS, corpus

    kept, ledger = run_steps(corpus(), STEPS)
    finish(kept[1:], ledger)  # one kept document silently dropped
    ledger.check()  # by construction this cannot notice
    with pytest.raises(AssertionError, match="does not account"):
        ledger.check([d.id for d in corpus()])
    kept, ledger = run_steps(corpus(), STEPS)
    finish(kept, ledger).check([d.id for d in corpus()])


# --------------------------------------------------------------------------------------------
# Curation against data/MANIFEST: a changed raw file or MANIFEST row is an error naming it,
# and makes the stage stale.

@pytest.fixture
def data_copy(tmp_path):
    dst = tmp_path / "data"
    shutil.copytree("data", dst)
    return dst


def read_smoke(data_dir):
    return read_all(load("smoke").curation, data_dir, Ledger())


def test_curation_reads_the_committed_sample_verified(data_copy):
    docs = read_smoke(data_copy)
    expected = SampleManifest.read(data_copy).expected_ids(map(source_id, SOURCES), 40)
    assert [d.id for d in docs] == expected


def test_appended_line_in_a_raw_file_is_an_error_naming_it(data_copy):
    lee = data_copy / "raw" / "general" / "lee_background.cor"
    lee.write_bytes(lee.read_bytes() + b"an appended line\n")
    with pytest.raises(SampleIntegrityError, match="lee_background.cor differs from"):
        read_smoke(data_copy)


def test_zeroed_manifest_sha256_is_an_error_naming_the_document(data_copy):
    rows = (data_copy / "MANIFEST").read_text().splitlines()
    k = next(i for i, r in enumerate(rows) if ":" in r.split("\t")[0])  # a document row
    fields = rows[k].split("\t")
    fields[7] = "0" * 64
    rows[k] = "\t".join(fields)
    (data_copy / "MANIFEST").write_text("\n".join(rows) + "\n")
    with pytest.raises(SampleIntegrityError, match=f"document {fields[0]}"):
        read_smoke(data_copy)


def test_changed_input_file_makes_a_stage_stale(tmp_path, monkeypatch):
    raw = tmp_path / "raw.txt"
    raw.write_text("v1")
    cfg = load("gpu")  # no automatic rebuild: require() must say why
    run = Run(cfg, tmp_path / "run")
    with run.stage("curation") as st:
        st.add_input("raw", raw)
    assert run.status("curation") == "complete"
    with run.stage("tokenizer"):
        pass
    raw.write_text("v2")
    assert run.status("curation") == "stale"
    assert str(raw) in run.stale_reason("curation")
    assert run.status("tokenizer") == "stale"  # built from the old curation
    with pytest.raises(StageError, match="changed since"):
        require(run, "curation")
    m = json.loads((tmp_path / "run" / "curation" / "manifest.json").read_text())
    assert Path(m["input_paths"]["raw"]) == raw
