"""The agent's side of the holder (`holder.server`): one short connection per request.

The calls block on a Unix socket for a few milliseconds (descriptors cannot be passed
through asyncio's streams), so they run in worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from vdc_runtime.holder import protocol
from vdc_runtime.holder.protocol import Message, ProtocolError

READY_TIMEOUT = 60.0
"""How long the agent waits for the holder's container to listen: they start together."""


class HolderError(RuntimeError):
    pass


class HolderClient:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.holder_id: str | None = None
        """The holder's identity at the last answer (`Holder.id`)."""

    def _call(self, message: Message, fds: Sequence[int] = ()) -> tuple[Message, list[int]]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.connect(str(self.path))
            protocol.send(sock, message, fds)
            reply, reply_fds = protocol.receive(sock)
        except (OSError, ProtocolError) as exc:
            raise HolderError(f"holder at {self.path}: {message.get('op')}: {exc}") from exc
        finally:
            sock.close()
        if "error" in reply:
            protocol.close_all(reply_fds)
            if reply.get("errno") is not None:
                # The system's refusal (a program missing, not executable): an OSError, as
                # a child started here would raise it.
                raise OSError(reply["errno"], f"holder: {reply['error']}")
            raise HolderError(f"holder: {reply['error']}")
        if "holder" in reply:
            self.holder_id = reply["holder"]
        return reply, reply_fds

    async def call(self, message: Message, fds: Sequence[int] = ()) -> tuple[Message, list[int]]:
        return await asyncio.to_thread(self._call, message, fds)

    async def wait_ready(self, within: float = READY_TIMEOUT) -> str:
        """The holder's identity once it answers; HolderError after `within` seconds."""
        deadline = time.monotonic() + within
        while True:
            try:
                reply, _ = await self.call({"op": "state"})
                return str(reply["holder"])
            except HolderError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)

    async def spawn(
        self,
        argv: Sequence[str],
        output: int,
        *,
        label: str,
        netns: int | None = None,
        cwd: Path | None = None,
    ) -> tuple[int, int | None]:
        """Start `argv` in the holder, its output into the open file `output`, in the
        namespace `netns` (an open descriptor) if given; (pid, start time)."""
        fds = [output] if netns is None else [output, netns]
        message: Message = {
            "op": "spawn",
            "argv": list(argv),
            "label": label,
            "netns": netns is not None,
            "cwd": str(cwd) if cwd is not None else None,
            # The agent's, as its own children get: the holder's container has another.
            "env": dict(os.environ),
        }
        reply, _ = await self.call(message, fds)
        return int(reply["pid"]), reply.get("start")

    async def exit_status(self, pid: int, patience: float = 5.0) -> int | None:
        """The exit status of a process the holder started, once it ended; None when the
        holder does not know it (not its child, or a restarted holder). The holder waits up
        to `patience` seconds for it to be reaped."""
        reply, _ = await self.call({"op": "exit", "pid": pid, "timeout": patience})
        return int(reply["code"]) if reply.get("known") else None

    async def hold(self, name: str, fd: int) -> None:
        await self.call({"op": "hold", "name": name}, [fd])

    async def held(self) -> dict[str, int]:
        """The namespaces held, by name, as open descriptors the caller owns."""
        reply, fds = await self.call({"op": "held"})
        names = reply.get("names") or []
        if len(names) != len(fds):
            protocol.close_all(fds)
            raise HolderError(f"holder sent {len(fds)} namespaces for {len(names)} names")
        return dict(zip(names, fds, strict=True))

    async def release(self, names: Sequence[str] | None = None) -> None:
        """Stop holding these namespaces (all with None)."""
        await self.call({"op": "release", "names": None if names is None else list(names)})

    async def state(self) -> Message:
        reply, _ = await self.call({"op": "state"})
        return reply


def close_quietly(fds: dict[str, int]) -> None:
    for fd in fds.values():
        with contextlib.suppress(OSError):
            os.close(fd)


__all__ = ["HolderClient", "HolderError", "close_quietly"]
