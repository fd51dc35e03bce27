"""The node's CD drive: an ISO image fetched by URL and put in the running machine's drive.

Every node has the drive (see `qemu_args`), empty unless the spec names an image, so a
medium changes without a reboot: QMP `blockdev-change-medium` closes the tray on the new
image, `eject` opens it again. An image is downloaded in full into the node's own
directory under the cache dir before it goes in (a BMC that streams would leave the guest
reading from a web server that may go away), and checked on the way: its size against
`MAX_IMAGE_BYTES` (from Content-Length first, then as it arrives) and the ISO 9660 volume
descriptor signature once its first 32 KiB and a sector have arrived.

What goes wrong is a `MediaError` whose `kind` tells a front end which answer to give.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from vdc_runtime.nodes.errors import NodeError
from vdc_runtime.nodes.layout import NodeLayout
from vdc_runtime.nodes.power import PowerControl
from vdc_runtime.nodes.qemu_args import CD_DEVICE_ID

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("vdc.nodes")

MAX_IMAGE_BYTES = 16 << 30
"""Larger than any DVD (8.5 GB dual layer); a bigger file is not a CD image."""
ISO_SIGNATURE_OFFSET = 0x8001
"""ISO 9660: 16 sectors of system area, then the first volume descriptor, whose bytes
1-5 read CD001."""
ISO_SIGNATURE = b"CD001"
ISO_MIN_BYTES = 0x8000 + 2048
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
"""Between two chunks of a download: a server that stops sending fails the insertion."""
CHUNK = 1 << 20

MediaErrorKind = Literal["unreachable", "denied", "missing", "bad-image", "in-use", "bad-url"]
"""unreachable: no connection or a server error; denied: 401/403; missing: 404/410;
bad-image: not an ISO 9660 image or too large; in-use: a medium is in (or on its way);
bad-url: not an http(s) URL."""


class MediaError(NodeError):
    """A medium that cannot go in; `kind` says why, `url` which image."""

    def __init__(self, kind: MediaErrorKind, message: str, url: str) -> None:
        super().__init__(message)
        self.kind: MediaErrorKind = kind
        self.url = url


@dataclass(frozen=True)
class Medium:
    """The image in the drive: where it came from and the file QEMU reads."""

    url: str
    path: Path
    name: str
    user: str | None = None
    downloaded: bool = True
    """False for the spec's image, which belongs to the image cache, not to the drive."""


def check_url(url: str) -> str:
    """The scheme of an image URL (http or https); MediaError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise MediaError("bad-url", f"{url!r} is not an http or https URL", url)
    return parts.scheme


def check_iso_head(head: bytes, url: str) -> None:
    """The first bytes of an image must carry the ISO 9660 signature."""
    end = ISO_SIGNATURE_OFFSET + len(ISO_SIGNATURE)
    if len(head) < end or head[ISO_SIGNATURE_OFFSET:end] != ISO_SIGNATURE:
        raise MediaError(
            "bad-image",
            f"{url} is not an ISO 9660 image (no CD001 volume descriptor at byte 32769)",
            url,
        )


def check_iso_file(path: Path) -> None:
    """A file must be an ISO 9660 image: MediaError (kind bad-image) otherwise."""
    with path.open("rb") as image:
        check_iso_head(image.read(ISO_MIN_BYTES), str(path))


def check_size(size: int, url: str) -> None:
    if size > MAX_IMAGE_BYTES:
        raise MediaError(
            "bad-image",
            f"{url} is {size} bytes, more than the {MAX_IMAGE_BYTES} a CD/DVD image may have",
            url,
        )


def image_name(url: str) -> str:
    """The file name a URL ends with, as BMCs show it (ImageName)."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or urlsplit(url).hostname or url


