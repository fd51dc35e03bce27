"""The image cache: downloads, checksums, decompression, and qemu-img copies and overlays.

Layout (Placemat's): `<cache_dir>/image_cache/<sha256 hex of the URL>` is the ready,
decompressed image; next to it `<key>.part` holds the bytes received so far (kept across
runs so a download resumes with `Range`), `<key>.part.json` the validator (ETag or
Last-Modified) the server gave them, and `<key>.lock` is the `flock` that lets several vdc
processes share one cache.

Differences from Placemat: chunked responses are
accepted; connection errors, timeouts, 408, 429 and 5xx are retried with exponential
backoff and the download resumes where it stopped; other 4xx fail at once; downloads of
different images run in parallel and one image is downloaded once however many nodes ask;
`sha256` is checked; xz and zstd are supported; a compressed `file` image is decompressed
into the cache (also for copy-on-write volumes, where Placemat used the compressed file as
the backing file).

The `sha256` of an image covers the bytes as published, i.e. the *compressed* file when
`compression` is set: that is the digest distributions list next to their `.xz`/`.gz`
files, and it is checked before anything is decompressed. A mismatch removes the partial
download and leaves no cache entry. A cache hit is not re-verified (the stored file is
the decompressed one); the cache key is the URL only, as in Placemat.
"""

from __future__ import annotations

import asyncio
import bz2
import contextlib
import fcntl
import gzip
import hashlib
import json
import logging
import lzma
import os
import re
import shlex
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

import aiohttp
import zstandard
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vdc_runtime.spec import Image

log = logging.getLogger(__name__)

CHUNK = 1 << 20
ATTEMPTS = 5
"""Attempts per download that make no progress; an attempt that got further resets it."""
RETRY_DELAY = 1.0
"""First wait between attempts in seconds; doubles each time up to MAX_RETRY_DELAY."""
MAX_RETRY_DELAY = 60.0
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 60.0
"""Seconds without a single byte before an attempt is given up; there is no total limit,
so a slow download that keeps moving is never killed."""
RETRY_STATUSES = frozenset({408, 429})

_SPARSE_BLOCK = 64 << 10
_LOG_EVERY_BYTES = 128 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class ImageError(RuntimeError):
    """An image could not be downloaded, checked, decompressed, copied or inspected."""


class ChecksumError(ImageError):
    """The downloaded bytes do not have the `sha256` the spec gives."""


class _Transient(Exception):
    """An attempt failed in a way worth retrying (connection, timeout, 408/429/5xx)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ---------------------------------------------------------------------------------------
# Progress


class _Reporter(Protocol):
    def start(self, total: int | None, done: int) -> None: ...

    def advance(self, n: int) -> None: ...


class _RichReporter:
    def __init__(self, progress: Progress, description: str) -> None:
        self.progress = progress
        self.task: TaskID = progress.add_task(description, total=None)

    def start(self, total: int | None, done: int) -> None:
        self.progress.update(self.task, total=total, completed=done)

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)


class _LogReporter:
    """Progress for logs and CI output: a line per tenth, or per 128 MiB when size is unknown."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.total: int | None = None
        self.done = 0
        self.mark = 0

    def start(self, total: int | None, done: int) -> None:
        self.total, self.done = total, done
        self.mark = self._mark()
        size = _human(total) if total is not None else "unknown size"
        resume = f", resuming at {_human(done)}" if done else ""
        log.info("image %s: downloading %s (%s%s)", self.name, self.url, size, resume)

    def advance(self, n: int) -> None:
        self.done += n
        mark = self._mark()
        if mark > self.mark:
            self.mark = mark
            if self.total:
                log.info(
                    "image %s: %d %% (%s of %s)",
                    self.name,
                    min(100, self.done * 100 // self.total),
                    _human(self.done),
                    _human(self.total),
                )
            else:
                log.info("image %s: %s received", self.name, _human(self.done))

    def _mark(self) -> int:
        if self.total:
            return self.done * 10 // self.total
        return self.done // _LOG_EVERY_BYTES


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _new_progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


# ---------------------------------------------------------------------------------------
# Files


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _unlink(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: Path, dst: Path) -> None:
    _fsync_file(tmp)
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)


