"""The holder's wire format: one JSON object per SOCK_SEQPACKET message, with file
descriptors alongside as SCM_RIGHTS.

Descriptors are why this is a Unix socket of our own rather than HTTP: a process's output
file and its network namespace are handed over as open files, so the holder needs neither
the agent's mounts nor its paths for them (the containers' mount namespaces differ), and a
namespace stays alive for as long as the holder keeps its descriptor.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Sequence
from typing import Any

MAX_MESSAGE = 1 << 20
MAX_FDS = 250
"""The kernel passes at most 253 descriptors in one message (SCM_MAX_FD)."""
LOW_FD = 10
"""Received descriptors are moved at or above this, so that a child's descriptors 0-3 can
always be set with dup2 from a different number (a dup2 onto itself keeps close-on-exec)."""


class ProtocolError(RuntimeError):
    pass


Message = dict[str, Any]


def encode(message: Message) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"message of {len(data)} bytes is over {MAX_MESSAGE}")
    return data


def decode(data: bytes) -> Message:
    try:
        message = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"not a message: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"not a message: {type(message).__name__}")
    return message


def send(sock: socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    if len(fds) > MAX_FDS:
        raise ProtocolError(f"{len(fds)} descriptors in one message, at most {MAX_FDS}")
    data = encode(message)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)


def receive(sock: socket.socket) -> tuple[Message, list[int]]:
    """One message and its descriptors (close-on-exec, at or above LOW_FD; the caller
    owns them). ProtocolError for a closed connection or a cut message."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    fds = [_moved(fd) for fd in fds]
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        close_all(fds)
        raise ProtocolError("message cut short")
    if not data:
        close_all(fds)
        raise ProtocolError("connection closed")
    try:
        return decode(data), fds
    except ProtocolError:
        close_all(fds)
        raise


def _moved(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, LOW_FD)
    os.close(fd)
    return moved


def close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


__all__ = [
    "MAX_FDS",
    "Message",
    "ProtocolError",
    "close_all",
    "decode",
    "encode",
    "receive",
    "send",
]
