"""ImageCache.fetch against a loopback server: resume, retries, checksums, decompression."""

from __future__ import annotations

import asyncio
import bz2
import gzip
import io
import logging
import lzma
import os
import sys
import time
from pathlib import Path

import pytest
import zstandard
from rich.console import Console
from rich.progress import Progress

from tests.images.conftest import PAYLOAD, Server, cache_files, sha256, url_image
from vdc_runtime.spec import Image
from vdc_runtime.storage.images import ChecksumError, ImageCache, ImageError


async def test_content_length_download(server: Server, cache: ImageCache) -> None:
    url = server.add("/disk.img", PAYLOAD)
    path = await cache.fetch(url_image(url, sha256=sha256(PAYLOAD)))
    assert path == cache.dir / sha256(url.encode())
    assert path.read_bytes() == PAYLOAD
    assert cache_files(cache) == [path.name]  # no .part, no temp files left


async def test_chunked_download(server: Server, cache: ImageCache) -> None:
    url = server.add("/chunked.img", PAYLOAD, chunked=True)
    path = await cache.fetch(url_image(url))
    assert path.read_bytes() == PAYLOAD


async def test_cached_second_fetch_makes_no_request(server: Server, tmp_path: Path) -> None:
    url = server.add("/disk.img", PAYLOAD)
    first = await ImageCache(tmp_path).fetch(url_image(url))
    second = await ImageCache(tmp_path).fetch(url_image(url))
    assert first == second
    assert len(server.hits_of("/disk.img")) == 1


