"""A loopback HTTP server whose routes misbehave on demand, and image payloads."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from tests.loopback import serving
from vdc_runtime.spec import Image
from vdc_runtime.storage.images import ImageCache

_RANGE = re.compile(r"bytes=(\d+)-$")


def make_payload(size: int = 320 << 10) -> bytes:
    """Data with a run of zeros in the middle, like a disk image (exercises sparse writes)."""
    head = os.urandom(size // 3)
    return head + bytes(size // 3) + os.urandom(size - 2 * (size // 3))


PAYLOAD = make_payload()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Route:
    body: bytes
    ranges: bool = True
    chunked: bool = False
    statuses: list[int] = field(default_factory=list)
    """Answered (and consumed) before the body is served."""
    drop_after: int | None = None
    """On the first body response, close the connection after this many bytes."""
    delay: float = 0.0
    etag: str | None = None


@dataclass
class Hit:
    path: str
    headers: dict[str, str]


class Server:
    """Routes by path; every request is recorded in `hits`."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.base = ""

    def add(self, path: str, body: bytes, **options: object) -> str:
        self.routes[path] = Route(body, **options)  # type: ignore[arg-type]
        return self.base + path

    def hits_of(self, path: str) -> list[Hit]:
        return [hit for hit in self.hits if hit.path == path]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits.append(Hit(request.path, dict(request.headers)))
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="no such image\n")
        if route.delay:
            await asyncio.sleep(route.delay)
        if route.statuses:
            return web.Response(status=route.statuses.pop(0), text="not now\n")
        body, status, headers = route.body, 200, {}
        if route.etag:
            headers["ETag"] = route.etag
        match = _RANGE.match(request.headers.get("Range", ""))
        if_range = request.headers.get("If-Range")
        if match and route.ranges and (if_range is None or if_range == route.etag):
            start = int(match[1])
            if start >= len(body):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
            body = body[start:]
        if route.drop_after is not None:
            cut, route.drop_after = route.drop_after, None
            response = web.StreamResponse(status=status, headers=headers)
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[:cut])
            # Give the client time to read the bytes: aiohttp discards data still buffered
            # when it sees the connection end, as a real drop mid-transfer would not.
            await asyncio.sleep(0.1)
            assert request.transport is not None
            request.transport.close()  # flushes what was written, then hangs up
            return response
        if route.chunked:
            response = web.StreamResponse(status=status, headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(body), 50_000):
                await response.write(body[i : i + 50_000])
            await response.write_eof()
            return response
        return web.Response(status=status, body=body, headers=headers)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", srv.handle)
    async with serving(app) as srv.base:
        yield srv


@pytest.fixture
def cache(tmp_path: Path) -> ImageCache:
    return ImageCache(tmp_path / "cache", retry_delay=0.01)


def url_image(url: str, **fields: object) -> Image:
    return Image(name="img", url=url, **fields)  # type: ignore[arg-type]


def names(folder: Path) -> list[str]:
    """The sorted entries of `folder`; none if it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def cache_files(cache: ImageCache) -> list[str]:
    """Names in the cache dir other than lock files."""
    return [name for name in names(cache.dir) if not name.endswith(".lock")]


def make_qcow2(path: Path, size: str = "64M") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return path
