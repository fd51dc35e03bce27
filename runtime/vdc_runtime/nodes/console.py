"""A node's serial console, shared: QEMU's one connection fanned out to every client.

QEMU's socket chardev serves one client at a time, so a second `vdc node enter`, or a BMC's
serial-over-LAN next to a person at the console, would wait for the first to leave. The
runtime holds QEMU's connection itself and serves the node's console socket (the path
Placemat's API reports), where any number of clients read everything the guest prints and
may type; in-process readers (serial-over-LAN) subscribe.

QEMU keeps writing the console log file on its own, whoever is connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("vdc.nodes")

MAX_BACKLOG = 1 << 20  # a client this far behind is dropped rather than slowing the guest
CONNECT_TIMEOUT = 10.0

Subscriber = Callable[[bytes], None]


class ConsoleHub:
    def __init__(self, name: str, qemu_socket: Path, public_socket: Path) -> None:
        self.name = name
        self.qemu_socket = qemu_socket
        self.public_socket = public_socket
        self._server: asyncio.base_events.Server | None = None
        self._qemu: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._subscribers: list[Subscriber] = []

    # -- lifecycle ----------------------------------------------------------------------

    async def serve(self) -> None:
        """Listen on the node's console socket (once per run)."""
        self.public_socket.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._client, str(self.public_socket))

    async def attach(self) -> None:
        """Connect to a freshly started QEMU's console (again after each restart of QEMU)."""
        await self.detach()
        reader, self._qemu = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.qemu_socket)), CONNECT_TIMEOUT
        )
        self._reader = asyncio.create_task(self._pump(reader), name=f"console {self.name}")

    async def detach(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None
        if self._qemu is not None:
            self._qemu.close()
            self._qemu = None

    async def close(self) -> None:
        await self.detach()
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            writer.close()
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        self.public_socket.unlink(missing_ok=True)

    # -- in-process readers and writers ----------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with everything the guest prints from now on; returns the
        function that stops it."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    def write(self, data: bytes) -> None:
        """Type `data` on the console (dropped while QEMU is not connected)."""
        if self._qemu is not None and data:
            self._qemu.write(data)

    # -- plumbing ------------------------------------------------------------------------------

    async def _pump(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                for writer in list(self._clients):
                    transport = writer.transport
                    if transport.get_write_buffer_size() > MAX_BACKLOG:
                        log.warning("node %s: a console client fell behind; dropped", self.name)
                        writer.close()
                        self._clients.discard(writer)
                        continue
                    writer.write(data)
                for subscriber in list(self._subscribers):
                    try:
                        subscriber(data)
                    except Exception:  # one broken reader must not stop the console
                        log.exception("node %s: console subscriber failed", self.name)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._clients.add(writer)
        try:
            while data := await reader.read(4096):
                self.write(data)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(writer)
            self._handlers.discard(task)
            writer.close()


__all__ = ["ConsoleHub"]
