"""A machine's RAM and device state into a stream and back (snapshots, issue 2-6), over
QMP with QEMU's own migration.

QEMU 7.2 (Debian bookworm's) migrates to a file only through a descriptor it is handed
(`getfd`, then the `fd:` URI; the `file:` URI came with 8.2): the state goes through a
pipe, which the caller reads and compresses as it arrives, so nothing of RAM's size is
ever written uncompressed. A restore feeds the decompressed state to a QEMU started with
`-incoming defer` the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

from vdc_runtime.nodes.errors import NodeError
from vdc_runtime.nodes.power import PowerControl

FD_NAME = "vdc-snapshot"
MIGRATION_TIMEOUT = 600.0
POLL = 0.05
RunState = Literal["running", "paused", "shutdown"]


def _runstate(status: dict[str, Any]) -> RunState:
    """The part of QEMU's runstate a snapshot keeps: whether to let the guest run on."""
    if status.get("running"):
        return "running"
    return "shutdown" if status.get("status") == "shutdown" else "paused"


async def pause(control: PowerControl) -> RunState:
    """Stop the vCPUs (QEMU flushes the disks before it answers); what the machine was."""
    before = _runstate(await control.execute("query-status"))
    if before == "running":
        control.snapshot_pause()
        await control.execute("stop")
    return before


async def resume(control: PowerControl, before: RunState) -> None:
    """Let the guest run on if it ran (a migrated QEMU is `postmigrate`, which `cont`
    leaves as well)."""
    if before == "running":
        await control.execute("cont")
    control.snapshot_done()


async def _hand_over(control: PowerControl, fd: int) -> None:
    qmp = control.qmp
    if qmp is None:
        raise NodeError(f"node {control.name} is not running")
    with contextlib.suppress(Exception):
        await control.execute("closefd", {"fdname": FD_NAME})  # a failed save's
    qmp.send_fd_scm(fd)
    await control.execute("getfd", {"fdname": FD_NAME})


async def _wait(control: PowerControl, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + MIGRATION_TIMEOUT
    while True:
        state = await control.execute("query-migrate")
        status = state.get("status")
        if status == "completed":
            return state  # type: ignore[no-any-return]
        if status in ("failed", "cancelled"):
            detail = state.get("error-desc") or status
            raise NodeError(f"node {control.name}: {what} failed: {detail}")
        if time.monotonic() > deadline:
            with contextlib.suppress(NodeError):
                await control.execute("migrate_cancel")
            raise NodeError(f"node {control.name}: {what} took over {MIGRATION_TIMEOUT:.0f} s")
        await asyncio.sleep(POLL)


async def save_state(control: PowerControl, fd: int) -> dict[str, Any]:
    """Write the paused machine's state into `fd` (the write end of a pipe, which QEMU
    closes when done; the caller closes its own copy once this returns)."""
    blocked = (await control.execute("query-migrate")).get("blocked-reasons")
    if blocked:
        raise NodeError(f"node {control.name} cannot be saved: {'; '.join(blocked)}")
    await _hand_over(control, fd)
    await control.execute("migrate", {"uri": f"fd:{FD_NAME}"})
    return await _wait(control, "saving its state")


async def load_state(control: PowerControl, fd: int) -> None:
    """Read the state of a QEMU started with `-incoming defer` from `fd` (the read end of
    a pipe fed by the caller). QEMU 7.2 exits when the state does not fit it."""
    await _hand_over(control, fd)
    await control.execute("migrate-incoming", {"uri": f"fd:{FD_NAME}"})
    await _wait(control, "loading its state")


__all__ = ["RunState", "load_state", "pause", "resume", "save_state"]
