"""Where snapshots are kept: `<data-dir>/snapshots/NAME/`, its files and, written last,
`manifest.json`.

A snapshot is written into a hidden partial directory (`.NAME.partial-PID-RANDOM`), every
file and directory synced, the manifest written last, and only then renamed to NAME in one
step: a save killed at any point leaves no NAME, only a partial directory, which
`clean_partials` removes once its process is gone. A snapshot directory with a manifest is
therefore complete, and `verify` checks that it still is.

One file carries a snapshot between hosts: a tar stream, manifest first, compressed with
zstd (`export`, `import_`).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import hashlib
import io
import logging
import os
import re
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

import zstandard

from vdc_runtime.pids import running
from vdc_runtime.snapshot.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    check_name,
    check_relative,
)

log = logging.getLogger("vdc.snapshot")

DEFAULT_LEVEL = 3
"""zstd's own default: fast enough to keep up with a migration stream on one core."""
CHUNK = 1 << 20
MAX_MANIFEST = 64 << 20
"""An archive's manifest is read into memory: bigger than any real one, smaller than harm."""
_PARTIAL = re.compile(r"\.(?P<name>[a-z0-9][a-z0-9._-]{0,62})\.partial-(?P<pid>\d+)-[0-9a-f]+")
HOLE = 64 << 10
"""Zeros left as holes in this unit: a qcow2 cluster."""
_ZEROS = bytes(HOLE)


class NoSuchSnapshot(FileNotFoundError):
    pass


