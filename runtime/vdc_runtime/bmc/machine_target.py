"""A running `Machine` as its BMC sees it (`BmcTarget`)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import struct
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TypeVar

from vdc_runtime.bmc.events import EventKind, EventLog, power_event
from vdc_runtime.bmc.media import MediaError, MediaState
from vdc_runtime.bmc.settings import BmcSettings
from vdc_runtime.bmc.target import (
    BootOverride,
    BootTarget,
    DriveFacts,
    PowerState,
    PowerStateError,
    SecureBootState,
    SystemFacts,
    TargetError,
)
from vdc_runtime.nodes import cdrom
from vdc_runtime.nodes.layout import DriveLayout, memory_bytes
from vdc_runtime.nodes.machine import Machine, NodeError, PowerError, secure_boot_problem
from vdc_runtime.spec import Node
from vdc_runtime.spec.identity import system_uuid

log = logging.getLogger("vdc.bmc")

T = TypeVar("T")

QEMU_DEFAULT_MEMORY_MIB = 128
RESTORE_WITHIN = 120.0  # a firmware that never picks a device still gets the order back

BOOT_ORDERS: dict[BootTarget, tuple[str, ...] | None] = {
    "pxe": ("network", "disk"),
    "uefi-http": ("network", "disk"),
    "hdd": ("disk", "network"),
    # An empty drive fails at once and the firmware goes on to the next device, as a
    # server's with an empty tray does.
    "cd": ("cdrom", "disk", "network"),
    # QEMU has no firmware setup to stop in: the node's own order.
    "bios-setup": None,
    "none": None,
}


def topology(node: Node) -> tuple[int, int, int]:
    """(sockets, cores per socket, threads per core) as QEMU lays the -smp out: what is not
    given is derived from the rest, and with nothing given every vCPU is a socket."""
    smp = node.smp
    if smp is None:
        return node.cpus, 1, 1
    total = smp.maxcpus or smp.cpus
    threads = smp.threads or 1
    dies = smp.dies or 1
    if smp.sockets and smp.cores:
        return smp.sockets, smp.cores * dies, threads
    if smp.cores:
        return max(1, total // (smp.cores * threads * dies)), smp.cores * dies, threads
    if smp.sockets:
        return smp.sockets, max(1, total // (smp.sockets * threads * dies)) * dies, threads
    if smp.threads:
        return max(1, total // threads), 1, threads
    return total, 1, 1


QCOW2_MAGIC = b"QFI\xfb"


def virtual_size(header: bytes, file_size: int, image_format: str | None = None) -> int:
    """A disk's size as the guest sees it: qcow2's from its header, a raw file's own.

    The header is read only where QEMU reads it too: a drive given `format=raw` is raw
    whatever the guest wrote at its start, and a guest must not make its BMC report another
    size by writing a qcow2 magic there."""
    if image_format == "raw":
        return file_size
    if header[:4] == QCOW2_MAGIC and len(header) >= 32:
        return int(struct.unpack(">Q", header[24:32])[0])
    return file_size


def drive_serial(node: str, drive: str) -> str:
    """A stable serial number for a disk (20 characters at most, as ATA and virtio have)."""
    return "VDC" + hashlib.sha256(f"{node}/{drive}".encode()).hexdigest()[:16].upper()


def drive_facts(node: str, drive: DriveLayout) -> DriveFacts:
    path = Path(drive.path)
    try:
        with path.open("rb") as f:
            header = f.read(32)
        size = virtual_size(header, path.stat().st_size, drive.format)
    except OSError:
        size = 0  # reported as an empty drive rather than failing the whole BMC
    return DriveFacts(drive.name, size, drive_serial(node, drive.name), drive.read_only)


def facts_of(machine: Machine) -> SystemFacts:
    node, layout = machine.node, machine.layout
    sockets, cores, threads = topology(node)
    smbios = node.smbios
    memory = memory_bytes(node.memory) // 2**20 if node.memory else QEMU_DEFAULT_MEMORY_MIB
    return SystemFacts(
        name=node.name,
        serial=layout.serial,
        uuid=system_uuid(node.name),
        manufacturer=(smbios.manufacturer if smbios else None) or "QEMU",
        model=(smbios.product if smbios else None) or "vdc virtual machine",
        memory_mib=memory,
        cpus=node.cpus,
        uefi=node.uefi,
        tpm=node.tpm,
        macs=tuple(nic.mac for nic in layout.nics),
        sockets=sockets,
        cores=cores,
        threads=threads,
        drives=tuple(drive_facts(node.name, d) for d in layout.drives),
        networks=tuple(nic.network for nic in layout.nics),
        secure_boot_capable=secure_boot_problem(node.uefi, node.machine, layout) is None,
    )


class MachineTarget:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._facts = facts_of(machine)
        self._override = BootOverride(mode="uefi" if machine.node.uefi else "legacy")
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0  # of overrides set, so a late restore never undoes a newer one
        self._events = EventLog()
        self._settings = BmcSettings(machine.node.uefi)
        self._hard_reset = False  # the next reset is the BMC's own, not the guest rebooting
        self._powered_up = False  # the next reset is the boot of a power on
        self._pxe = False  # ... of a network boot override
        self._boot_pending = False  # a boot event waits for the firmware to pick a device
        machine.reset_listeners.append(self._on_reset)
        machine.power_listeners.append(self._on_power)

    @property
    def facts(self) -> SystemFacts:
        return self._facts

    @property
    def events(self) -> EventLog:
        return self._events

    @property
    def settings(self) -> BmcSettings:
        return self._settings

    async def _call(self, action: Awaitable[T]) -> T:
        try:
            return await action
        except PowerError as exc:
            raise PowerStateError(str(exc)) from exc
        except NodeError as exc:
            raise TargetError(str(exc)) from exc

    async def power_state(self) -> PowerState:
        return await self.machine.control.query_power()  # type: ignore[return-value]

    async def power_on(self) -> bool:
        return await self._call(self.machine.control.power_on())

    async def power_off(self) -> bool:
        return await self._call(self.machine.control.power_off())

    async def power_cycle(self) -> None:
        await self._call(self.machine.control.restart())

    async def reset(self) -> None:
        self._hard_reset = True
        try:
            await self._call(self.machine.control.reset())
        except BaseException:
            self._hard_reset = False
            raise

    async def graceful_shutdown(self) -> None:
        await self._call(self.machine.control.acpi_shutdown())

    async def nmi(self) -> None:
        await self._call(self.machine.control.nmi())

    def boot_override(self) -> BootOverride:
        return self._override

    async def set_boot_override(self, override: BootOverride) -> None:
        if override.enabled == "disabled":
            override = BootOverride(target="none", enabled="disabled", mode=override.mode)
        self._generation += 1
        await self._call(self.machine.control.set_boot_order(BOOT_ORDERS[override.target]))
        self._override = override
        log.info(
            "node %s: next boot from %s (%s, %s)",
            self.machine.name,
            override.target,
            override.enabled,
            override.mode,
        )

    def virtual_media(self) -> MediaState:
        medium = self.machine.cdrom.medium
        if medium is None:
            return MediaState()
        return MediaState(image=medium.url, name=medium.name, user=medium.user)

    async def insert_media(
        self, url: str, *, user: str | None = None, password: str | None = None
    ) -> None:
        try:
            await self.machine.cdrom.insert(url, user=user, password=password)
        except cdrom.MediaError as exc:
            raise MediaError(exc.kind, str(exc), exc.url) from exc
        except NodeError as exc:
            raise TargetError(str(exc)) from exc

    def secure_boot(self) -> SecureBootState:
        machine = self.machine
        return SecureBootState(enabled=machine.secure_boot_next, current=machine.secure_boot)

    async def set_secure_boot(self, enabled: bool) -> None:
        try:
            self.machine.set_secure_boot(enabled)
        except NodeError as exc:
            raise TargetError(str(exc)) from exc

    async def eject_media(self) -> None:
        await self._call(self.machine.cdrom.eject())

    def console_subscribe(self, reader: Callable[[bytes], None]) -> Callable[[], None]:
        return self.machine.console.subscribe(reader)

    def console_write(self, data: bytes) -> None:
        self.machine.console.write(data)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_power(self, power: PowerState, cause: str) -> None:
        kind = power_event(power, cause)
        if kind is None:
            return
        self._events.add(kind, cause)
        if kind == "power-on":
            self._powered_up = True

    def _boot_kind(self) -> EventKind:
        if self._pxe:
            return "boot-pxe"
        if self._powered_up:
            return "boot-power-up"
        return "boot-hard-reset" if self._hard_reset else "boot-restart"

    async def _log_boot(self) -> None:
        """One boot event per boot: SeaBIOS resets the machine once more after a warm
        reset, and a power on resets it before its power changes, so the event is logged
        when the firmware picks a device, with the strongest cause seen since the reset."""
        try:
            async with asyncio.timeout(RESTORE_WITHIN):
                await self.machine.control.wait_boot_selected()
        except TimeoutError:
            pass
        finally:
            kind = self._boot_kind()
            self._boot_pending = self._powered_up = self._hard_reset = self._pxe = False
        self._events.add(kind)

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_reset(self) -> None:
        """The boot that just began consumes a `once` override: it reads as disabled at
        once, and the node's own order comes back when the firmware has read this one."""
        if self._override.enabled != "disabled" and self._override.target in ("pxe", "uefi-http"):
            self._pxe = True
        if not self._boot_pending:
            self._boot_pending = True
            self._spawn(self._log_boot())
        applied = self._settings.apply_pending()
        if applied:
            log.info("node %s: BIOS settings applied at reset: %s", self.machine.name, applied)
        if self._override.enabled != "once":
            return
        self._override = BootOverride(mode=self._override.mode)
        self._spawn(self._restore_order(self._generation))

    async def _restore_order(self, generation: int) -> None:
        try:
            async with asyncio.timeout(RESTORE_WITHIN):
                await self.machine.control.wait_boot_selected()
        except TimeoutError:
            log.warning("node %s: no boot seen; restoring its boot order anyway", self.machine.name)
        if generation != self._generation:
            return  # a newer override was set meanwhile: it stands
        try:
            await self.machine.control.set_boot_order(None)
        except NodeError as exc:
            log.warning("node %s: cannot restore the boot order: %s", self.machine.name, exc)


__all__ = ["BOOT_ORDERS", "MachineTarget", "drive_serial", "facts_of", "topology", "virtual_size"]