async def test_dropped_connection_is_resumed_with_range(server: Server, cache: ImageCache) -> None:
    cut = 100_000
    url = server.add("/drop.img", PAYLOAD, drop_after=cut, etag='"v1"')
    path = await cache.fetch(url_image(url, sha256=sha256(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD
    hits = server.hits_of("/drop.img")
    assert len(hits) == 2
    assert "Range" not in hits[0].headers
    resumed_at = int(hits[1].headers["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut
    assert hits[1].headers["If-Range"] == '"v1"'


async def test_partial_file_of_earlier_run_is_resumed(server: Server, cache: ImageCache) -> None:
    url = server.add("/disk.img", PAYLOAD)
    key = sha256(url.encode())
    cache.dir.mkdir(parents=True)
    (cache.dir / f"{key}.part").write_bytes(PAYLOAD[:12345])
    path = await cache.fetch(url_image(url, sha256=sha256(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD
    assert [hit.headers.get("Range") for hit in server.hits_of("/disk.img")] == ["bytes=12345-"]


async def test_server_without_ranges_restarts(server: Server, cache: ImageCache) -> None:
    url = server.add("/norange.img", PAYLOAD, ranges=False)
    key = sha256(url.encode())
    cache.dir.mkdir(parents=True)
    (cache.dir / f"{key}.part").write_bytes(b"stale bytes that must not survive")
    path = await cache.fetch(url_image(url, sha256=sha256(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD


async def test_changed_file_is_not_mixed_with_old_part(server: Server, cache: ImageCache) -> None:
    url = server.add("/disk.img", PAYLOAD, etag='"new"')
    key = sha256(url.encode())
    cache.dir.mkdir(parents=True)
    (cache.dir / f"{key}.part").write_bytes(b"x" * 1000)
    (cache.dir / f"{key}.part.json").write_text('{"validator": "\\"old\\""}')
    path = await cache.fetch(url_image(url))
    assert path.read_bytes() == PAYLOAD
    assert server.hits_of("/disk.img")[0].headers["If-Range"] == '"old"'


async def test_complete_part_is_finished_after_416(server: Server, cache: ImageCache) -> None:
    url = server.add("/disk.img", PAYLOAD)
    key = sha256(url.encode())
    cache.dir.mkdir(parents=True)
    (cache.dir / f"{key}.part").write_bytes(PAYLOAD)
    path = await cache.fetch(url_image(url, sha256=sha256(PAYLOAD)))
    assert path.read_bytes() == PAYLOAD
    assert len(server.hits_of("/disk.img")) == 1


async def test_server_errors_are_retried(server: Server, cache: ImageCache) -> None:
    url = server.add("/flaky.img", PAYLOAD, statuses=[500, 503, 429])
    path = await cache.fetch(url_image(url))
    assert path.read_bytes() == PAYLOAD
    assert len(server.hits_of("/flaky.img")) == 4


async def test_retries_give_up(server: Server, tmp_path: Path) -> None:
    url = server.add("/down.img", PAYLOAD, statuses=[502] * 10)
    cache = ImageCache(tmp_path, attempts=3, retry_delay=0.01)
    with pytest.raises(ImageError, match=r"image img: downloading .*/down.img failed after 3"):
        await cache.fetch(url_image(url))
    assert len(server.hits_of("/down.img")) == 3
    assert cache_files(cache) == []


async def test_connection_refused_is_retried_then_fails(tmp_path: Path) -> None:
    cache = ImageCache(tmp_path, attempts=2, retry_delay=0.01)
    # Port 9 (discard) on loopback: nothing listens there on a test box.
    with pytest.raises(ImageError, match=r"failed after 2 attempts"):
        await cache.fetch(url_image("http://127.0.0.1:9/none.img"))


async def test_not_found_fails_at_once(server: Server, cache: ImageCache) -> None:
    url = f"{server.base}/missing.img"
    started = time.monotonic()
    with pytest.raises(ImageError) as info:
        await cache.fetch(url_image(url))
    assert time.monotonic() - started < 1
    message = str(info.value)
    assert "image img" in message and url in message and "404" in message
    assert len(server.hits_of("/missing.img")) == 1
    assert cache_files(cache) == []


@pytest.mark.parametrize(
    ("compression", "compress"),
    [
        ("gzip", gzip.compress),
        ("bzip2", bz2.compress),
        ("xz", lzma.compress),
        ("zstd", lambda data: zstandard.ZstdCompressor().compress(data)),
    ],
)
async def test_compressed_download(
    server: Server, cache: ImageCache, compression: str, compress: object
) -> None:
    packed = compress(PAYLOAD)  # type: ignore[operator]
    url = server.add(f"/disk.{compression}", packed)
    image = url_image(url, compression=compression, sha256=sha256(packed))
    path = await cache.fetch(image)
    assert path.read_bytes() == PAYLOAD
    assert cache_files(cache) == [path.name]


async def test_multi_member_gzip(server: Server, cache: ImageCache) -> None:
    packed = gzip.compress(PAYLOAD[:1000]) + gzip.compress(PAYLOAD[1000:])
    url = server.add("/multi.gz", packed)
    path = await cache.fetch(url_image(url, compression="gzip"))
    assert path.read_bytes() == PAYLOAD


async def test_decompressed_image_is_sparse(server: Server, tmp_path: Path) -> None:
    data = os.urandom(4096) + bytes(8 << 20) + os.urandom(4096)
    url = server.add("/sparse.gz", gzip.compress(data))
    path = await ImageCache(tmp_path).fetch(url_image(url, compression="gzip"))
    assert path.read_bytes() == data
    assert path.stat().st_blocks * 512 < 4 << 20


async def test_corrupt_compressed_data_is_a_clear_error(server: Server, cache: ImageCache) -> None:
    url = server.add("/bad.xz", b"this is not xz at all" * 100)
    with pytest.raises(ImageError, match=r"image img: decompressing .*/bad.xz as xz failed"):
        await cache.fetch(url_image(url, compression="xz"))
    assert cache_files(cache) == []  # the next run downloads again


async def test_wrong_checksum(server: Server, cache: ImageCache) -> None:
    url = server.add("/disk.img", PAYLOAD, etag='"v1"')
    with pytest.raises(ChecksumError) as info:
        await cache.fetch(url_image(url, sha256="0" * 64))
    message = str(info.value)
    assert "image img" in message and url in message and sha256(PAYLOAD) in message
    assert cache_files(cache) == []  # neither the image nor its .part nor .part.json


async def test_same_url_concurrently_downloads_once(server: Server, cache: ImageCache) -> None:
    url = server.add("/slow.img", PAYLOAD, delay=0.2)
    paths = await asyncio.gather(*(cache.fetch(url_image(url)) for _ in range(3)))
    assert len(set(paths)) == 1
    assert paths[0].read_bytes() == PAYLOAD
    assert len(server.hits_of("/slow.img")) == 1


async def test_two_caches_on_one_dir_download_once(server: Server, tmp_path: Path) -> None:
    # Separate ImageCache objects share nothing in memory: only the flock serialises them,
    # as it does for two vdc processes.
    url = server.add("/slow.img", PAYLOAD, delay=0.2)
    paths = await asyncio.gather(
        ImageCache(tmp_path).fetch(url_image(url)), ImageCache(tmp_path).fetch(url_image(url))
    )
    assert paths[0] == paths[1]
    assert len(server.hits_of("/slow.img")) == 1


async def test_different_images_download_in_parallel(server: Server, cache: ImageCache) -> None:
    urls = [server.add(f"/slow{i}.img", PAYLOAD, delay=0.5) for i in range(3)]
    started = time.monotonic()
    await asyncio.gather(*(cache.fetch(url_image(url)) for url in urls))
    assert time.monotonic() - started < 1.2  # one after the other would take 1.5 s


async def test_rich_progress(server: Server, cache: ImageCache) -> None:
    url = server.add("/disk.img", PAYLOAD)
    progress = Progress(console=Console(file=io.StringIO()))
    with progress:
        await cache.fetch(url_image(url), progress=progress)
    [task] = progress.tasks
    assert task.total == len(PAYLOAD) and task.completed == len(PAYLOAD)
    assert "img" in task.description


async def test_log_progress_without_tty(
    server: Server, cache: ImageCache, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add("/disk.img", PAYLOAD, chunked=True)
    caplog.set_level(logging.INFO, logger="vdc_runtime.storage.images")
    await cache.fetch(url_image(url))
    assert any("unknown size" in m for m in caplog.messages)
    assert any(m.startswith("image img: downloaded") for m in caplog.messages)


async def test_log_progress_in_tenths(
    server: Server, cache: ImageCache, caplog: pytest.LogCaptureFixture
) -> None:
    url = server.add("/disk.img", PAYLOAD)
    caplog.set_level(logging.INFO, logger="vdc_runtime.storage.images")
    await cache.fetch(url_image(url))
    tenths = [m for m in caplog.messages if " % (" in m]
    assert tenths and len(tenths) <= 10
    assert tenths[-1].startswith("image img: 100 %")


# -- file images ---------------------------------------------------------------------------


async def test_uncompressed_file_is_used_in_place(tmp_path: Path, cache: ImageCache) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(PAYLOAD)
    image = Image(name="local", file=src)
    assert await cache.fetch(image) == src
    assert cache_files(cache) == []


async def test_uncompressed_file_checksum(tmp_path: Path, cache: ImageCache) -> None:
    src = tmp_path / "disk.img"
    src.write_bytes(PAYLOAD)
    assert await cache.fetch(Image(name="local", file=src, sha256=sha256(PAYLOAD))) == src
    with pytest.raises(ChecksumError, match=r"image local: sha256 of .*disk.img is"):
        await cache.fetch(Image(name="local", file=src, sha256="1" * 64))


async def test_compressed_file_is_decompressed_into_the_cache(
    tmp_path: Path, cache: ImageCache
) -> None:
    src = tmp_path / "disk.img.xz"
    src.write_bytes(lzma.compress(PAYLOAD))
    image = Image(name="local", file=src, compression="xz")
    path = await cache.fetch(image)
    assert path.parent == cache.dir and path.read_bytes() == PAYLOAD
    assert await cache.fetch(image) == path  # same path+mtime+size: same entry

    # A rewritten file is a new entry, not the stale decompressed one.
    src.write_bytes(lzma.compress(PAYLOAD[::-1]))
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = await cache.fetch(image)
    assert changed != path and changed.read_bytes() == PAYLOAD[::-1]


async def test_missing_file_image(tmp_path: Path, cache: ImageCache) -> None:
    with pytest.raises(ImageError, match=r"image local: cannot read file .*nope.img"):
        await cache.fetch(Image(name="local", file=tmp_path / "nope.img"))


async def test_shared_progress_on_a_terminal(
    server: Server,
    cache: ImageCache,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # rich allows one live display at a time: parallel downloads must share the cache's.
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    caplog.set_level(logging.INFO, logger="vdc_runtime.storage.images")
    urls = [server.add(f"/tty{i}.img", PAYLOAD, delay=0.1) for i in range(2)]
    paths = await asyncio.gather(*(cache.fetch(url_image(url)) for url in urls))
    assert all(path.read_bytes() == PAYLOAD for path in paths)
    assert not any(" % (" in m for m in caplog.messages)  # the bar, not log lines