async def download(
    url: str, dest: Path, *, user: str | None = None, password: str | None = None
) -> None:
    """Fetch `url` into `dest` (atomically: nothing is left there on failure), checked as an
    ISO image as it arrives."""
    import aiohttp  # only a node given media by URL needs an HTTP client

    check_url(url)
    headers = {}
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT
    )
    partial = dest.with_name(dest.name + ".part")
    try:
        # Certificates are not verified, as BMC firmware does by default: lab image servers
        # use their own.
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            session.get(url, headers=headers, ssl=False) as response,
        ):
            if response.status in (401, 403):
                raise MediaError("denied", f"{url}: the server answered {response.status}", url)
            if response.status in (404, 410):
                raise MediaError("missing", f"{url}: the server answered {response.status}", url)
            if response.status != 200:
                raise MediaError(
                    "unreachable", f"{url}: the server answered {response.status}", url
                )
            if response.content_length is not None:
                check_size(response.content_length, url)
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
            await _receive(response, partial, url)
        await asyncio.to_thread(os.replace, partial, dest)
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        detail = str(exc) or type(exc).__name__
        raise MediaError("unreachable", f"cannot download {url}: {detail}", url) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(partial.unlink)


async def _receive(response: aiohttp.ClientResponse, partial: Path, url: str) -> None:
    received = 0
    head = b""
    checked = False
    with partial.open("wb") as out:
        async for chunk in response.content.iter_chunked(CHUNK):
            received += len(chunk)
            check_size(received, url)
            if not checked:
                head += chunk
                if len(head) >= ISO_MIN_BYTES:
                    check_iso_head(head, url)
                    checked, head = True, b""
            out.write(chunk)
    if not checked:
        if received < ISO_MIN_BYTES:
            raise MediaError(
                "bad-image", f"{url} has {received} bytes, too few for an ISO 9660 image", url
            )
        check_iso_head(head, url)


class CdDrive:
    """The medium in one node's CD drive, changed over the machine's QMP connection."""

    def __init__(self, name: str, layout: NodeLayout, control: PowerControl, image: str | None):
        self.name = name
        self.layout = layout
        self.control = control
        self._initial = (
            Medium(layout.cdrom.as_uri(), layout.cdrom, image or layout.cdrom.name, None, False)
            if layout.cdrom is not None
            else None
        )
        self.medium = self._initial
        self._busy = False

    def started(self) -> None:
        """A new QEMU started from its command line: the spec's image (or none) is in, and
        what earlier QEMUs of the node were given is no longer read by anyone."""
        self.medium = self._initial
        if self.layout.media_dir is not None:
            shutil.rmtree(self.layout.media_dir, ignore_errors=True)

    async def insert(
        self, url: str, *, user: str | None = None, password: str | None = None
    ) -> Medium:
        """Download `url` and put it in the drive; MediaError if a medium is already in, one
        is on its way, or the image cannot be had; NodeError if QEMU fails."""
        check_url(url)
        if self.medium is not None or self._busy:
            shown = self.medium.url if self.medium is not None else "another image"
            raise MediaError("in-use", f"node {self.name}: {shown} is in the CD drive", url)
        if self.layout.media_dir is None:
            raise NodeError(f"node {self.name}: no directory to download media to")
        self._busy = True
        try:
            digest = hashlib.sha256(url.encode()).hexdigest()[:16]
            path = self.layout.media_dir / f"{digest}.iso"
            log.info("node %s: downloading %s for the CD drive", self.name, url)
            await download(url, path, user=user, password=password)
            try:
                await self.control.execute(
                    "blockdev-change-medium",
                    {
                        "id": CD_DEVICE_ID,
                        "filename": str(path),
                        "format": "raw",
                        "read-only-mode": "read-only",
                    },
                )
            except NodeError:
                await asyncio.to_thread(path.unlink, missing_ok=True)
                raise
            self.medium = Medium(url, path, image_name(url), user)
        finally:
            self._busy = False
        log.info("node %s: %s is in the CD drive", self.name, url)
        return self.medium

    async def eject(self) -> Medium | None:
        """Take the medium out (the guest's lock notwithstanding, as a BMC does); the
        medium taken out, None if the drive was empty."""
        medium = self.medium
        if medium is None:
            return None
        await self.control.execute("eject", {"id": CD_DEVICE_ID, "force": True})
        self.medium = None
        if medium.downloaded:
            await asyncio.to_thread(medium.path.unlink, missing_ok=True)
        log.info("node %s: %s ejected from the CD drive", self.name, medium.url)
        return medium


__all__ = [
    "MAX_IMAGE_BYTES",
    "CdDrive",
    "MediaError",
    "MediaErrorKind",
    "Medium",
    "check_iso_file",
    "check_iso_head",
    "check_url",
    "download",
    "image_name",
]
