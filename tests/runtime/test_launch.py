"""Waiting for a process that is not this one's child, as an adopting run must for the
machines and apps an earlier run started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time

from vdc_runtime.launch import process_start_time, wait_gone


def _grandchild(seconds: float) -> int:
    """A `sleep` whose parent exits at once: not this process's child."""
    out = subprocess.run(["sh", "-c", f"sleep {seconds} >/dev/null 2>&1 & echo $!"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out)


async def test_returns_when_a_process_of_another_parent_exits() -> None:
    pid = _grandchild(0.6)
    start = process_start_time(pid)
    t0 = time.monotonic()
    await asyncio.wait_for(wait_gone(pid, start), 10)
    assert 0.3 < time.monotonic() - t0 < 5


async def test_returns_at_once_for_a_process_gone_or_replaced() -> None:
    pid = _grandchild(30)
    try:
        start = process_start_time(pid)
        assert start is not None
        # The same pid with another start time is another process: nothing to wait for.
        await asyncio.wait_for(wait_gone(pid, start + 1), 1)
        waiting = asyncio.ensure_future(wait_gone(pid, start))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        os.kill(pid, signal.SIGTERM)
        await asyncio.wait_for(waiting, 5)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(wait_gone(pid, start), 1)