class SnapshotStore:
    def __init__(self, root: Path, level: int = DEFAULT_LEVEL) -> None:
        self.root = root
        """`<data-dir>/snapshots`."""
        self.level = level
        """The zstd level of what `write_stream` and `export` compress."""

    # -- writing -------------------------------------------------------------------------

    def begin(self, name: str) -> Partial:
        """A new snapshot NAME, to be filled and committed; FileExistsError when there is
        one already."""
        check_name(name)
        if (self.root / name).exists():
            raise FileExistsError(
                f"snapshot {name} exists in {self.root}: delete it first or choose another name"
            )
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.root / f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        path.mkdir(mode=0o700)
        return Partial(self, name, path)

    def clean_partials(self) -> list[str]:
        """Remove what saves, imports and deletes killed halfway left (partial directories
        whose process is gone); their directory names. One whose process runs is kept: it
        is still being written.

        A pid is only meaningful in the pid namespace of the process that wrote it: call
        this where snapshots are saved (a pid reused since only keeps a leftover longer).
        """
        removed = []
        for entry in self._entries():
            match = _PARTIAL.fullmatch(entry.name)
            if match is None or entry.is_symlink() or not entry.is_dir():
                continue
            if running(int(match["pid"]), None):
                continue
            shutil.rmtree(entry)
            removed.append(entry.name)
        return sorted(removed)

    # -- reading -------------------------------------------------------------------------

    def list(self) -> list[Manifest]:
        """Every snapshot, oldest first; a damaged one is left out, with a warning."""
        found = []
        for entry in self._entries():
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                found.append(self.show(entry.name))
            except (OSError, ValueError) as exc:
                log.warning("snapshot directory %s left out: %s", entry, exc)
        return sorted(found, key=lambda m: (m.created_at, m.name))

    def show(self, name: str) -> Manifest:
        """Its manifest; NoSuchSnapshot, or ValueError naming the file when it is damaged."""
        path = self._dir(name) / MANIFEST_NAME
        try:
            manifest = Manifest.from_json(path.read_bytes())
        except FileNotFoundError:
            raise ValueError(f"{path}: missing") from None
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        if manifest.name != name:
            raise ValueError(f"{path}: names snapshot {manifest.name}, not {name}")
        return manifest

    def path(self, name: str, rel: str) -> Path:
        """A file of snapshot NAME, to be read (a volume copied back with a reflink)."""
        return self._dir(name) / check_relative(rel)

    @contextlib.contextmanager
    def open_stream(self, name: str, rel: str) -> Iterator[BinaryIO]:
        """A file written by `write_stream`, decompressed as it is read."""
        with (
            open(self.path(name, rel), "rb") as file,
            zstandard.ZstdDecompressor().stream_reader(
                file, read_size=CHUNK, read_across_frames=True, closefd=False
            ) as reader,
        ):
            yield reader  # type: ignore[misc]

    def verify(self, name: str) -> list[str]:
        """What is wrong with the snapshot's files, each naming its file: missing, of
        another size or checksum than the manifest says, or not in it; empty when none is."""
        try:
            manifest = self.show(name)
        except ValueError as exc:
            return [str(exc)]
        return _check_files(self._dir(name), manifest, checksums=True)

    # -- removing ------------------------------------------------------------------------

    def delete(self, name: str) -> None:
        path = self._dir(name)
        # Renamed first, so the snapshot is gone at once: a delete killed halfway leaves a
        # partial directory, never a snapshot with files missing.
        trash = self.root / f".{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        os.rename(path, trash)
        shutil.rmtree(trash)

    # -- one file ------------------------------------------------------------------------

    def export(self, name: str, dest: Path) -> None:
        """Write snapshot NAME into one file `dest`: a tar stream (manifest.json first)
        compressed with zstd. Each file's checksum is checked as it is read: a damaged
        snapshot is not carried elsewhere. Written to `dest.partial` and renamed, so `dest`
        is whole or absent."""
        manifest = self.show(name)
        if dest.exists():
            raise FileExistsError(f"{dest} exists")
        partial = dest.with_name(dest.name + ".partial")
        mtime = int(manifest.created_at)
        try:
            with open(partial, "wb") as raw:
                compressor = zstandard.ZstdCompressor(level=self.level, threads=-1)
                with (
                    compressor.stream_writer(raw, closefd=False) as out,
                    tarfile.open(fileobj=out, mode="w|", bufsize=CHUNK,
                                 format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tar,
                ):  # fmt: skip
                    text = manifest.to_json().encode()
                    tar.addfile(_member(MANIFEST_NAME, len(text), mtime), io.BytesIO(text))
                    for entry in manifest.all_files():
                        _export_file(tar, self._dir(name), entry, mtime)
                raw.flush()
                os.fsync(raw.fileno())
            os.rename(partial, dest)
            _fsync(dest.parent)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def import_(self, src: Path, name: str | None = None) -> Manifest:
        """Take in a file `export` wrote, as snapshot `name` (default: its own name); its
        manifest. Every member is checked against the manifest (a regular file it lists,
        of its size and checksum, each once, none missing) as it is extracted into a
        partial directory, renamed only once all is well: a damaged, changed or hostile
        archive leaves nothing behind and raises ValueError naming the problem."""
        if name is not None:
            check_name(name)
        with open(src, "rb") as raw:
            try:
                with (
                    zstandard.ZstdDecompressor().stream_reader(
                        raw, read_size=CHUNK, read_across_frames=True, closefd=False
                    ) as stream,
                    tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK) as tar,
                ):
                    manifest = _read_manifest(tar)
                    if name is not None:
                        manifest = dataclasses.replace(manifest, name=name)
                    with self.begin(manifest.name) as partial:
                        _extract(tar, manifest, partial)
                        partial.commit(manifest)
            except (ValueError, tarfile.TarError, zstandard.ZstdError, EOFError) as exc:
                raise ValueError(f"{src}: {exc}") from None
        return manifest

    # -- helpers -------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.root / check_name(name)
        if not path.is_dir():
            raise NoSuchSnapshot(f"no snapshot {name} in {self.root}")
        return path

    def _entries(self) -> list[Path]:
        try:
            return sorted(self.root.iterdir())
        except FileNotFoundError:
            return []


