"""TCP port forwards from the host into a network namespace, owned by the running vdc.

Placemat's pmctl2 made a transient systemd unit running socat per forward; hosts without
systemd (containers, CI runners) could not use it, and forwards outlived the data center.
Here the run itself listens on the host and connects from inside the namespace: a socket
belongs to the namespace it is created in, so each outgoing socket is made by a worker
thread that briefly enters the namespace, and is then used from the event loop as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vdc_runtime.fabric import netns as nsutil

log = logging.getLogger("vdc.forward")


class ForwardError(ValueError):
    pass


def _socket_in_netns(netns: str, family: int) -> socket.socket:
    fd = nsutil.open_fd(netns)
    try:
        with nsutil.entered(fd):
            sock = socket.socket(family, socket.SOCK_STREAM)
    finally:
        os.close(fd)
    sock.setblocking(False)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@dataclass
class Forward:
    local_port: int
    netns: str
    remote_host: str
    remote_port: int
    bind: str = "127.0.0.1"
    server: asyncio.Server | None = field(default=None, repr=False)
    connections: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "local_port": self.local_port,
            "netns": self.netns,
            "remote_host": self.remote_host,
            "remote_port": self.remote_port,
            "bind": self.bind,
            "connections": self.connections,
        }

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            info = socket.getaddrinfo(self.remote_host, self.remote_port, type=socket.SOCK_STREAM)[
                0
            ]
            sock = await asyncio.to_thread(_socket_in_netns, self.netns, info[0])
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_connect(sock, info[4]), 10)
            r_reader, r_writer = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError) as exc:
            log.warning(
                "forward %d → %s:%s:%d: %s",
                self.local_port,
                self.netns,
                self.remote_host,
                self.remote_port,
                exc,
            )
            writer.close()
            return
        await asyncio.gather(_pipe(reader, r_writer), _pipe(r_reader, writer))


class Forwards:
    def __init__(
        self, known_netns: set[str], on_change: Callable[[], object] = lambda: None
    ) -> None:
        self.known_netns = known_netns
        self.items: dict[int, Forward] = {}
        self.on_change = on_change
        """Called once a forward was added or deleted, before the caller is answered."""

    async def add(
        self,
        local_port: int,
        netns: str,
        remote_host: str,
        remote_port: int,
        bind: str = "127.0.0.1",
    ) -> Forward:
        if netns not in self.known_netns:
            raise ForwardError(f"no network namespace named {netns!r} in this data center")
        if local_port in self.items:
            raise ForwardError(f"port {local_port} is already forwarded")
        for port in (local_port, remote_port):
            if not 0 < port < 65536:
                raise ForwardError(f"port {port} is out of range")
        fwd = Forward(local_port, netns, remote_host, remote_port, bind)
        try:
            fwd.server = await asyncio.start_server(
                fwd._handle, bind, local_port, reuse_address=True
            )
        except OSError as exc:
            raise ForwardError(f"cannot listen on {bind}:{local_port}: {exc.strerror}") from exc
        self.items[local_port] = fwd
        log.info("forward %s:%d → %s:%s:%d", bind, local_port, netns, remote_host, remote_port)
        self.on_change()
        return fwd

    async def delete(self, local_port: int) -> bool:
        fwd = self.items.pop(local_port, None)
        if fwd is None:
            return False
        if fwd.server is not None:
            # Not wait_closed(): from Python 3.12 it also waits for open connections.
            fwd.server.close()
        self.on_change()
        return True

    async def close(self) -> None:
        for port in list(self.items):
            await self.delete(port)
