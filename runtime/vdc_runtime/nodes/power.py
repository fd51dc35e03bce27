"""Power and boot order of a running QEMU, over QMP.

Power follows Placemat's model so existing tooling behaves the same: "off" pauses the
vCPUs (`stop`), "on" resets and resumes (`system_reset` + `cont`), so a machine powered
on always boots afresh. QEMU runs with `-no-shutdown`, so a guest that powers itself off
leaves QEMU alive in the `shutdown` state and can be powered on again.

The firmware is followed on the console log as well: a reset during SeaBIOS's first POST
would leave the machine running zeros (see `PowerControl._reset`), and a boot override is
consumed once the firmware has read the boot order (see `wait_boot_selected`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from vdc_runtime.nodes.errors import NodeError, PowerError
from vdc_runtime.nodes.layout import NodeLayout
from vdc_runtime.nodes.qemu_args import (
    CD_DEVICE_ID,
    boot_indexes,
    disk_device_id,
    nic_device_id,
)
from vdc_runtime.nodes.states import Power

log = logging.getLogger("vdc.nodes")

QMP_TIMEOUT = 10.0
"""For one QMP exchange: connecting, or a command and its answer."""
POST_TIMEOUT = 30.0
# What the firmware prints once it has read the boot order and picked a device: SeaBIOS,
# then OVMF's boot manager.
BOOT_SELECTED_MARKERS = (b"Booting from ", b"No bootable device", b"BdsDxe: ")


class PowerListener(Protocol):
    """What the machine learns from its power: changes with their cause, and resets."""

    def power_changed(self, power: Power, cause: str, *, always: bool = False) -> None:
        """`always`: record it even when the power stays the same (a reset)."""

    def reset_happened(self) -> None: ...


class PowerControl:
    """Power requests from any front end (BMCs, the API), one at a time, and the QMP events
    that tell what the guest itself did."""

    def __init__(
        self,
        name: str,
        layout: NodeLayout,
        *,
        uefi: bool,
        listener: PowerListener,
        unavailable: Callable[[], str | None],
    ) -> None:
        self.name = name
        self.layout = layout
        self.uefi = uefi
        self.listener = listener
        self._unavailable = unavailable
        """Why requests cannot be carried out now (the machine is not running), or None."""
        self._qmp: QMPClient | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._lock = asyncio.Lock()
        # The action in progress, so the QMP event it causes is recorded with its reason.
        self._cause: str | None = None
        self._post_done = asyncio.Event()
        self._boot_selected = asyncio.Event()
        self._firmware_wakeup = asyncio.Event()
        self._firmware_offset = 0
        self._firmware_tail = b""
        self._snapshotting = False
        """A snapshot pauses the machine: that is no power change a BMC should report."""
        self._hung = False
        """vCPUs stopped by a hang fault: the power stays on, as on a server that hangs."""
        self._cold_boot: Callable[[], Awaitable[None]] | None = None
        """Set while the machine has lost its power (no QEMU): powering on calls it."""
        self._relaunch: Callable[[], Awaitable[None]] | None = None
        """Set while the next boot needs a new QEMU (other firmware): booting calls it."""
        self._order: Sequence[str] | None = None
        """The boot order last asked for (None: the node's own)."""

    # -- the QEMU it talks to ------------------------------------------------------------

    def expect_boot(self) -> None:
        """A QEMU is about to start: its first POST is ahead (call before starting it, so
        that the console it writes is followed from its first byte)."""
        self._post_done.clear()
        self._watch_firmware_from_now()

    def adopted(self) -> None:
        """A QEMU a killed run started is taken over: its firmware is long past its first
        POST and its boot order was read."""
        self._post_done.set()
        self._boot_selected.set()

    def attach(self, qmp: QMPClient) -> None:
        """Talk to a newly started QEMU through `qmp`."""
        self._qmp = qmp
        if self.uefi:
            self._post_done.set()  # OVMF runs from flash: no shadowed BIOS to lose
        label = f"qemu/{self.name}"
        self._tasks.append(asyncio.create_task(self._events(qmp), name=f"events {label}"))
        self._tasks.append(asyncio.create_task(self._watch_firmware(), name=f"firmware {label}"))

    async def detach(self) -> None:
        """Stop following the QEMU (it is gone or going) and close the connection."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._qmp.disconnect(), 2)
            self._qmp = None

    def snapshot_pause(self) -> None:
        """The machine is about to be paused for a snapshot (or loaded from one)."""
        self._snapshotting = True

    def snapshot_done(self) -> None:
        self._snapshotting = False

    @property
    def qmp(self) -> QMPClient | None:
        return self._qmp

    def _changed(self, power: Power, cause: str, *, always: bool = False) -> None:
        if self._cause is not None:
            cause, self._cause = self._cause, None
        self.listener.power_changed(power, cause, always=always)

    async def _events(self, qmp: QMPClient) -> None:
        with contextlib.suppress(asyncio.CancelledError, QMPError, EOFError, OSError):
            async for event in qmp.events:
                name = event["event"]
                if name == "SHUTDOWN":
                    reason = event.get("data", {}).get("reason", "")
                    cause = f"guest shut down ({reason})" if reason else "guest shut down"
                    self._changed(Power.OFF, cause)
                elif name == "STOP" and not (self._snapshotting or self._hung):
                    self._changed(Power.OFF, "stopped")
                elif name == "RESUME" and not (self._snapshotting or self._hung):
                    self._changed(Power.ON, "resumed")
                elif name == "RESET":
                    self._watch_firmware_from_now()
                    self.listener.reset_happened()

    # -- the firmware, on the console log ------------------------------------------------

    def _watch_firmware_from_now(self) -> None:
        self._boot_selected.clear()
        path = self.layout.console_log
        self._firmware_offset = path.stat().st_size if path.exists() else 0
        self._firmware_tail = b""
        self._firmware_wakeup.set()

    async def _watch_firmware(self) -> None:
        """Follow the console log from each reset until the firmware has picked a device.

        The first POST after QEMU starts matters most: SeaBIOS turns the BIOS area into
        RAM before copying itself there, and QEMU's reset does not turn it back, so a
        reset in between leaves a machine running zeros forever (see `_reset`)."""
        path = self.layout.console_log
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await self._firmware_wakeup.wait()
                await asyncio.sleep(0.05)
                try:
                    with path.open("rb") as console:
                        console.seek(self._firmware_offset)
                        chunk = console.read()
                except FileNotFoundError:
                    continue
                self._firmware_offset += len(chunk)
                # The whole chunk is searched: the boot loader may print more than the
                # tail holds right after the marker, within one read.
                window = self._firmware_tail + chunk
                self._firmware_tail = window[-64:]
                if any(marker in window for marker in BOOT_SELECTED_MARKERS):
                    self._firmware_wakeup.clear()
                    self._boot_selected.set()
                    self._post_done.set()

    async def wait_boot_selected(self) -> None:
        """Wait until the firmware has read the boot order since the latest reset: QEMU
        hands the firmware the devices' `bootindex` as they are when it asks, not as they
        were at the reset."""
        await self._boot_selected.wait()

    # -- requests ------------------------------------------------------------------------

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """One QMP command, or NodeError naming the node and why."""
        why = self._unavailable()
        if why is not None or self._qmp is None:
            raise NodeError(f"node {self.name} is {why or 'not running'}")
        try:
            return await asyncio.wait_for(self._qmp.execute(command, arguments), QMP_TIMEOUT)
        except (TimeoutError, QMPError, OSError, EOFError) as exc:
            detail = str(exc) or type(exc).__name__
            raise NodeError(f"node {self.name}: QMP {command} failed: {detail}") from exc

    async def _reset(self) -> None:
        """`system_reset`, once the first POST is safely past (see `_watch_firmware`)."""
        if not self._post_done.is_set():
            if not (await self.execute("query-status")).get("running"):
                await self.execute("cont")  # let the interrupted POST finish first
            try:
                await asyncio.wait_for(self._post_done.wait(), POST_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "node %s: firmware still in its first POST; resetting anyway", self.name
                )
        await self.execute("system_reset")

    async def query_power(self) -> Power:
        """On, Off or Unknown, asked of QEMU (never raises)."""
        if self._cold_boot is not None:
            return Power.OFF
        if self._hung:
            return Power.ON
        try:
            status = await self.execute("query-status")
        except NodeError:
            return Power.UNKNOWN
        return Power.ON if status.get("running") else Power.OFF

    async def power_on(self) -> bool:
        """Boot the machine afresh if it is off; False if it was already on."""
        async with self._lock:
            if await self.query_power() == Power.ON:
                return False
            if self._cold_boot is not None:
                await self._cold_boot()
                return True
            if self._relaunch is not None:
                await self._boot_new_qemu()
                return True
            self._cause = "power on"
            await self._reset()
            await self.execute("cont")
            self._changed(Power.ON, "power on")
            return True

    async def power_off(self) -> bool:
        """Hard power off (vCPUs stopped); False if it was already off."""
        async with self._lock:
            if await self.query_power() == Power.OFF:
                return False
            self._hung = False
            self._cause = "power off"
            await self.execute("stop")
            self._changed(Power.OFF, "power off")
            return True

    async def restart(self) -> None:
        """Power off then on: the guest boots again whatever its state was."""
        async with self._lock:
            if self._cold_boot is not None:
                await self._cold_boot()
                return
            self._hung = False
            if self._relaunch is not None:
                await self._boot_new_qemu()
                return
            if await self.query_power() == Power.ON:
                self._cause = "restart"
                await self.execute("stop")
            self._cause = "restart"
            await self._reset()
            await self.execute("cont")
            self._changed(Power.ON, "restart")

    async def reset(self) -> None:
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is off; power it on instead of resetting it")
            hung, self._hung = self._hung, False
            if self._relaunch is not None:
                await self._boot_new_qemu()
                return
            await self._reset()
            if hung:
                await self.execute("cont")
            self.listener.power_changed(Power.ON, "reset", always=True)

    async def acpi_shutdown(self) -> None:
        """Press the power button: the guest's OS decides (Placemat paused the VM instead)."""
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is already off")
            await self.execute("system_powerdown")

    async def nmi(self) -> None:
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is off")
            await self.execute("inject-nmi")

    # -- faults --------------------------------------------------------------------------

    async def hang(self) -> None:
        """Stop the vCPUs while the power stays on: the BMC still answers, and says On."""
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is off: it cannot hang")
            self._hung = True
            await self.execute("stop")

    async def unhang(self) -> bool:
        """Let a hung machine run on; False if it no longer hangs (powered off or reset)."""
        async with self._lock:
            if not self._hung:
                return False
            self._hung = False
            await self.execute("cont")
            return True

    def unplug(self, cold_boot: Callable[[], Awaitable[None]] | None) -> None:
        """The machine's QEMU is going (power lost): report Off, and boot with
        `cold_boot` when powered on; None when it has its power again."""
        self._cold_boot = cold_boot
        self._hung = False

    def relaunch_at_next_boot(self, relaunch: Callable[[], Awaitable[None]] | None) -> None:
        """Boot with a new QEMU, started by `relaunch`, at the next power on, restart or
        reset asked of this control (a firmware change: a running QEMU keeps its own);
        None: with the running one, as usual. The guest rebooting itself keeps its QEMU."""
        self._relaunch = relaunch

    @property
    def relaunch_pending(self) -> bool:
        return self._relaunch is not None

    async def _boot_new_qemu(self) -> None:
        relaunch, self._relaunch = self._relaunch, None
        assert relaunch is not None
        await relaunch()
        # The new QEMU has the node's own boot order on its command line: the order asked
        # for is set again, and a reset has the firmware read it (as it has the BMC see
        # the boot begin); OVMF runs from flash, so an early reset is harmless.
        if self._order is not None:
            await self._apply_order(self._order)
        await self.execute("system_reset")

    async def set_boot_order(self, order: Sequence[str] | None) -> None:
        """Boot from `order` (None: the node's own `boot-order`) from the next reset on.

        QEMU rebuilds the firmware's `bootorder` file from the devices' `bootindex` at
        every reset, so changing the property now redirects the next boot, whoever
        causes it, without restarting QEMU.
        """
        async with self._lock:
            await self._apply_order(order)
            self._order = order

    async def _apply_order(self, order: Sequence[str] | None) -> None:
        nics, drives, cdrom = boot_indexes(self.layout, order)
        wanted = {nic_device_id(n.index): nics.get(n.index, -1) for n in self.layout.nics}
        wanted |= {disk_device_id(i): drives.get(i, -1) for i in range(len(self.layout.drives))}
        wanted[CD_DEVICE_ID] = cdrom if cdrom is not None else -1
        # QEMU refuses a bootindex another device holds, so clear them all first.
        for device in wanted:
            await self._set_bootindex(device, -1)
        for device, index in wanted.items():
            if index >= 0:
                await self._set_bootindex(device, index)

    async def _set_bootindex(self, device: str, index: int) -> None:
        path = f"/machine/peripheral/{device}"
        await self.execute("qom-set", {"path": path, "property": "bootindex", "value": index})


__all__ = ["BOOT_SELECTED_MARKERS", "PowerControl", "PowerListener"]
