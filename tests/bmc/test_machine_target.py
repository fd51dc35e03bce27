"""The Machine-backed BMC target: boot overrides land in the running QEMU, `once` is consumed
by the next reset, and power requests that do not fit the state are refused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.bmc.conftest import RunningMachine, start_machine
from tests.guest.build import GuestPaths
from vdc_runtime.bmc.target import BootOverride, PowerStateError
from vdc_runtime.nodes.machine import Machine

pytestmark = pytest.mark.slow


@pytest.fixture
async def with_disk(guest: GuestPaths, tmp_path: Path) -> AsyncIterator[RunningMachine]:
    """The test guest with one raw disk, so it has a device whose boot index can move."""
    running = await start_machine(guest, tmp_path, "t1", disk=True, memory="192M")
    try:
        yield running
    finally:
        await running.machine.stop()


async def disk_bootindex(machine: Machine) -> int:
    path = "/machine/peripheral/disk0"
    return await machine.control.execute("qom-get", {"path": path, "property": "bootindex"})


async def eventually(check, within: float = 10) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


async def test_boot_override_once_and_continuous(with_disk: RunningMachine) -> None:
    machine, target = with_disk.machine, with_disk.target
    assert await disk_bootindex(machine) == -1  # no boot-order: the firmware's default
    assert target.boot_override() == BootOverride(target="none", enabled="disabled")

    await target.set_boot_override(BootOverride(target="hdd", enabled="once"))
    assert await disk_bootindex(machine) == 1
    assert target.boot_override().enabled == "once"
    await target.reset()  # the boot that consumes it

    async def restored() -> bool:
        return target.boot_override().enabled == "disabled" and await disk_bootindex(machine) == -1

    await eventually(restored)

    await target.set_boot_override(BootOverride(target="pxe", enabled="continuous", mode="uefi"))
    assert await disk_bootindex(machine) == 1  # no NICs, so the disk still comes first
    await target.power_cycle()
    await asyncio.sleep(0.5)
    assert target.boot_override() == BootOverride(target="pxe", enabled="continuous", mode="uefi")
    await target.set_boot_override(BootOverride(target="hdd", enabled="disabled"))
    assert target.boot_override().target == "none"
    assert await disk_bootindex(machine) == -1


async def test_power_requests_that_do_not_fit_are_refused(machine: RunningMachine) -> None:
    target = machine.target
    assert await target.power_on() is False  # already on: nothing done
    assert await target.power_off() is True
    assert await target.power_state() == "Off"
    for request in (target.reset, target.graceful_shutdown, target.nmi):
        with pytest.raises(PowerStateError):
            await request()
    assert await target.power_off() is False
    await target.power_cycle()  # from off: boots again
    assert await target.power_state() == "On"
    await machine.wait_console("VDC-GUEST-READY")
    facts = target.facts
    assert (facts.name, facts.serial, facts.cpus, facts.memory_mib) == (
        "bmc-node",
        "SERIAL-bmc-node",
        1,
        256,
    )


async def test_a_reset_during_the_first_post_lets_it_finish(machine: RunningMachine) -> None:
    """SeaBIOS's first POST shadows itself into RAM; a reset in the middle of that leaves a
    machine that runs zeros forever (QEMU does not undo the shadowing). Off and on again at
    once must let that POST finish before the reset, and the machine must boot."""
    target = machine.target
    assert await target.power_off() is True  # within milliseconds of QEMU's start
    assert "Booting from" not in machine.console  # still in the first POST
    await target.power_on()
    await machine.wait_console("VDC-GUEST-READY")
    text = machine.console
    second_post = text.index("SeaBIOS", text.index("SeaBIOS") + 1)
    assert text.index("Booting from") < second_post
