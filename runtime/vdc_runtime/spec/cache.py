"""Specs validated before, reused by content: `vdc run` of a file it has run before skips
parsing the YAML and the checks, whose imports cost most of its start-up.

An entry is the valid result of one load (the data center, the warnings it gave and its
canonical dump),
stored under the sha256 of everything the result depends on: each file's absolute path
and bytes, strictness, the source of this package (every model and rule), vdc's
version, Python's, and the installed pydantic, pydantic-core and PyYAML. Only what
validated is stored; a spec with errors is validated, and reported, every time. What
validation reads besides the files' bytes, the input files a spec names, is checked
again on every reuse; a problem there sends the load through the loader, which reports
it as it always does. An entry that is unreadable, damaged, of another format or not
owned by this user is ignored and replaced, written whole or not at all; the newest
`KEEP` entries are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import pickle
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vdc_runtime import __version__
from vdc_runtime.spec.errors import SpecError
from vdc_runtime.spec.inputs import file_inputs, file_problem
from vdc_runtime.spec.models import DataCenter, SpecModel

FORMAT = b"vdc spec cache 1\n"
KEEP = 64
"""Entries kept, the newest written: a spec not run for a while is validated again."""
_DEPENDENCIES = ("pydantic", "pydantic_core", "yaml")


@dataclass(frozen=True)
class Entry:
    dc: DataCenter
    warnings: tuple[SpecError, ...]
    canonical: dict[str, Any]
    """`dc.canonical()`: a run records it, and dumping builds every model's serializer."""


def _environment() -> bytes:
    """What a result depends on besides the files: this package's source and the versions
    of what runs it. Installed packages are told apart by their files' size and time."""
    digest = hashlib.sha256(FORMAT)
    digest.update(f"{__version__}\0{sys.version}\0".encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes() + b"\0")
    for name in _DEPENDENCIES:
        found = importlib.util.find_spec(name)
        origin = found.origin if found is not None else None
        if origin is None:
            digest.update(f"{name}: none\0".encode())
            continue
        st = os.stat(origin)
        digest.update(f"{name}: {origin} {st.st_size} {st.st_mtime_ns}\0".encode())
    return digest.digest()


def key(files: Iterable[tuple[Path, bytes]], *, strict: bool) -> str:
    """The entry's name for these files' contents read this way."""
    digest = hashlib.sha256(_environment())
    digest.update(b"strict" if strict else b"lenient")
    for path, data in files:
        name = str(path.absolute()).encode()
        digest.update(len(name).to_bytes(8, "big") + name)
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def _models(dc: DataCenter) -> list[SpecModel | None]:
    return [*dc.networks, *dc.netns, *dc.nodes, *dc.images, *dc.device_classes, dc.bmc]


def inputs_usable(dc: DataCenter) -> bool:
    """Whether every input file the spec names can still be used, as the loader checks."""
    return all(
        file_problem(path, executable=executable) is None
        for model in _models(dc)
        for _loc, path, executable in file_inputs(model)
    )


def read(path: Path) -> Entry | None:
    """The entry at `path` if it is whole, this format, and this user's alone."""
    try:
        with path.open("rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            data = f.read()
    except OSError:
        return None
    start = len(FORMAT) + 32
    head, digest, payload = data[: len(FORMAT)], data[len(FORMAT) : start], data[start:]
    if head != FORMAT or hashlib.sha256(payload).digest() != digest:
        return None
    try:
        entry = pickle.loads(payload)
    except Exception:
        return None
    if not isinstance(entry, Entry) or not isinstance(entry.dc, DataCenter):
        return None
    if not isinstance(entry.canonical, dict):
        return None
    return entry


def write(path: Path, entry: Entry) -> None:
    """Store `entry` at `path` whole or not at all; a cache that cannot be written is only
    not used."""
    payload = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(FORMAT + hashlib.sha256(payload).digest() + payload)
        os.replace(partial, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        return
    _prune(path.parent)


def _prune(folder: Path) -> None:
    def written(entry: Path) -> int:
        try:
            return entry.stat().st_mtime_ns
        except OSError:
            return 0

    for old in sorted(folder.glob("*.spec"), key=written)[:-KEEP]:
        with contextlib.suppress(OSError):
            old.unlink()


def load(
    paths: Iterable[Path | str],
    cache_dir: Path,
    *,
    strict: bool = True,
    warnings: list[SpecError] | None = None,
) -> Entry:
    """`spec.load_files`, reusing the result of an earlier load of the same bytes, with
    what the entry holds besides the data center.

    Raises SpecErrors exactly as `spec.load_files` does: errors always come from the loader.
    """
    paths = [Path(p) for p in paths]
    files: list[tuple[Path, bytes]] = []
    try:
        for path in paths:
            files.append((path, path.read_bytes()))
    except OSError:
        from vdc_runtime.spec import loader  # reports the unreadable file

        dc = loader.load_files(paths, strict=strict, warnings=warnings)
        return Entry(dc, (), dc.canonical())
    entry_path = cache_dir / f"{key(files, strict=strict)}.spec"
    entry = read(entry_path)
    if entry is not None and inputs_usable(entry.dc):
        if warnings is not None:
            warnings.extend(entry.warnings)
        return entry
    from vdc_runtime.spec import loader

    found: list[SpecError] = []
    dc = loader.load_bytes(files, strict=strict, warnings=None if strict else found)
    entry = Entry(dc, tuple(found), dc.canonical())
    write(entry_path, entry)
    if warnings is not None:
        warnings.extend(found)
    return entry