@contextlib.asynccontextmanager
async def atomic_target(dst: Path) -> AsyncIterator[Path]:
    """A temporary path next to `dst` that becomes `dst` (fsynced, renamed) on success.

    On failure or cancellation the temporary file is removed, so `dst` is either absent,
    the old file, or complete — never half-written.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        await asyncio.to_thread(_publish, tmp, dst)
    finally:
        _unlink(tmp)


def _all_zero(block: memoryview) -> bool:
    return block.nbytes == 0 or (block[0] == 0 and block.tobytes().count(0) == block.nbytes)


def _write_sparse(read: Callable[[int], bytes], dst: IO[bytes]) -> int:
    """Copy a stream into `dst`, seeking over zero blocks so the result is sparse."""
    size = 0
    while chunk := read(CHUNK):
        view = memoryview(chunk)
        for start in range(0, len(view), _SPARSE_BLOCK):
            block = view[start : start + _SPARSE_BLOCK]
            if _all_zero(block):
                dst.seek(block.nbytes, os.SEEK_CUR)
            else:
                dst.write(block)
        size += len(chunk)
    # Trailing holes only move the offset; truncate gives the file its full length.
    dst.truncate(size)
    return size


def _open_decompressed(path: Path, compression: str) -> IO[bytes]:
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "bzip2":
        return bz2.open(path, "rb")
    if compression == "xz":
        return lzma.open(path, "rb")
    if compression == "zstd":
        return zstandard.ZstdDecompressor().stream_reader(  # type: ignore[return-value]
            open(path, "rb"),
            read_across_frames=True,
            closefd=True,
        )
    raise ImageError(f"unsupported compression {compression!r}")


_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


def _decompress(src: Path, dst: Path, compression: str) -> int:
    with _open_decompressed(src, compression) as reader, open(dst, "r+b") as out:
        return _write_sparse(reader.read, out)


def _absolute(path: Path) -> Path:
    return Path(os.path.abspath(path))


def _file_key(image: Image, file: Path) -> tuple[Path, str]:
    """The absolute path of a file image and its cache key (path, mtime and size)."""
    src = _absolute(file)
    try:
        st = src.stat()
    except OSError as exc:
        raise ImageError(f"image {image.name}: cannot read file {src}: {exc}") from exc
    return src, _sha256_text(f"{src}\0{st.st_mtime_ns}\0{st.st_size}")


def _append(out: IO[bytes], state: _Part, data: bytes) -> None:
    # Written and hashed together so `state` always matches the file's length.
    out.write(data)
    state.digest.update(data)
    state.size += len(data)


def _hash_file(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest


def _copy_sparse(src: Path, dst: Path) -> None:
    with open(src, "rb") as reader, open(dst, "r+b") as out:
        _write_sparse(reader.read, out)


def _remove_stale_temps(directory: Path, name: str) -> None:
    # Only called with the key's flock held: a temp file of this key is then a leftover
    # of a killed run, never the work of a live one.
    for stale in directory.glob(f".{name}.*.tmp"):
        stale.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def _flock(path: Path, what: str) -> AsyncIterator[None]:
    # Polling with LOCK_NB instead of a blocking flock in a thread: a cancelled waiter must
    # not leave a thread behind that later takes the lock and holds it forever.
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        waiting = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waiting:
                    log.info("%s: waiting for another vdc process that is preparing it", what)
                    waiting = True
                await asyncio.sleep(0.1)
        yield
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# qemu-img


async def _run(*argv: str) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} is not installed (needed for: {shlex.join(argv)})") from exc
    try:
        out, err = await proc.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        message = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise ImageError(f"{shlex.join(argv)} failed (exit {proc.returncode}): {message}")
    return out.decode(errors="replace")


async def qemu_img(*args: str) -> str:
    """Run `qemu-img` with `args`; its stdout, or ImageError with its stderr."""
    return await _run("qemu-img", *args)


async def image_info(path: Path) -> dict[str, object]:
    """`qemu-img info --output=json` of `path` (shared lock, so images in use can be read)."""
    data = json.loads(await _run("qemu-img", "info", "--force-share", "--output=json", str(path)))
    if not isinstance(data, dict):
        raise ImageError(f"qemu-img info {path}: unexpected output {data!r}")
    return data


async def image_format(path: Path) -> str:
    """The format qemu-img detects for `path` (`qcow2`, `raw`, `vmdk`, ...)."""
    fmt = (await image_info(path)).get("format")
    if not isinstance(fmt, str) or not fmt:
        raise ImageError(f"qemu-img info {path}: no format in its output")
    return fmt


async def create_overlay(base: Path, overlay: Path) -> None:
    """Make `overlay` a qcow2 copy-on-write layer over `base`; the base is never copied.

    The backing file is recorded by absolute path, with its format stated (`-F`), so QEMU
    never probes it.
    """
    base = _absolute(base)
    fmt = await image_format(base)
    async with atomic_target(overlay) as tmp:
        await _run(
            "qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", str(base), str(tmp)
        )  # fmt: skip


async def copy_image(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` completely, reflinked or sparse when the filesystem allows."""
    if not await asyncio.to_thread(src.is_file):
        raise ImageError(f"cannot copy {src}: no such file")
    async with atomic_target(dst) as tmp:
        try:
            await _run("cp", "--reflink=auto", "--sparse=always", "--", str(src), str(tmp))
        except ImageError as exc:
            # Not GNU cp (busybox, minimal images): the Python copy is slower but sparse too.
            log.debug("cp failed (%s); copying %s in Python", exc, src)
            await asyncio.to_thread(_copy_sparse, src, tmp)