class Partial:
    """A snapshot being written; a context manager that removes it unless committed."""

    def __init__(self, store: SnapshotStore, name: str, path: Path) -> None:
        self.store = store
        self.name = name
        self.dir = path
        self._done = False

    def __enter__(self) -> Partial:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            self.abort()

    def path(self, rel: str) -> Path:
        """Where file `rel` of the snapshot goes (its directories made)."""
        check_relative(rel)
        if rel == MANIFEST_NAME:
            raise ValueError(f"{rel}: written by commit")
        path = self.dir / rel
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def write_stream(self, rel: str, level: int | None = None) -> Iterator[StreamWriter]:
        """A writer that compresses into file `rel`; its `entry` once the block ends.

        with partial.write_stream("w1/state.zst") as out:
            out.write(chunk)
        files["state"] = out.entry
        """
        compressor = zstandard.ZstdCompressor(
            level=self.store.level if level is None else level, threads=-1
        )
        path = self.path(rel)
        with open(path, "xb") as file:
            digest = _Digesting(file)
            writer = StreamWriter(rel, digest, compressor.stream_writer(digest, closefd=False))
            try:
                yield writer
                writer.close()
                file.flush()
                os.fsync(file.fileno())
            except BaseException:
                path.unlink(missing_ok=True)
                raise

    def add_file(self, rel: str, source: Path, reflink_copy: bool = True) -> FileEntry:
        """Copy `source` in as file `rel` (a disk: sparse, and sharing its blocks where the
        file system can, so a copy of many gigabytes takes no time or space)."""
        path = self.path(rel)
        if os.path.lexists(path):
            raise FileExistsError(f"{rel}: already in the snapshot")
        reflink = "auto" if reflink_copy else "never"
        done = subprocess.run(
            ["cp", f"--reflink={reflink}", "--sparse=always", "--", str(source), str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            path.unlink(missing_ok=True)
            raise OSError(f"cannot copy {source} into the snapshot: {done.stderr.strip()}")
        return self.adopt_file(rel)

    def adopt_file(self, rel: str) -> FileEntry:
        """The entry of file `rel`, written at `path(rel)` by someone else (QEMU)."""
        path = self.dir / check_relative(rel)
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"{rel}: not a regular file in the snapshot")
        with open(path, "rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
            size = os.fstat(file.fileno()).st_size
        return FileEntry(rel, sha256, size)

    def commit(self, manifest: Manifest) -> None:
        """Make the snapshot NAME, at once: its files synced, the manifest written last,
        the directory renamed. The manifest must list exactly the files written (sizes
        checked; checksums were taken as they were written). FileExistsError when NAME
        appeared meanwhile, leaving the partial directory to the caller."""
        if self._done:
            raise RuntimeError(f"snapshot {self.name}: already committed or aborted")
        if manifest.name != self.name:
            raise ValueError(f"the manifest names snapshot {manifest.name}, not {self.name}")
        problems = _check_files(self.dir, manifest, checksums=False)
        if problems:
            raise ValueError(f"snapshot {self.name}: {'; '.join(problems)}")
        _fsync_tree(self.dir)
        with open(self.dir / MANIFEST_NAME, "xb") as file:
            file.write(manifest.to_json().encode())
            file.flush()
            os.fsync(file.fileno())
        _fsync(self.dir)
        try:
            _rename_noreplace(self.dir, self.store.root / self.name)
        except FileExistsError:
            (self.dir / MANIFEST_NAME).unlink()
            raise FileExistsError(
                f"snapshot {self.name} was made in {self.store.root} meanwhile"
            ) from None
        _fsync(self.store.root)
        self._done = True

    def abort(self) -> None:
        self._done = True
        shutil.rmtree(self.dir, ignore_errors=True)


class StreamWriter:
    """What `Partial.write_stream` yields: compressed bytes in, its file's entry out."""

    def __init__(self, rel: str, digest: _Digesting, compressor: Any) -> None:
        self.rel = rel
        self._digest = digest
        self._compressor = compressor
        self._entry: FileEntry | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self._entry is not None:
            raise ValueError(f"{self.rel}: written already")
        self._compressor.write(data)
        return memoryview(data).nbytes

    def close(self) -> None:
        if self._entry is None:
            self._compressor.close()  # the end of the zstd frame
            self._entry = FileEntry(self.rel, self._digest.hash.hexdigest(), self._digest.size)

    @property
    def entry(self) -> FileEntry:
        if self._entry is None:
            raise ValueError(f"{self.rel}: still being written")
        return self._entry


class _Digesting:
    """Writes through to a file, hashing and counting what lands in it."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.file.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)


class _Hashing:
    """Reads through from a file, hashing what was read."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.hash.update(data)
        return data


def _check_files(top: Path, manifest: Manifest, *, checksums: bool) -> list[str]:
    problems = []
    listed = {entry.path: entry for entry in manifest.all_files()}
    for rel, entry in listed.items():
        path = top / rel
        if not os.path.lexists(path):
            problems.append(f"{rel}: missing")
            continue
        if path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: not a regular file")
            continue
        size = path.stat().st_size
        if size != entry.size:
            problems.append(f"{rel}: {size} bytes, the manifest says {entry.size}")
        elif checksums:
            with open(path, "rb") as file:
                sha256 = hashlib.file_digest(file, "sha256").hexdigest()
            if sha256 != entry.sha256:
                problems.append(f"{rel}: sha256 {sha256}, the manifest says {entry.sha256}")
    problems += [f"{rel}: not in the manifest" for rel in _files(top) if rel not in listed]
    return problems


def _files(top: Path) -> list[str]:
    """Every file under `top` but the manifest, relative (symlinks to directories too)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath).relative_to(top)
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        found += [(here / f).as_posix() for f in (*filenames, *links)]
    return sorted(f for f in found if f != MANIFEST_NAME)


def _member(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o600
    return info


def _export_file(tar: tarfile.TarFile, top: Path, entry: FileEntry, mtime: int) -> None:
    with open(top / entry.path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size != entry.size:
            raise ValueError(f"{entry.path}: {size} bytes, the manifest says {entry.size}")
        reader = _Hashing(file)
        tar.addfile(_member(entry.path, entry.size, mtime), reader)  # type: ignore[arg-type]
    if reader.hash.hexdigest() != entry.sha256:
        raise ValueError(f"{entry.path}: changed since it was saved (its sha256 differs)")


def _read_manifest(tar: tarfile.TarFile) -> Manifest:
    first = tar.next()
    if first is None or first.name != MANIFEST_NAME or not first.isreg():
        found = "nothing" if first is None else repr(first.name)
        raise ValueError(f"not a snapshot archive: it starts with {found}, not {MANIFEST_NAME}")
    if first.size > MAX_MANIFEST:
        raise ValueError(f"{MANIFEST_NAME}: {first.size} bytes, too big for a manifest")
    reader = tar.extractfile(first)
    assert reader is not None
    return Manifest.from_json(reader.read())


def _extract(tar: tarfile.TarFile, manifest: Manifest, partial: Partial) -> None:
    listed = {entry.path: entry for entry in manifest.all_files()}
    seen: set[str] = set()
    # Not `for member in tar`, which starts again with the manifest.
    while (member := tar.next()) is not None:
        where = f"member {member.name!r}"
        if not member.isreg():
            raise ValueError(f"{where}: not a regular file (links and devices are refused)")
        try:
            check_relative(member.name)
            # The standard library's own rules for archives from elsewhere, as well.
            tarfile.data_filter(member, str(partial.dir))
        except (ValueError, tarfile.FilterError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        entry = listed.get(member.name)
        if entry is None:
            raise ValueError(f"{where}: not in the manifest")
        if member.name in seen:
            raise ValueError(f"{where}: twice in the archive")
        seen.add(member.name)
        if member.size != entry.size:
            raise ValueError(f"{where}: {member.size} bytes, the manifest says {entry.size}")
        source = tar.extractfile(member)
        assert source is not None
        with open(partial.path(member.name), "xb") as file:
            sha256 = _copy_sparse(source, file)
        if sha256 != entry.sha256:
            raise ValueError(f"{where}: its sha256 differs from the manifest's")
    missing = sorted(set(listed) - seen)
    if missing:
        raise ValueError(f"missing from the archive: {', '.join(missing)}")


def _copy_sparse(source: IO[bytes], file: IO[bytes]) -> str:
    """Copy leaving holes where the data is zeros (a disk image's unused space: a tar
    stream writes it out in full); its sha256."""
    digest = hashlib.sha256()
    size = 0
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
        view = memoryview(chunk)
        for start in range(0, len(view), HOLE):
            block = view[start : start + HOLE]
            if block == _ZEROS[: len(block)]:
                file.seek(len(block), os.SEEK_CUR)
            else:
                file.write(block)
    file.truncate(size)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(top: Path) -> None:
    """Every file and directory under `top`, `top` last: a crash after the rename must not
    find a snapshot with a file not yet on disk."""
    for dirpath, _dirnames, filenames in os.walk(top, topdown=False):
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink():
                _fsync(path)
        _fsync(Path(dirpath))


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _rename_noreplace(src: Path, dst: Path) -> None:
    """Rename, refusing (FileExistsError) when `dst` exists, in one step where the kernel
    and file system can: a plain rename replaces an empty directory."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                              ctypes.c_uint]  # fmt: skip
        if renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                     _RENAME_NOREPLACE) == 0:  # fmt: skip
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(err, os.strerror(err), str(src), None, str(dst))
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


__all__ = [
    "DEFAULT_LEVEL",
    "NoSuchSnapshot",
    "Partial",
    "SnapshotStore",
    "StreamWriter",
]
