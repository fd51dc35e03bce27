"""Build outputs that are all or nothing.

A build writes into `<out>.partial`, then `publish()` records a manifest of every file
(size and SHA-256) in `.complete` and renames the directory into place. A build killed at
any point leaves at most a `.partial` directory, which the next build removes first, so
a half-built set is never mistaken for a built one. `verify()` is the cheap check a warm
run does (sizes against the manifest); `verify(full=True)` also rehashes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

STAMP = ".complete"


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != STAMP:
            yield path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(root: Path) -> dict[str, dict[str, object]]:
    return {
        str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": sha256(p)}
        for p in _files(root)
    }


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Held while `out` is checked and built: two `make deps` at once build it once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def partial(out: Path) -> Path:
    """A fresh, empty staging directory for `out` (whatever a killed build left goes)."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, out: Path, *, info: dict[str, object] | None = None) -> Path:
    """Stamp `staging` with its manifest and put it where `out` is, replacing it."""
    record = {"files": manifest(staging), **(info or {})}
    tmp = staging / (STAMP + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, staging / STAMP)
    _fsync_tree(staging)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(staging, out)  # the one step that makes the build visible
    return out


def _fsync_tree(root: Path) -> None:
    # A power cut after the rename must not leave a stamped directory of empty files.
    for path in [*_files(root), root / STAMP]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def verify(out: Path, *, required: tuple[str, ...] = (), full: bool = False) -> bool:
    """True when `out` is a published build whose files are all there, as recorded."""
    try:
        files = json.loads((out / STAMP).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not isinstance(files, dict) or any(name not in files for name in required):
        return False
    for name, meta in files.items():
        path = out / name
        try:
            if path.stat().st_size != meta["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
        if full and sha256(path) != meta.get("sha256"):
            return False
    return True


__all__ = ["STAMP", "locked", "manifest", "partial", "publish", "sha256", "verify"]
