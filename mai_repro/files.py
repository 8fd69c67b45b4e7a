"""Files written so that a reader never sees a torn one, and content hashes.

The lowest layer of the library (no project imports): manifests, checkpoints and sweep
records all go through :func:`atomic_write`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: Path, write: Callable[[IO], Any], binary: bool = False) -> None:
    """Write a file so that readers see the old one or the new one, never a torn one:
    ``write(f)`` fills a temp file beside ``path``, which is fsynced and renamed over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    def write(f: IO) -> None:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")

    atomic_write(path, write)


def file_hash(path: Path) -> str:
    """sha256 of a file, or of a directory's relative paths and file hashes."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for p in sorted(q for q in path.rglob("*") if q.is_file()):
            h.update(str(p.relative_to(path)).encode() + b"\0" + file_hash(p).encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

def project_root() -> Path:
    """The checkout this package runs from (where pyproject.toml is), else the working dir."""
    for base in (Path.cwd(), Path(__file__).resolve().parent):
        for d in (base, *base.parents):
            if (d / "pyproject.toml").is_file() and (d / "mai_repro").is_dir():
                return d
    return Path.cwd()
