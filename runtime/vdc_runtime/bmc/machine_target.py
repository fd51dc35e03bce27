"""A running `Machine` as its BMC sees it (`BmcTarget`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from vdc_runtime.bmc.media import MediaError, MediaState
from vdc_runtime.bmc.target import (
    BootOverride,
    BootTarget,
    PowerState,
    PowerStateError,
    SystemFacts,
    TargetError,
)
from vdc_runtime.nodes import cdrom
from vdc_runtime.nodes.layout import memory_bytes
from vdc_runtime.nodes.machine import Machine, NodeError, PowerError
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


def facts_of(machine: Machine) -> SystemFacts:
    node, layout = machine.node, machine.layout
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
    )


class MachineTarget:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self._facts = facts_of(machine)
        self._override = BootOverride(mode="uefi" if machine.node.uefi else "legacy")
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0  # of overrides set, so a late restore never undoes a newer one
        machine.reset_listeners.append(self._on_reset)

    @property
    def facts(self) -> SystemFacts:
        return self._facts

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
        await self._call(self.machine.control.reset())

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

    def _on_reset(self) -> None:
        """The boot that just began consumes a `once` override: it reads as disabled at
        once, and the node's own order comes back when the firmware has read this one."""
        if self._override.enabled != "once":
            return
        self._override = BootOverride(mode=self._override.mode)
        task = asyncio.get_running_loop().create_task(self._restore_order(self._generation))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

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


__all__ = ["BOOT_ORDERS", "MachineTarget", "facts_of"]
