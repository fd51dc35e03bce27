"""What a killed run's faults leave behind, and undoing it when another run adopts the
data center.

A fault's timers and undo steps live in the run that applied it, but some of what it
changes outlives that run: a qdisc or a link set down in the kernel, a NIC without carrier,
a disk throttle or stopped vCPUs in a QEMU that keeps running, a chain in the run's inet
table. Each such change is written to the ledger as data (`fault-undo`) once it is made,
and `fault-cleared` once it is undone, so a run that adopts the machines after a SIGKILL
can put them back as they were before the fault: faults end with the run that made them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vdc_runtime.fabric import nft
from vdc_runtime.faults import kernel

if TYPE_CHECKING:
    from vdc_runtime.nodes.machine import Machine

log = logging.getLogger("vdc.faults")

UNDO = "fault-undo"
CLEARED = "fault-cleared"

Entry = dict[str, Any]


def pending(entries: list[Entry]) -> list[Entry]:
    """The undo records of faults not cleared, most recent first (the order to undo in)."""
    cleared = {e.get("fault") for e in entries if e.get("kind") == CLEARED}
    found = [e for e in entries if e.get("kind") == UNDO and e.get("fault") not in cleared]
    return found[::-1]


def without_records(entries: list[Entry]) -> list[Entry]:
    return [e for e in entries if e.get("kind") not in (UNDO, CLEARED)]


def in_kernel(leftovers: list[Entry]) -> list[Entry]:
    return [e for e in leftovers if "argv" in e or "nft" in e]


def in_machines(leftovers: list[Entry]) -> list[Entry]:
    return [e for e in leftovers if "qmp" in e]


async def undo_in_kernel(leftovers: list[Entry]) -> int:
    """Carry out the kernel's undo records; the number that failed (logged: a link that is
    gone took its qdisc with it)."""
    failed = 0
    for entry in in_kernel(leftovers):
        try:
            if "argv" in entry:
                await kernel.run([str(a) for a in entry["argv"]])
            else:
                await nft.apply(str(entry["nft"]))
        except (kernel.CommandError, nft.NftError, OSError) as exc:
            failed += 1
            log.warning("a killed run's fault %s: not undone: %s", entry.get("fault"), exc)
    return failed


async def undo_in_machines(leftovers: list[Entry], machines: Mapping[str, Machine]) -> int:
    """Carry out the QMP undo records on the adopted machines; the number that failed."""
    from vdc_runtime.nodes.errors import NodeError

    failed = 0
    for entry in in_machines(leftovers):
        machine = machines.get(str(entry.get("node")))
        if machine is None:
            continue
        try:
            await machine.control.execute(str(entry["qmp"]), entry.get("arguments") or None)
        except NodeError as exc:
            failed += 1
            log.warning("a killed run's fault %s: not undone: %s", entry.get("fault"), exc)
    return failed


__all__ = [
    "CLEARED",
    "UNDO",
    "in_kernel",
    "in_machines",
    "pending",
    "undo_in_kernel",
    "undo_in_machines",
    "without_records",
]
