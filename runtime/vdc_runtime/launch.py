"""Starting the long-lived processes of a data center (QEMU, swtpm, apps), and knowing
when they end, whoever started them.

Standalone, they are this process's children (`LocalLauncher`). In a Kubernetes pod, the
holder starts them (`HolderLauncher`, see `vdc_runtime.holder`), so that they outlive the
agent's container. Either way, a process an earlier run or agent started is adopted by its
pid and start time and watched through a pidfd. Everything that uses a process sees one
`Launched`: its pid, whether it ended, and its exit status where anyone can know it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.holder.client import HolderClient, HolderError
from vdc_runtime.pids import process_start_time, process_started_at, running

STOP_GRACE = 5.0


# -- processes by pid (with `pids`) -------------------------------------------------------------


async def wait_gone(pid: int, start: int | None) -> None:
    """Return when the process exits, whoever's child it is: one an earlier run started,
    which this run adopts, cannot be awaited as a child; its pidfd becomes readable when
    it ends. (Its exit code goes to its reaper, not to us.) At once when it is gone
    already, or the pid now names another process (`start` differs)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not running(pid, start):
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


async def stop_process_group(pid: int, start: int | None, grace: float = STOP_GRACE) -> bool:
    """SIGTERM the group, SIGKILL it after `grace`; False if that process was already gone."""
    if start is not None and process_start_time(pid) != start:
        return False  # exited, and the pid may belong to someone else now
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    # Polling /proc: after a killed run the process is not our child, so nothing to await.
    while time.monotonic() < deadline and running(pid, start):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def open_output(path: Path) -> int:
    """A long-lived child's stdout and stderr: a file it appends to itself. Through a pipe,
    the child would die of SIGPIPE at its next line once this process is gone (killed, or
    restarted), and what it printed meanwhile would be lost; a file keeps both."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


# -- launched processes ------------------------------------------------------------------------


class Launched(Protocol):
    pid: int
    start: int | None

    @property
    def exited(self) -> bool: ...

    @property
    def returncode(self) -> int | None:
        """The exit status (-N: killed by signal N) once it ended, where it is known."""

    async def wait(self) -> int | None:
        """Wait until it ends; its exit status, or None where nobody can know it."""

    def close(self) -> None:
        """Stop watching it (it runs on: an adoption that failed lets it go)."""


class ChildProcess:
    """A child of this process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.start = process_start_time(proc.pid)

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int | None:
        return await self.proc.wait()

    def close(self) -> None:
        pass  # asyncio keeps watching its children whatever we do


class WatchedProcess:
    """A process that is not this one's child (the holder's, or an earlier run's): watched
    through a pidfd, its exit status asked of `status` (its parent's) once it ended."""

    def __init__(
        self,
        pid: int,
        start: int | None,
        status: Callable[[], Awaitable[int | None]] | None = None,
    ) -> None:
        self.pid, self.start = pid, start
        self._status = status
        self._code: int | None = None
        self._watch = asyncio.ensure_future(self._ended())

    async def _ended(self) -> int | None:
        await wait_gone(self.pid, self.start)
        if self._status is not None:
            with contextlib.suppress(HolderError):
                self._code = await self._status()
        return self._code

    @property
    def exited(self) -> bool:
        return self._watch.done()

    @property
    def returncode(self) -> int | None:
        return self._code

    async def wait(self) -> int | None:
        # Shielded: one waiter's cancellation must not end the watch for the others.
        return await asyncio.shield(self._watch)

    def close(self) -> None:
        self._watch.cancel()


class Launcher(Protocol):
    async def spawn(
        self,
        argv: Sequence[str],
        output: Path,
        *,
        label: str,
        netns: str | None = None,
        cwd: Path | None = None,
    ) -> Launched:
        """Start `argv` in its own session, stdin from /dev/null and its output appended
        to `output` (`open_output`), inside the named namespace if any."""

    def adopt(self, pid: int, start: int | None) -> Launched:
        """A process an earlier run or agent started, that runs still."""


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    # `nsenter --net` rather than `ip netns exec`, whose private mount namespace hides the
    # cgroup mounts some daemons need.
    return ["nsenter", f"--net={nsutil.netns_path(netns)}", "--", *argv]


class LocalLauncher:
    """Processes as children of this one (`vdc run`)."""

    async def spawn(
        self,
        argv: Sequence[str],
        output: Path,
        *,
        label: str,
        netns: str | None = None,
        cwd: Path | None = None,
    ) -> Launched:
        fd = await asyncio.to_thread(open_output, output)
        try:
            proc = await asyncio.create_subprocess_exec(
                *(in_netns(netns, argv) if netns is not None else argv),
                cwd=cwd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=asyncio.subprocess.STDOUT,
                # Its own session, so stopping its group also stops whatever it started.
                start_new_session=True,
            )
        finally:
            os.close(fd)
        return ChildProcess(proc)

    def adopt(self, pid: int, start: int | None) -> Launched:
        # Its exit status goes to whoever reaps it now (init): unknown here.
        return WatchedProcess(pid, start)


class HolderLauncher:
    """Processes started by the holder (`vdc agent` in a pod)."""

    def __init__(self, client: HolderClient) -> None:
        self.client = client

    async def spawn(
        self,
        argv: Sequence[str],
        output: Path,
        *,
        label: str,
        netns: str | None = None,
        cwd: Path | None = None,
    ) -> Launched:
        fd = await asyncio.to_thread(open_output, output)
        ns = None
        try:
            if netns is not None:
                ns = await asyncio.to_thread(nsutil.open_fd, netns)
            pid, start = await self.client.spawn(argv, fd, label=label, netns=ns, cwd=cwd)
        finally:
            os.close(fd)
            if ns is not None:
                os.close(ns)
        return self.adopt(pid, start)

    def adopt(self, pid: int, start: int | None) -> Launched:
        return WatchedProcess(pid, start, lambda: self.client.exit_status(pid))


__all__ = [
    "ChildProcess",
    "HolderLauncher",
    "Launched",
    "Launcher",
    "LocalLauncher",
    "WatchedProcess",
    "in_netns",
    "open_output",
    "process_start_time",
    "process_started_at",
    "running",
    "stop_process_group",
    "wait_gone",
]
