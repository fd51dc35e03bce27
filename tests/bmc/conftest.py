"""A real machine for BMC front ends to drive: the test guest under TCG, booted directly.

The fixture starts QEMU through `nodes.Machine` exactly as `vdc run` does (no network, so
it needs neither root nor a fabric) and hands it over as a `BmcTarget`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.prereqs import require
from vdc_runtime.bmc.machine_target import MachineTarget
from vdc_runtime.bmc.users import BmcUser, Users
from vdc_runtime.ledger import Ledger
from vdc_runtime.nodes import DriveLayout, HostFacts, plan_node
from vdc_runtime.nodes.host import find_ovmf, find_ovmf_secure
from vdc_runtime.nodes.machine import Machine
from vdc_runtime.spec import load_text

# Accounts of the BMCs the suites start.
HOST = "127.0.0.1"
ADMIN = ("admin", "admin-pw")
OPERATOR = ("op", "op-pw")
VIEWER = ("viewer", "viewer-pw")
USERS = Users(
    (
        BmcUser(*ADMIN, "Administrator"),
        BmcUser(*OPERATOR, "Operator"),
        BmcUser(*VIEWER, "ReadOnly"),
    )
)

READY = "VDC-GUEST-READY"


@pytest.fixture(scope="session")
def guest() -> GuestPaths:
    return require.guest()


class RunningMachine:
    """The machine, its BMC target, and its console for assertions."""

    def __init__(self, machine: Machine, target: MachineTarget) -> None:
        self.machine = machine
        self.target = target

    @property
    def console(self) -> str:
        path = self.machine.layout.console_log
        return path.read_text(errors="replace") if path.exists() else ""

    async def wait_console(self, text: str, count: int = 1, within: float = 120) -> None:
        """Wait until `text` has appeared `count` times on the serial console."""
        deadline = time.monotonic() + within
        while self.console.count(text) < count:
            if time.monotonic() > deadline:
                tail = self.console[-2000:]
                raise AssertionError(f"{text!r} x{count} not on the console; tail:\n{tail}")
            await asyncio.sleep(0.2)


async def start_machine(
    guest: GuestPaths,
    tmp: Path,
    name: str = "bmc-node",
    *,
    disk: bool = False,
    smbios: str = "",
    memory: str = "256M",
    kernel: bool = True,
    drives: tuple[DriveLayout, ...] = (),
    uefi: bool = False,
    extra: str = "",
    cdrom: Path | None = None,
    smp: str = "{cpus: 1}",
) -> RunningMachine:
    """Start the test guest through `nodes.Machine`; `disk` adds a 1 MiB raw disk, so the
    node has a device whose boot index a boot override can move; `drives` come after it.
    Without `kernel` the node boots what its firmware finds on its drives; `uefi` makes
    it a q35 machine with OVMF. `extra` is more of the node's spec; `cdrom` an ISO in its
    CD drive at start."""
    # PVH (vmlinux) boots in half the time of the bzImage under TCG, and these suites boot
    # dozens of times; OVMF loads only the bzImage (its EFI stub).
    kernel_file = guest.vmlinuz if uefi else guest.vmlinux
    direct = f"kernel: {kernel_file}\ninitrd: {guest.initrd}\ncmdline: console=ttyS0 quiet"
    spec = f"""
kind: Node
name: {name}
{direct if kernel else ""}
{"uefi: true" + chr(10) + "machine: q35" if uefi else ""}
smp: {smp}
memory: {memory}
smbios:
  serial: SERIAL-{name}
{smbios}{extra}"""
    node = load_text(spec).nodes[0]
    run_dir = tmp / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    if disk:
        image = tmp / "disk.img"
        image.write_bytes(b"\0" * (1 << 20))
        drives = (DriveLayout("d", "raw", image, "raw", "writeback", read_only=False), *drives)
    ovmf = find_ovmf() if uefi else None
    secure = find_ovmf_secure() if uefi else None
    host = HostFacts(
        accel="tcg",
        vhost=False,
        mtu=None,
        ovmf_code=ovmf[0] if ovmf else None,
        ovmf_vars_template=ovmf[1] if ovmf else None,
        ovmf_secure_code=secure[0] if secure else None,
        ovmf_secure_vars_template=secure[1] if secure else None,
    )
    layout = plan_node(
        node,
        run_dir=run_dir,
        data_dir=tmp / "data",
        log_dir=tmp / "logs",
        drives=drives,
        host=host,
        cache_dir=tmp / "cache",
        cdrom=cdrom,
    )
    machine = Machine(node, layout, Ledger(run_dir), on_fatal=lambda reason: None)
    await machine.start()
    return RunningMachine(machine, MachineTarget(machine))


@pytest.fixture
async def machine(guest: GuestPaths, tmp_path: Path) -> AsyncIterator[RunningMachine]:
    """A running test guest (powered on, booting) with its `BmcTarget` as `.target`."""
    running = await start_machine(guest, tmp_path)
    try:
        yield running
    finally:
        await running.machine.stop()
