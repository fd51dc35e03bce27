"""One node: its process and its power together, watched for the node's whole run.

`nodes.process` starts and stops QEMU (and swtpm); `nodes.power` drives the running QEMU
over QMP. This module owns what spans both: the lifecycle (starting, running, restarting
after a crash with `restart: on-failure`, failed, stopped), the record of power changes,
boots and readiness, the serial console, and the BMC address the guest announces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from vdc_runtime.launch import Launcher, process_started_at
from vdc_runtime.ledger import Ledger
from vdc_runtime.nodes import migration
from vdc_runtime.nodes.cdrom import CdDrive
from vdc_runtime.nodes.console import ConsoleHub
from vdc_runtime.nodes.errors import NodeError, PowerError
from vdc_runtime.nodes.layout import NodeLayout, with_secure_boot
from vdc_runtime.nodes.power import PowerControl
from vdc_runtime.nodes.process import QemuProcess
from vdc_runtime.nodes.states import MachineState, Power
from vdc_runtime.runstate import NodeRecord
from vdc_runtime.snapshot.manifest import MachineImage
from vdc_runtime.spec import Node

log = logging.getLogger("vdc.nodes")

RESTART_BACKOFF_MAX = 30.0
READINESS_WINDOW = 8192


@dataclass(frozen=True)
class Transition:
    at: float
    power: Power
    cause: str


class Machine:
    def __init__(
        self,
        node: Node,
        layout: NodeLayout,
        ledger: Ledger,
        on_fatal: Callable[[str], object],
        on_bmc_address: Callable[[Machine, str], Awaitable[None] | None] | None = None,
        launcher: Launcher | None = None,
        on_record: Callable[[], object] = lambda: None,
    ) -> None:
        self.node = node
        self.layout = layout
        self.on_fatal = on_fatal
        self.on_bmc_address = on_bmc_address
        self.on_record = on_record
        """Called as soon as what record() returns has changed (a boot, the guest ready, a
        BMC address announced), before anything else can see the change."""
        self.state = MachineState.STOPPED
        self.power = Power.OFF
        self.transitions: deque[Transition] = deque(maxlen=32)
        self.bmc_address: str | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.started_at: float | None = None
        self.failure: str | None = None
        self.process = QemuProcess(node, layout, ledger, launcher)
        self.control = PowerControl(
            node.name, layout, uefi=node.uefi, listener=self, unavailable=self._unavailable
        )
        """Power and boot order: what the BMCs and the API ask of the machine."""
        self.cdrom = CdDrive(
            node.name, layout, self.control, node.cdrom.image if node.cdrom else None
        )
        """The medium in the CD drive: the BMCs' virtual media."""
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._power_lost: asyncio.Event | None = None
        """Set while the machine has no power (a fault): its QEMU is gone until it is
        powered on, and the event fires when it is."""
        self.reset_listeners: list[Callable[[], object]] = []
        """Called after every reset of the machine (power on, reset, guest reboot)."""
        self.power_listeners: list[Callable[[Power, str], object]] = []
        """Called with the new power and its cause whenever the power changes."""
        self.console = ConsoleHub(node.name, layout.serial_socket, layout.console_socket)
        self.boots = 0
        """Times the machine started booting: QEMU starts, resets and reboots."""
        self.ready_at: float | None = None
        """When the guest met its readiness rule since its latest boot (None: not yet)."""
        self._launches = 0
        """QEMUs started, so the watcher knows a QEMU replaced on purpose from a crash."""
        self._replacing: asyncio.Event | None = None
        """Set while its QEMU is replaced by one with other firmware."""
        self._secure_boot_next = layout.secure_boot
        self._readiness = re.compile(node.readiness.console) if node.readiness else None
        self._console_window = ""
        self.console.subscribe(self._watch_readiness)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def ready(self) -> bool:
        """Running, powered on, and (with a readiness rule) showing its marker since the
        latest boot."""
        if self.state != MachineState.RUNNING or self.power != Power.ON:
            return False
        return self._readiness is None or self.ready_at is not None

    def _unavailable(self) -> str | None:
        return None if self.state == MachineState.RUNNING else str(self.state)

    def _booting(self) -> None:
        self.boots += 1
        self.ready_at = None
        self._console_window = ""
        self.on_record()

    def _watch_readiness(self, data: bytes) -> None:
        if self._readiness is None or self.ready_at is not None:
            return
        # A marker may arrive split over reads; a window of recent output catches it.
        window = (self._console_window + data.decode(errors="replace"))[-READINESS_WINDOW:]
        if self._readiness.search(window):
            self.ready_at = time.time()
            self._console_window = ""
            self.on_record()
            log.info("node %s: ready (its console matched %r)", self.name, self._readiness.pattern)
        else:
            self._console_window = window

    # -- what the power control reports (PowerListener) -----------------------------------

    def power_changed(self, power: Power, cause: str, *, always: bool = False) -> None:
        changed = power != self.power
        if changed:
            log.info("node %s: power %s (%s)", self.name, power, cause)
        if changed or always:
            self.power = power
            self.transitions.append(Transition(time.time(), power, cause))
        if changed:
            for listener in self.power_listeners:
                listener(power, cause)

    def reset_happened(self) -> None:
        self._booting()
        for listener in self.reset_listeners:
            listener()

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        self.state = MachineState.STARTING
        try:
            await self.console.serve()
            await self._launch()
        except BaseException:
            await self._kill_processes()
            await self.console.close()
            raise
        self.state = MachineState.RUNNING
        self._tasks.append(asyncio.create_task(self._watch(), name=f"watch {self.name}"))

    async def adopt(self, record: NodeRecord) -> None:
        """Take over the node's QEMU that a killed run started (`record`, from its run
        state), where start() would start one: its QMP and console again, its counts as
        that run left them. NodeError when it cannot be reached."""
        assert record.qemu is not None
        self.firmware_as(record.secure_boot, record.secure_boot_next)
        self.state = MachineState.STARTING
        try:
            await self.console.serve()
            self.control.adopted()
            qmp = await self.process.adopt(record.qemu, record.swtpm)
            self.control.attach(qmp)
            await self.console.attach()
        except BaseException:
            await self.control.detach()
            await self.console.close()
            raise
        await self._carry_on(record, process_started_at(record.qemu.start), "adopted")

    async def _carry_on(
        self, counts: NodeRecord | MachineImage, started_at: float | None, cause: str
    ) -> None:
        """A QEMU this run did not boot (adopted, or restored), from now on as any other:
        the counts it had, its power asked of it, its guest port read and its end watched."""
        self.restarts, self.boots, self.ready_at = counts.restarts, counts.boots, counts.ready_at
        self.bmc_address = counts.bmc_address
        self.started_at = started_at
        # Running first: the power control answers nothing for a machine still starting.
        self.state = MachineState.RUNNING
        self.power_changed(await self.control.query_power(), cause, always=True)
        self._tasks.append(
            asyncio.create_task(self._guest_port(), name=f"guest port qemu/{self.name}")
        )
        self._tasks.append(asyncio.create_task(self._watch(), name=f"watch {self.name}"))

    async def restore(self, image: MachineImage, state: Callable[[int], Awaitable[None]]) -> None:
        """Start the node's QEMU from a snapshot (its disks already put back): it waits
        for its state, which `state(fd)` feeds into the pipe end `fd` it is given, then
        runs on where it was paused (or stays paused, as it was)."""
        self.state = MachineState.STARTING
        try:
            await self.console.serve()
            self.control.adopted()  # its firmware is long past; no boot ahead
            self.control.snapshot_pause()
            qmp = await self.process.start(incoming=True)
            self.control.attach(qmp)
            await self.console.attach()
            self.state = MachineState.RUNNING  # the power control talks to running ones only
            read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
            feeding = asyncio.ensure_future(state(write_fd))
            try:
                await migration.load_state(self.control, read_fd)
            finally:
                os.close(read_fd)
                await feeding
            await migration.resume(self.control, image.runstate)
        except BaseException:
            self.control.snapshot_done()
            await self._kill_processes()
            await self.console.close()
            self.state = MachineState.FAILED
            raise
        await self._carry_on(image, time.time(), "restored")

    def record(self) -> NodeRecord:
        """What a later run needs to adopt this machine (`runstate`)."""
        alive = self.pid is not None
        return NodeRecord(
            qemu=self.process.qemu_ref if alive else None,
            swtpm=self.process.swtpm_ref if alive else None,
            restarts=self.restarts,
            boots=self.boots,
            ready_at=self.ready_at,
            bmc_address=self.bmc_address,
            secure_boot=self.secure_boot if self.layout.nvram is not None else None,
            secure_boot_next=self.secure_boot_next if self.layout.nvram is not None else None,
        )

    async def _launch(self, *, keep_media: bool = False) -> None:
        self.control.expect_boot()
        if not keep_media:
            self.cdrom.started()
        self._launches += 1
        qmp = await self.process.start()
        # Attached at once, so that a failure below still closes the connection.
        self.control.attach(qmp)
        self._booting()
        try:
            await self.console.attach()
        except (TimeoutError, OSError) as exc:
            raise NodeError(
                f"QEMU of node {self.name}: cannot connect to its serial console: {exc}"
            ) from exc
        self.started_at = time.time()
        self.power_changed(Power.ON, "started")
        self._tasks.append(
            asyncio.create_task(self._guest_port(), name=f"guest port qemu/{self.name}")
        )

    async def _guest_port(self) -> None:
        """Read what the guest writes to its `placemat` port: its BMC address, one per line."""
        try:
            reader, writer = await asyncio.open_unix_connection(str(self.layout.guest_socket))
        except OSError as exc:
            log.warning("node %s: cannot open the placemat port: %s", self.name, exc)
            return
        try:
            while line := await reader.readline():
                address = line.decode(errors="replace").strip()
                if not address or address == self.bmc_address:
                    continue
                log.info("node %s: guest announced BMC address %s", self.name, address)
                self.bmc_address = address
                self.on_record()
                if self.on_bmc_address is not None:
                    result = self.on_bmc_address(self, address)
                    if result is not None:
                        await result
        except asyncio.CancelledError:
            pass
        finally:
            writer.close()

    async def _watch(self) -> None:
        backoff = 1.0
        while True:
            launch = self._launches
            what, exit_code = await self.process.wait_exit()
            if self._stopping:
                return
            if self._replacing is not None:
                await self._replacing.wait()
            if self.state == MachineState.FAILED:
                return  # its replacement failed to start, and said so
            if self._launches != launch:
                continue  # replaced on purpose (other firmware): watch the new one
            if self._power_lost is not None:
                await self._power_lost.wait()
                continue
            if exit_code is not None:
                self.exit_code = exit_code
            detail = self.process.last_output()
            reason = f"node {self.name}: {what}" + (f" ({detail})" if detail else "")
            log.error("%s", reason)
            self.power_changed(Power.UNKNOWN, what)
            await self._kill_processes()
            if self.node.restart != "on-failure":
                self.state, self.failure = MachineState.FAILED, reason
                self.on_fatal(reason)
                return
            self.state = MachineState.RESTARTING
            uptime = time.time() - (self.started_at or time.time())
            backoff = 1.0 if uptime > RESTART_BACKOFF_MAX else min(backoff * 2, RESTART_BACKOFF_MAX)
            log.warning("node %s: restarting in %.0f s (restart: on-failure)", self.name, backoff)
            await asyncio.sleep(backoff)
            if self._stopping:
                return
            self.restarts += 1
            try:
                await self._launch()
            except NodeError as exc:
                await self._kill_processes()
                self.state, self.failure = MachineState.FAILED, str(exc)
                self.on_fatal(str(exc))
                return
            self.state = MachineState.RUNNING

    # -- power loss (a fault) ----------------------------------------------------------------

    @property
    def power_lost(self) -> bool:
        return self._power_lost is not None

    async def wait_power_back(self) -> None:
        """Return once a machine that lost its power is powered on again."""
        if self._power_lost is not None:
            await self._power_lost.wait()

    async def lose_power(self) -> None:
        """QEMU gone at once, as a server whose power is cut: the node is Off until it is
        powered on (BMC, API), which starts its QEMU afresh."""
        if self.state != MachineState.RUNNING or self._power_lost is not None:
            raise PowerError(f"node {self.name} is {self.state}; it has no power to lose")
        self._power_lost = asyncio.Event()
        self.control.unplug(self._power_back)
        await self._kill_processes()
        self.power_changed(Power.OFF, "power lost", always=True)

    async def _power_back(self) -> None:
        """Boot a machine that lost its power (the power control calls it, under its lock)."""
        lost = self._power_lost
        assert lost is not None
        self.control.unplug(None)
        try:
            await self._launch()
        except BaseException:
            await self._kill_processes()
            self.control.unplug(self._power_back)
            raise
        self._power_lost = None
        lost.set()

    # -- firmware --------------------------------------------------------------------------

    @property
    def secure_boot(self) -> bool:
        """Whether the running QEMU has OVMF's Secure Boot firmware with keys enrolled."""
        return self.layout.secure_boot

    @property
    def secure_boot_next(self) -> bool:
        """Whether the next power on, restart or reset boots with Secure Boot."""
        return self._secure_boot_next

    def set_secure_boot(self, enabled: bool) -> None:
        """UEFI Secure Boot on or off from the next power on, restart or reset (a BMC's
        setting): QEMU cannot change its firmware, so it is started again then, with the
        other firmware and its own variable store. NodeError if the node cannot have it."""
        if enabled:
            problem = secure_boot_problem(self.node.uefi, self.node.machine, self.layout)
            if problem is not None:
                raise NodeError(f"node {self.name}: {problem}")
        self._secure_boot_next = enabled
        change = enabled != self.layout.secure_boot
        self.control.relaunch_at_next_boot(self._new_firmware if change else None)
        log.info("node %s: Secure Boot %s from the next boot", self.name,
                 "on" if enabled else "off")  # fmt: skip

    def firmware_as(self, secure_boot: bool | None, secure_boot_next: bool | None) -> None:
        """Before it starts from a snapshot or is adopted: the firmware the machine ran,
        and the Secure Boot setting for its next boot (None: as the spec says). NodeError
        if this host cannot give it that firmware."""
        if self.layout.nvram is None:
            return
        if secure_boot is not None and secure_boot != self.layout.secure_boot:
            if secure_boot:
                problem = secure_boot_problem(self.node.uefi, self.node.machine, self.layout)
                if problem is not None:
                    raise NodeError(f"node {self.name}: {problem}")
            self._set_layout(with_secure_boot(self.layout, secure_boot))
            self._secure_boot_next = secure_boot
        if secure_boot_next is not None:
            self.set_secure_boot(secure_boot_next)

    def _set_layout(self, layout: NodeLayout) -> None:
        self.layout = self.process.layout = self.control.layout = self.cdrom.layout = layout

    async def _new_firmware(self) -> None:
        """Replace the QEMU with one running the other firmware (the power control calls
        it, under its lock). The medium in the CD drive stays in."""
        medium = self.cdrom.medium
        layout = replace(
            with_secure_boot(self.layout, self._secure_boot_next),
            cdrom=medium.path if medium is not None else None,
        )
        replacing = self._replacing = asyncio.Event()
        try:
            # SIGTERM: QEMU shuts down cleanly, and no QMP event of it reaches the
            # control, which is detached first (it is no power off of the guest's).
            await self._kill_processes()
            self._set_layout(layout)
            log.info("node %s: starting QEMU again with Secure Boot %s", self.name,
                     "on" if layout.secure_boot else "off")  # fmt: skip
            try:
                await self._launch(keep_media=True)
            except NodeError as exc:
                await self._kill_processes()
                self.state, self.failure = MachineState.FAILED, str(exc)
                self.power_changed(Power.UNKNOWN, "firmware change failed")
                self.on_fatal(str(exc))
                raise
        finally:
            self._replacing = None
            replacing.set()

    # -- stop ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop QEMU and swtpm and remove the run files; safe to call twice."""
        self._stopping = True
        await self.process.quit(self.control.qmp)
        await self._kill_processes()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        self._tasks.clear()
        await self.process.close()
        if self.state != MachineState.FAILED:
            self.state = MachineState.STOPPED
        await self.console.close()
        await asyncio.to_thread(self.process.clear_stale_files)

    async def release(self) -> None:
        """Let go of the machine without stopping it (an adoption that failed): its QEMU
        runs on for the next run to adopt."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await self.console.close()
        await self.control.detach()
        await self.process.release()

    async def _kill_processes(self) -> None:
        await self.console.detach()
        await self.control.detach()
        await self.process.kill()

    # -- views ---------------------------------------------------------------------------

    def uptime(self) -> float | None:
        if self.started_at is None or self.state != MachineState.RUNNING:
            return None
        return round(time.time() - self.started_at, 1)


def secure_boot_problem(uefi: bool, machine: str, layout: NodeLayout) -> str | None:
    """Why a node cannot boot with Secure Boot, or None if it can."""
    if not uefi:
        return "it boots a legacy BIOS, which has no Secure Boot"
    if machine != "q35":
        return "Secure Boot needs machine q35 (SMM), and it is a pc"
    if layout.host.ovmf_secure_code is None or layout.host.ovmf_secure_vars_template is None:
        return "no Secure Boot build of OVMF with keys enrolled was found on the host"
    return None


__all__ = ["Machine", "NodeError", "PowerError", "Transition", "secure_boot_problem"]
