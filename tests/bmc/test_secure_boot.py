"""UEFI Secure Boot turned on and off through Redfish, as a provisioner does, on a real
guest: the firmware really changes at the next reset, and the guest says so.

The node boots with OVMF from two media, in this order: a CD whose loader is an unsigned
GRUB (tests/guest/iso.py), then a disk with Debian's signed shim, GRUB and kernel
(tests/guest/signed.py). Without Secure Boot the firmware runs the CD's unsigned GRUB.
With it, the firmware refuses that loader and boots the signed chain instead, and the
guest's kernel reads the firmware's SecureBoot variable as 1.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.bmc.conftest import RunningMachine, start_machine
from tests.bmc.test_redfish import VIEWER, Bmc, serve_redfish
from tests.guest.build import GuestPaths
from tests.guest.iso import build_iso, iso_boots
from tests.guest.signed import SIGNED_MARKER, build_signed_disk
from tests.prereqs import require
from vdc_runtime.bmc.target import SecureBootState
from vdc_runtime.nodes import DriveLayout

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NODE = "sb-node"
SYSTEM = f"/redfish/v1/Systems/{NODE}"
SECURE_BOOT = f"{SYSTEM}/SecureBoot"
RESET = f"{SYSTEM}/Actions/ComputerSystem.Reset"
EFI = re.compile(r"VDC-GUEST-EFI secureboot=(\d)")
FIELDS = ("SecureBootEnable", "SecureBootCurrentBoot", "SecureBootMode")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningMachine]:
    require.iso_tools()
    tmp = tmp_path_factory.mktemp("secure-boot")
    iso = build_iso(guest, tmp / "unsigned.iso")
    signed = build_signed_disk(require.signed_loaders(), guest, tmp / "signed.img")
    running = await start_machine(
        guest,
        tmp,
        NODE,
        kernel=False,
        uefi=True,
        memory="512M",  # GRUB under OVMF cannot place the kernel in 256 MiB
        drives=(DriveLayout("signed", "raw", signed, "raw", "writeback", read_only=True),),
        extra="boot-order: [cdrom, disk]\n",
        cdrom=iso,
    )
    try:
        yield running
    finally:
        await running.machine.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bmc(node: RunningMachine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bmc]:
    async with serve_redfish(node, tmp_path_factory.mktemp("secure-boot-bmc")) as running:
        yield running


def secure_boot_seen(console: str) -> list[str]:
    """What the guest read from the firmware's SecureBoot variable, boot after boot."""
    return EFI.findall(console)


async def shown(bmc: Bmc) -> list[object]:
    body = await bmc.get(SECURE_BOOT)
    return [body[k] for k in FIELDS]


async def test_secure_boot_through_redfish(node: RunningMachine, bmc: Bmc) -> None:
    # Off: the unsigned GRUB on the CD runs and boots the guest, which sees no Secure Boot.
    await node.wait_console("VDC-GUEST-EFI", 1, within=300)
    assert secure_boot_seen(node.console) == ["0"]
    assert iso_boots(node.console) == 1
    assert await shown(bmc) == [False, "Disabled", "SetupMode"]
    assert not node.machine.layout.secure_boot

    # Turned on: nothing changes until the next reset.
    patch = await bmc.curl(SECURE_BOOT, method="PATCH", body={"SecureBootEnable": True})
    assert patch.status == 200, patch.body[:500]
    assert await shown(bmc) == [True, "Disabled", "SetupMode"]
    assert secure_boot_seen(node.console) == ["0"]

    # The reset starts QEMU again with OVMF's Secure Boot build and the variable store
    # with Microsoft's keys: the CD's unsigned GRUB is refused, Debian's signed chain runs.
    answer = await bmc.curl(RESET, method="POST", body={"ResetType": "ForceRestart"})
    assert answer.status == 204, answer.body[:500]
    await node.wait_console("VDC-GUEST-EFI", 2, within=300)
    assert secure_boot_seen(node.console) == ["0", "1"]
    second = node.console.split("VDC-GUEST-EFI")[1]
    assert iso_boots(second) == 0  # (the first boot's marker precedes the split)
    assert SIGNED_MARKER in second
    assert "Access Denied" in second or "Security Violation" in second, second[-3000:]
    assert await shown(bmc) == [True, "Enabled", "UserMode"]
    layout = node.machine.layout
    assert layout.secure_boot and layout.nvram is not None
    assert layout.nvram.name == f"{NODE}.secboot.fd"
    assert layout.cdrom is not None  # the CD stayed in through the firmware change

    # Off again: the plain firmware and its own store, and the unsigned CD boots again.
    patch = await bmc.curl(SECURE_BOOT, method="PATCH", body={"SecureBootEnable": False})
    assert patch.status == 200
    answer = await bmc.curl(RESET, method="POST", body={"ResetType": "PowerCycle"})
    assert answer.status == 204, answer.body[:500]
    await node.wait_console("VDC-GUEST-EFI", 3, within=300)
    assert secure_boot_seen(node.console) == ["0", "1", "0"]
    assert iso_boots(node.console) == 2
    assert await shown(bmc) == [False, "Disabled", "SetupMode"]
    assert node.machine.layout.nvram == Path(layout.nvram).with_name(f"{NODE}.fd")


async def test_secure_boot_refused_where_it_cannot_be(bmc: Bmc) -> None:
    wrong = await bmc.curl(SECURE_BOOT, method="PATCH", body={"SecureBootMode": "DeployedMode"})
    assert wrong.status == 400 and wrong.message_ids() == ["PropertyNotWritable"]
    viewer = await bmc.curl(
        SECURE_BOOT, method="PATCH", body={"SecureBootEnable": True}, user=VIEWER
    )
    assert viewer.status == 403


async def test_secure_boot_from_the_spec(guest: GuestPaths, tmp_path: Path) -> None:
    # `uefi-secure-boot: true`: the first boot already runs the Secure Boot firmware.
    signed = build_signed_disk(require.signed_loaders(), guest, tmp_path / "signed.img")
    running = await start_machine(
        guest,
        tmp_path,
        "sb-spec",
        kernel=False,
        uefi=True,
        memory="512M",
        drives=(DriveLayout("signed", "raw", signed, "raw", "writeback", read_only=True),),
        extra="uefi-secure-boot: true\n",
    )
    try:
        await running.wait_console("VDC-GUEST-EFI", 1, within=300)
        assert secure_boot_seen(running.console) == ["1"]
        assert SIGNED_MARKER in running.console
        assert running.target.secure_boot() == SecureBootState(enabled=True, current=True)
        assert running.target.facts.secure_boot_capable
    finally:
        await running.machine.stop()
