"""The CLI's side of the REST API, and the interactive serial console."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import termios
import time
import tty
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ESCAPE = b"\x1d"  # Ctrl-], as telnet and virsh console use
DEFAULT_ENDPOINT = "http://localhost:10808"


class ClientError(RuntimeError):
    pass


def call(endpoint: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        endpoint.rstrip("/") + path, data=data, method=method,
        headers={"Content-Type": "application/json"} if data else {},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read()
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        raise ClientError(f"{method} {path}: {exc.code} {message}") from None
    except urllib.error.URLError as exc:
        raise ClientError(
            f"cannot reach vdc at {endpoint}: {exc.reason} (is `vdc run` running?)"
        ) from None
    return json.loads(text) if text else None


async def _console(socket_path: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(socket_path))
    loop = asyncio.get_running_loop()
    stdin_queue: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()
    loop.add_reader(fd, lambda: stdin_queue.put_nowait(os.read(fd, 1024)))

    async def to_guest() -> None:
        while True:
            data = await stdin_queue.get()
            if not data or ESCAPE in data:
                return
            writer.write(data)
            await writer.drain()

    async def from_guest() -> None:
        while data := await reader.read(4096):
            os.write(sys.stdout.fileno(), data)

    tasks = [asyncio.create_task(to_guest()), asyncio.create_task(from_guest())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        loop.remove_reader(fd)
        for task in tasks:
            task.cancel()
        writer.close()


def enter(socket_path: Path, name: str) -> None:
    """Attach the terminal to a node's serial console until Ctrl-] is pressed."""
    if not socket_path.exists():
        raise ClientError(
            f"console socket {socket_path} of node {name} not found (run this on the vdc host)"
        )
    saved = termios.tcgetattr(sys.stdin) if sys.stdin.isatty() else None
    try:
        if saved is not None:
            # TCSANOW, not setraw's default TCSAFLUSH: what was typed already is kept.
            tty.setraw(sys.stdin, termios.TCSANOW)
        # Said once the terminal is raw: from here every keystroke reaches the guest.
        sys.stderr.write(f"Connected to {name}'s console; press Ctrl-] to leave.\r\n")
        sys.stderr.flush()
        asyncio.run(_console(socket_path))
    except ConnectionRefusedError:
        raise ClientError(
            f"node {name}'s console refused the connection: is its run stopping?"
        ) from None
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
    print(f"\nLeft {name}'s console.", file=sys.stderr)


def fetch_log(endpoint: str, node: str, follow: bool) -> None:
    """The console log through the API, for a client without the host's files."""
    offset = 0
    while True:
        url = f"{endpoint.rstrip('/')}/nodes/{node}/console-log?offset={offset}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                data = response.read()
                offset = int(response.headers.get("X-Vdc-Next-Offset", offset + len(data)))
        except urllib.error.HTTPError as exc:
            raise ClientError(f"GET /nodes/{node}/console-log: {exc.code} {exc.reason}") from None
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach vdc at {endpoint}: {exc.reason}") from None
        if data:
            os.write(sys.stdout.fileno(), data)
            continue
        if not follow:
            return
        try:
            time.sleep(0.5)
        except KeyboardInterrupt:
            return


def show_log(path: Path, follow: bool) -> None:
    try:
        f = open(path, "rb")  # noqa: SIM115 - followed in a loop below
    except FileNotFoundError:
        raise ClientError(f"console log {path} not found (run this on the vdc host)") from None
    with f:
        while True:
            data = f.read(65536)
            if data:
                os.write(sys.stdout.fileno(), data)
                continue
            if not follow:
                return
            with contextlib.suppress(KeyboardInterrupt):
                time.sleep(0.2)
                continue
            return