# ---------------------------------------------------------------------------------------
# The cache


@dataclass
class _Part:
    """What has been hashed of `<key>.part`, kept between attempts to avoid re-reading it."""

    size: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)


class ImageCache:
    """Images ready for volumes, downloaded or decompressed once and kept (no eviction)."""

    def __init__(
        self,
        cache_dir: Path,
        *,
        attempts: int = ATTEMPTS,
        retry_delay: float = RETRY_DELAY,
        connect_timeout: float = CONNECT_TIMEOUT,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        self.dir = Path(cache_dir) / "image_cache"
        self.attempts = attempts
        self.retry_delay = retry_delay
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self._progress: Progress | None = None
        self._progress_users = 0

    def url_path(self, url: str) -> Path:
        """Where the image downloaded from `url` lives once ready."""
        return self.dir / _sha256_text(url)

    async def fetch(self, image: Image, progress: Progress | None = None) -> Path:
        """The path of `image`, ready to copy or to back an overlay (decompressed).

        `url` images are downloaded unless cached. An uncompressed `file` image is the file
        itself; a compressed one is decompressed once into the cache, keyed by its absolute
        path, modification time and size, so editing the file makes a new entry.
        """
        if image.url is not None:
            key = _sha256_text(image.url)
            url = image.url
            return await self._once(key, lambda: self._download(image, url, key, progress))
        if image.file is None:
            raise ImageError(f"image {image.name}: has neither 'url' nor 'file'")
        src, key = _file_key(image, image.file)
        if not image.compression:
            if image.sha256 is not None:
                # The marker names the digest too: a changed `sha256` in the spec re-checks.
                marker = f"{key}.{image.sha256}.ok"
                await self._once(marker, lambda: self._verify_file(image, src, marker))
            return src
        return await self._once(key, lambda: self._decompress_file(image, src, key))

    async def _once(self, key: str, produce: Callable[[], Awaitable[None]]) -> Path:
        final = self.dir / key
        if final.exists():
            return final
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if final.exists():
                return final
            self.dir.mkdir(parents=True, exist_ok=True)
            async with _flock(self.dir / f"{key}.lock", f"image cache entry {key}"):
                if final.exists():
                    return final
                _remove_stale_temps(self.dir, key)
                await produce()
        return final

    # -- file images -----------------------------------------------------------------

    async def _verify_file(self, image: Image, src: Path, marker: str) -> None:
        # The marker records a successful check for this path+mtime+size, so a large local
        # image is hashed once, not at every run.
        got = (await asyncio.to_thread(_hash_file, src)).hexdigest()
        if got != image.sha256:
            raise ChecksumError(
                f"image {image.name}: sha256 of {src} is {got}, expected {image.sha256}"
            )
        async with atomic_target(self.dir / marker) as tmp:
            tmp.write_text(got + "\n")

    async def _decompress_file(self, image: Image, src: Path, key: str) -> None:
        if image.sha256 is not None:
            got = (await asyncio.to_thread(_hash_file, src)).hexdigest()
            if got != image.sha256:
                raise ChecksumError(
                    f"image {image.name}: sha256 of {src} is {got}, expected {image.sha256}"
                )
        log.info("image %s: decompressing %s (%s)", image.name, src, image.compression)
        await self._install(image, src, src, self.dir / key)

    async def _install(self, image: Image, source: str | Path, data: Path, final: Path) -> None:
        started = time.monotonic()
        async with atomic_target(final) as tmp:
            try:
                size = await asyncio.to_thread(_decompress, data, tmp, image.compression)
            except _DECOMPRESS_ERRORS as exc:
                raise ImageError(
                    f"image {image.name}: decompressing {source} as {image.compression}"
                    f" failed: {exc}"
                ) from exc
        log.info(
            "image %s: decompressed to %s (%s) in %.1f s",
            image.name,
            final,
            _human(size),
            time.monotonic() - started,
        )

    # -- url images ------------------------------------------------------------------

    @contextlib.contextmanager
    def _reporter(self, image: Image, url: str, progress: Progress | None) -> Iterator[_Reporter]:
        if progress is not None:
            yield _RichReporter(progress, f"image {image.name}")
            return
        if not sys.stderr.isatty():
            yield _LogReporter(image.name, url)
            return
        # One shared live display: rich allows a single one at a time, and parallel
        # downloads would otherwise fight over the terminal.
        if self._progress is None:
            self._progress = _new_progress()
        if self._progress_users == 0:
            self._progress.start()
        self._progress_users += 1
        try:
            yield _RichReporter(self._progress, f"image {image.name}")
        finally:
            self._progress_users -= 1
            if self._progress_users == 0:
                self._progress.stop()
                self._progress = None

    async def _download(self, image: Image, url: str, key: str, progress: Progress | None) -> None:
        part_path = self.dir / f"{key}.part"
        meta_path = self.dir / f"{key}.part.json"
        final = self.dir / key
        started = time.monotonic()
        state = _Part()
        best = _size(part_path)
        failures = 0
        delay = self.retry_delay
        with self._reporter(image, url, progress) as reporter:
            async with aiohttp.ClientSession(
                timeout=self.timeout,
                # The bytes must arrive as published: a server sending `.gz` files with
                # Content-Encoding: gzip would otherwise have them decompressed in flight,
                # breaking the checksum, the Range offsets and our own decompression.
                auto_decompress=False,
            ) as session:
                while True:
                    try:
                        await self._attempt(
                            session, image, url, part_path, meta_path, state, reporter
                        )
                        break
                    except _Transient as exc:
                        size = _size(part_path)
                        if size > best:
                            # Progress was made: this is a flaky but working server.
                            best, failures, delay = size, 0, self.retry_delay
                        failures += 1
                        if failures >= self.attempts:
                            raise ImageError(
                                f"image {image.name}: downloading {url} failed after"
                                f" {failures} attempts without progress: {exc}"
                            ) from exc
                        wait = min(max(delay, exc.retry_after or 0.0), MAX_RETRY_DELAY)
                        log.warning(
                            "image %s: %s: %s; retrying in %.1f s (%d of %d)",
                            image.name,
                            url,
                            exc,
                            wait,
                            failures + 1,
                            self.attempts,
                        )
                        await asyncio.sleep(wait)
                        delay = min(delay * 2, MAX_RETRY_DELAY)
        got = state.digest.hexdigest()
        if image.sha256 is not None and got != image.sha256:
            _unlink(part_path, meta_path)
            raise ChecksumError(
                f"image {image.name}: sha256 of {url} is {got}, expected {image.sha256};"
                " the download was discarded"
            )
        log.info(
            "image %s: downloaded %s (%s) in %.1f s",
            image.name,
            url,
            _human(state.size),
            time.monotonic() - started,
        )
        if image.compression:
            try:
                await self._install(image, url, part_path, final)
            except ImageError:
                # Bytes that do not decompress would fail the same way at every run (a
                # complete part is never downloaded again), so they go.
                _unlink(part_path, meta_path)
                raise
            _unlink(part_path)
        else:
            await asyncio.to_thread(_publish, part_path, final)
        _unlink(meta_path)

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        image: Image,
        url: str,
        part_path: Path,
        meta_path: Path,
        state: _Part,
        reporter: _Reporter,
    ) -> None:
        offset = _size(part_path)
        if offset != state.size:
            # A part left by an earlier run (or a write that failed): hash what is on disk.
            state.digest = (
                await asyncio.to_thread(_hash_file, part_path) if offset else hashlib.sha256()
            )
            state.size = offset
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
            validator = _read_validator(meta_path)
            if validator:
                # The server answers 200 (whole file) instead of 206 if the file changed
                # since the part was started, so old and new bytes are never mixed.
                headers["If-Range"] = validator
        try:
            async with session.get(url, headers=headers) as resp:
                await self._receive(image, url, resp, offset, part_path, meta_path, state, reporter)
        except aiohttp.ClientResponseError as exc:
            raise _Transient(f"HTTP error {exc.status} {exc.message}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Transient(_describe(exc)) from exc

    async def _receive(
        self,
        image: Image,
        url: str,
        resp: aiohttp.ClientResponse,
        offset: int,
        part_path: Path,
        meta_path: Path,
        state: _Part,
        reporter: _Reporter,
    ) -> None:
        status = resp.status
        if status == 416 and offset:
            total = _content_range(resp.headers.get("Content-Range", ""))[2]
            if total == offset:
                return  # the previous run received everything but was stopped before renaming
            _unlink(part_path, meta_path)
            raise _Transient(f"the server cannot resume at byte {offset}; starting over")
        if status in RETRY_STATUSES or status >= 500:
            raise _Transient(
                f"HTTP {status} {resp.reason or ''}".rstrip(),
                _retry_after(resp.headers.get("Retry-After")),
            )
        if status == 206 and offset:
            start, _, total = _content_range(resp.headers.get("Content-Range", ""))
            if start != offset:
                _unlink(part_path)
                raise _Transient(f"the server resumed at byte {start}, not {offset}")
            mode = "ab"
        elif status == 200:
            if offset:
                log.info("image %s: the server cannot resume; starting over", image.name)
            offset = 0
            state.size, state.digest = 0, hashlib.sha256()
            _write_validator(meta_path, resp.headers)
            total = resp.content_length
            mode = "wb"
        else:
            raise ImageError(
                f"image {image.name}: GET {url} failed: HTTP {status} {resp.reason or ''}".rstrip()
            )
        if status == 206 and resp.content_length is not None:
            total = offset + resp.content_length
        reporter.start(total, offset)
        out: IO[bytes] = await asyncio.to_thread(open, part_path, mode)
        try:
            # Disk writes go to a thread in CHUNK-sized batches so a slow disk never stalls
            # the other downloads; what was received before a failure is still kept.
            buf = bytearray()
            try:
                async for chunk in resp.content.iter_chunked(CHUNK):
                    buf += chunk
                    reporter.advance(len(chunk))
                    if len(buf) >= CHUNK:
                        data = bytes(buf)
                        buf.clear()
                        await asyncio.to_thread(_append, out, state, data)
            finally:
                if buf:
                    await asyncio.to_thread(_append, out, state, bytes(buf))
        finally:
            await asyncio.to_thread(out.close)
        if total is not None and state.size != total:
            raise _Transient(f"connection closed after {state.size} of {total} bytes")


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    if isinstance(exc, TimeoutError) and not text:
        return "timed out waiting for data"
    return f"{name}: {text}" if text else name


def _content_range(value: str) -> tuple[int | None, int | None, int | None]:
    """`bytes 100-199/1000` -> (100, 199, 1000); unknown parts are None."""
    match = _CONTENT_RANGE.fullmatch(value.strip())
    if match is None:
        return None, None, None
    start, end, total = match.groups()
    return (
        int(start) if start else None,
        int(end) if end else None,
        int(total) if total and total != "*" else None,
    )


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _read_validator(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    validator = data.get("validator") if isinstance(data, dict) else None
    return validator if isinstance(validator, str) else None


def _write_validator(path: Path, headers: Mapping[str, str]) -> None:
    etag = headers.get("ETag")
    # Weak ETags are not allowed in If-Range (RFC 9110 §13.1.5).
    validator = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    if validator:
        path.write_text(json.dumps({"validator": validator}) + "\n")
    else:
        path.unlink(missing_ok=True)


__all__ = [
    "ATTEMPTS",
    "CONNECT_TIMEOUT",
    "READ_TIMEOUT",
    "RETRY_DELAY",
    "ChecksumError",
    "ImageCache",
    "ImageError",
    "atomic_target",
    "copy_image",
    "create_overlay",
    "image_format",
    "image_info",
    "qemu_img",
]
