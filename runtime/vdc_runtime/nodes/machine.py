"""One running machine: its QEMU (and swtpm), power control over QMP, liveness.

Power follows Placemat's model so existing tooling behaves the same: "off" pauses the
vCPUs (`stop`), "on" resets and resumes (`system_reset` + `cont`), so a machine powered
on always boots afresh. QEMU runs with `-no-shutdown`, so a guest that powers itself off
leaves QEMU alive in the `shutdown` state and can be powered on again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from vdc_runtime.ledger import Ledger
from vdc_runtime.nodes.console import ConsoleHub
from vdc_runtime.nodes.layout import NodeLayout
from vdc_runtime.nodes.qemu_args import boot_indexes, disk_device_id, nic_device_id, qemu_argv
from vdc_runtime.nodes.states import MachineState, Power
from vdc_runtime.procs import process_start_time, stop_process_group
from vdc_runtime.spec import Node

log = logging.getLogger("vdc.nodes")

SOCKET_TIMEOUT = 30.0  # QEMU under TCG on a loaded 2-core host can take a while to start
QMP_TIMEOUT = 10.0
QUIT_GRACE = 5.0
RESTART_BACKOFF_MAX = 30.0
POST_TIMEOUT = 30.0
READINESS_WINDOW = 8192
# What the firmware prints once it has read the boot order and picked a device: SeaBIOS,
# then OVMF's boot manager.
BOOT_SELECTED_MARKERS = (b"Booting from ", b"No bootable device", b"BdsDxe: ")


class NodeError(RuntimeError):
    pass


class PowerError(NodeError):
    """A power request that does not fit the machine's state (e.g. reset while off)."""


@dataclass(frozen=True)
class Transition:
    at: float
    power: Power
    cause: str


async def _wait_for_socket(
    path: Path, proc: asyncio.subprocess.Process, what: str, tail: deque[str]
) -> None:
    """Wait until `path` exists, or fail at once when the process that makes it dies."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not path.exists():  # noqa: ASYNC240 - a stat every 20 ms
        if proc.returncode is not None:
            detail = " | ".join(list(tail)[-5:]) or "no output"
            raise NodeError(
                f"{what} exited with {proc.returncode} before creating {path}: {detail}"
            )
        if time.monotonic() > deadline:
            raise NodeError(f"{what} did not create {path} within {SOCKET_TIMEOUT:.0f} s")
        await asyncio.sleep(0.02)


async def _pump(stream: asyncio.StreamReader | None, prefix: str, tail: deque[str]) -> None:
    if stream is None:
        return
    logger = logging.getLogger(f"vdc.qemu.{prefix}")
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        tail.append(text)
        logger.info("%s", text, extra={"prefix": prefix})


class Machine:
    def __init__(
        self,
        node: Node,
        layout: NodeLayout,
        ledger: Ledger,
        on_fatal: Callable[[str], object],
        on_bmc_address: Callable[[Machine, str], Awaitable[None] | None] | None = None,
    ) -> None:
        self.node = node
        self.layout = layout
        self.ledger = ledger
        self.on_fatal = on_fatal
        self.on_bmc_address = on_bmc_address
        self.state = MachineState.STOPPED
        self.power = Power.OFF
        self.transitions: deque[Transition] = deque(maxlen=32)
        self.bmc_address: str | None = None
        self.restarts = 0
        self.exit_code: int | None = None
        self.started_at: float | None = None
        self.failure: str | None = None
        self._qemu: asyncio.subprocess.Process | None = None
        self._swtpm: asyncio.subprocess.Process | None = None
        self._qmp: QMPClient | None = None
        self._lock = asyncio.Lock()  # one power operation at a time, from any front end
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._stderr: deque[str] = deque(maxlen=50)
        # The action in progress, so the QMP event it causes is recorded with its reason.
        self._cause: str | None = None
        self.reset_listeners: list[Callable[[], object]] = []
        """Called after every reset of the machine (power on, reset, guest reboot)."""
        self.console = ConsoleHub(node.name, layout.serial_socket, layout.console_socket)
        # Firmware progress, read off the console log: whether this QEMU's first POST is
        # over (see `_reset`), and whether the firmware has picked a boot device since the
        # latest reset (see `wait_boot_selected`).
        self._post_done = asyncio.Event()
        self._boot_selected = asyncio.Event()
        self._firmware_wakeup = asyncio.Event()
        self._firmware_offset = 0
        self._firmware_tail = b""
        self.boots = 0
        """Times the machine started booting: QEMU starts, resets and reboots."""
        self.ready_at: float | None = None
        """When the guest met its readiness rule since its latest boot (None: not yet)."""
        self._readiness = re.compile(node.readiness.console) if node.readiness else None
        self._console_window = ""
        self.console.subscribe(self._watch_readiness)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def pid(self) -> int | None:
        return self._qemu.pid if self._qemu and self._qemu.returncode is None else None

    @property
    def ready(self) -> bool:
        """Running, powered on, and (with a readiness rule) showing its marker since the
        latest boot."""
        if self.state != MachineState.RUNNING or self.power != Power.ON:
            return False
        return self._readiness is None or self.ready_at is not None

    def _booting(self) -> None:
        self.boots += 1
        self.ready_at = None
        self._console_window = ""

    def _watch_readiness(self, data: bytes) -> None:
        if self._readiness is None or self.ready_at is not None:
            return
        # A marker may arrive split over reads; a window of recent output catches it.
        window = (self._console_window + data.decode(errors="replace"))[-READINESS_WINDOW:]
        if self._readiness.search(window):
            self.ready_at = time.time()
            self._console_window = ""
            log.info("node %s: ready (its console matched %r)", self.name, self._readiness.pattern)
        else:
            self._console_window = window

    def _set_power(self, power: Power, cause: str) -> None:
        if self._cause is not None:
            cause, self._cause = self._cause, None
        if power != self.power:
            self.power = power
            self.transitions.append(Transition(time.time(), power, cause))
            log.info("node %s: power %s (%s)", self.name, power, cause)

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

    def _clear_stale_files(self) -> None:
        # The run dir is locked by this run, so sockets here are a dead run's leftovers.
        for path in (self.layout.serial_socket, self.layout.qmp_socket, self.layout.guest_socket):
            path.unlink(missing_ok=True)
        if self.layout.tpm_dir is not None:
            shutil.rmtree(self.layout.tpm_dir, ignore_errors=True)

    async def _launch(self) -> None:
        layout = self.layout
        layout.run_dir.mkdir(parents=True, exist_ok=True)
        layout.console_log.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self._clear_stale_files)
        if layout.nvram is not None and not layout.nvram.exists():
            await asyncio.to_thread(self._create_nvram)
        if layout.tpm_socket is not None and layout.tpm_dir is not None:
            await self._start_swtpm(layout.tpm_dir, layout.tpm_socket)
        argv = qemu_argv(layout, self.node)
        log.debug("node %s: %s", self.name, " ".join(argv))
        self._post_done.clear()
        self._watch_firmware_from_now()
        self._stderr.clear()
        self._qemu = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
        label = f"qemu/{self.name}"
        self._record(self._qemu, label)
        self._tasks.append(asyncio.create_task(_pump(self._qemu.stdout, label, self._stderr)))
        what = f"QEMU of node {self.name}"
        await _wait_for_socket(layout.qmp_socket, self._qemu, what, self._stderr)
        try:
            self._qmp = await self._connect_qmp()
        except (TimeoutError, OSError, QMPError) as exc:
            # A QEMU that rejects its arguments still creates the socket first; its own
            # message says more than the failed handshake.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._qemu.wait(), 1)
            if self._qemu.returncode is not None:
                detail = " | ".join(list(self._stderr)[-3:]) or "no output"
                raise NodeError(f"{what} exited with {self._qemu.returncode}: {detail}") from exc
            raise NodeError(f"{what}: cannot connect to QMP at {layout.qmp_socket}: {exc}") from exc
        self._booting()
        try:
            await self.console.attach()
        except (TimeoutError, OSError) as exc:
            raise NodeError(f"{what}: cannot connect to its serial console: {exc}") from exc
        self.started_at = time.time()
        self._set_power(Power.ON, "started")
        self._tasks.append(asyncio.create_task(self._events(self._qmp), name=f"events {label}"))
        self._tasks.append(asyncio.create_task(self._guest_port(), name=f"guest port {label}"))
        if self.node.uefi:
            self._post_done.set()  # OVMF runs from flash: no shadowed BIOS to lose
        self._tasks.append(asyncio.create_task(self._watch_firmware(), name=f"firmware {label}"))

    async def _connect_qmp(self) -> QMPClient:
        # QEMU creates the socket file just before it listens on it: a refusal in that
        # window is retried while QEMU lives.
        assert self._qemu is not None
        deadline = time.monotonic() + QMP_TIMEOUT
        while True:
            client = QMPClient(self.name)
            try:
                await asyncio.wait_for(client.connect(str(self.layout.qmp_socket)), QMP_TIMEOUT)
                return client
            except (OSError, QMPError):
                if self._qemu.returncode is not None or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)

    def _record(self, proc: asyncio.subprocess.Process, label: str) -> None:
        self.ledger.record("process", pid=proc.pid, start=process_start_time(proc.pid), label=label)

    def _create_nvram(self) -> None:
        template = self.layout.host.ovmf_vars_template
        nvram = self.layout.nvram
        assert nvram is not None
        if template is None:
            raise NodeError(f"node {self.name} wants UEFI but no OVMF variables template was found")
        nvram.parent.mkdir(parents=True, exist_ok=True)
        tmp = nvram.with_suffix(".tmp")
        shutil.copyfile(template, tmp)
        os.replace(tmp, nvram)

    async def _start_swtpm(self, tpm_dir: Path, tpm_socket: Path) -> None:
        await asyncio.to_thread(tpm_dir.mkdir, parents=True, exist_ok=True)
        tail: deque[str] = deque(maxlen=20)
        try:
            self._swtpm = await asyncio.create_subprocess_exec(
                "swtpm", "socket", "--tpm2",
                "--tpmstate", f"dir={tpm_dir}",
                "--ctrl", f"type=unixio,path={tpm_socket}",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        except FileNotFoundError:
            raise NodeError(f"node {self.name} wants a TPM but swtpm is not installed") from None
        label = f"swtpm/{self.name}"
        self._record(self._swtpm, label)
        self._tasks.append(asyncio.create_task(_pump(self._swtpm.stdout, label, tail)))
        await _wait_for_socket(tpm_socket, self._swtpm, f"swtpm of node {self.name}", tail)

    # -- watching ------------------------------------------------------------------------

    async def _events(self, qmp: QMPClient) -> None:
        with contextlib.suppress(asyncio.CancelledError, QMPError, EOFError, OSError):
            async for event in qmp.events:
                name = event["event"]
                if name == "SHUTDOWN":
                    reason = event.get("data", {}).get("reason", "")
                    cause = f"guest shut down ({reason})" if reason else "guest shut down"
                    self._set_power(Power.OFF, cause)
                elif name == "STOP":
                    self._set_power(Power.OFF, "stopped")
                elif name == "RESUME":
                    self._set_power(Power.ON, "resumed")
                elif name == "RESET":
                    self._booting()
                    self._watch_firmware_from_now()
                    for listener in self.reset_listeners:
                        listener()

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
                self._firmware_tail = (self._firmware_tail + chunk)[-64:]
                if any(marker in self._firmware_tail for marker in BOOT_SELECTED_MARKERS):
                    self._firmware_wakeup.clear()
                    self._boot_selected.set()
                    self._post_done.set()

    async def wait_boot_selected(self) -> None:
        """Wait until the firmware has read the boot order since the latest reset: QEMU
        hands the firmware the devices' `bootindex` as they are when it asks, not as they
        were at the reset."""
        await self._boot_selected.wait()

    async def _reset(self) -> None:
        """`system_reset`, once the first POST is safely past (see `_watch_firmware`)."""
        if not self._post_done.is_set():
            if not (await self._execute("query-status")).get("running"):
                await self._execute("cont")  # let the interrupted POST finish first
            try:
                await asyncio.wait_for(self._post_done.wait(), POST_TIMEOUT)
            except TimeoutError:
                log.warning(
                    "node %s: firmware still in its first POST; resetting anyway", self.name
                )
        await self._execute("system_reset")

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
            qemu, swtpm = self._qemu, self._swtpm
            assert qemu is not None
            waits = [asyncio.ensure_future(qemu.wait())]
            if swtpm is not None:
                waits.append(asyncio.ensure_future(swtpm.wait()))
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()
            if self._stopping:
                return
            if qemu.returncode is not None:
                what = f"QEMU exited with {qemu.returncode}"
                self.exit_code = qemu.returncode
            else:
                what = f"swtpm exited with {swtpm.returncode if swtpm else '?'}"
            detail = " | ".join(list(self._stderr)[-3:])
            reason = f"node {self.name}: {what}" + (f" ({detail})" if detail else "")
            log.error("%s", reason)
            self._set_power(Power.UNKNOWN, what)
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
                self.state, self.failure = MachineState.FAILED, str(exc)
                self.on_fatal(str(exc))
                return
            self.state = MachineState.RUNNING

    # -- power ---------------------------------------------------------------------------

    async def _execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        if self._qmp is None or self.state != MachineState.RUNNING:
            raise NodeError(f"node {self.name} is {self.state}")
        try:
            return await asyncio.wait_for(self._qmp.execute(command, arguments), QMP_TIMEOUT)
        except (TimeoutError, QMPError, OSError, EOFError) as exc:
            detail = str(exc) or type(exc).__name__
            raise NodeError(f"node {self.name}: QMP {command} failed: {detail}") from exc

    async def query_power(self) -> Power:
        """On, Off or Unknown, asked of QEMU (never raises)."""
        try:
            status = await self._execute("query-status")
        except NodeError:
            return Power.UNKNOWN
        return Power.ON if status.get("running") else Power.OFF

    async def power_on(self) -> bool:
        """Boot the machine afresh if it is off; False if it was already on."""
        async with self._lock:
            if await self.query_power() == Power.ON:
                return False
            self._cause = "power on"
            await self._reset()
            await self._execute("cont")
            self._set_power(Power.ON, "power on")
            return True

    async def power_off(self) -> bool:
        """Hard power off (vCPUs stopped); False if it was already off."""
        async with self._lock:
            if await self.query_power() == Power.OFF:
                return False
            self._cause = "power off"
            await self._execute("stop")
            self._set_power(Power.OFF, "power off")
            return True

    async def restart(self) -> None:
        """Power off then on: the guest boots again whatever its state was."""
        async with self._lock:
            if await self.query_power() == Power.ON:
                self._cause = "restart"
                await self._execute("stop")
            self._cause = "restart"
            await self._reset()
            await self._execute("cont")
            self._set_power(Power.ON, "restart")

    async def reset(self) -> None:
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is off; power it on instead of resetting it")
            await self._reset()
            self.transitions.append(Transition(time.time(), Power.ON, "reset"))

    async def acpi_shutdown(self) -> None:
        """Press the power button: the guest's OS decides (Placemat paused the VM instead)."""
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is already off")
            await self._execute("system_powerdown")

    async def nmi(self) -> None:
        async with self._lock:
            if await self.query_power() != Power.ON:
                raise PowerError(f"node {self.name} is off")
            await self._execute("inject-nmi")

    async def set_boot_order(self, order: Sequence[str] | None) -> None:
        """Boot from `order` (None: the node's own `boot-order`) from the next reset on.

        QEMU rebuilds the firmware's `bootorder` file from the devices' `bootindex` at
        every reset, so changing the property now redirects the next boot, whoever
        causes it, without restarting QEMU.
        """
        nics, drives = boot_indexes(self.layout, order)
        wanted = {nic_device_id(n.index): nics.get(n.index, -1) for n in self.layout.nics}
        wanted |= {disk_device_id(i): drives.get(i, -1) for i in range(len(self.layout.drives))}
        async with self._lock:
            # QEMU refuses a bootindex another device holds, so clear them all first.
            for device in wanted:
                await self._set_bootindex(device, -1)
            for device, index in wanted.items():
                if index >= 0:
                    await self._set_bootindex(device, index)

    async def _set_bootindex(self, device: str, index: int) -> None:
        path = f"/machine/peripheral/{device}"
        await self._execute("qom-set", {"path": path, "property": "bootindex", "value": index})

    # -- stop ----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop QEMU and swtpm and remove the run files; safe to call twice."""
        self._stopping = True
        if self._qmp is not None and self._qemu is not None and self._qemu.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._qmp.execute("quit"), 2)
        if self._qemu is not None and self._qemu.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._qemu.wait(), QUIT_GRACE)
        await self._kill_processes()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        await asyncio.gather(*(t for t in self._tasks if t is not current), return_exceptions=True)
        self._tasks.clear()
        if self.state != MachineState.FAILED:
            self.state = MachineState.STOPPED
        await self.console.close()
        await asyncio.to_thread(self._clear_stale_files)

    async def _kill_processes(self) -> None:
        await self.console.detach()
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._qmp.disconnect(), 2)
            self._qmp = None
        for proc in (self._qemu, self._swtpm):
            if proc is not None and proc.returncode is None:
                await stop_process_group(proc.pid, None, grace=QUIT_GRACE)  # TERM, then KILL
                await proc.wait()

    # -- views ---------------------------------------------------------------------------

    def uptime(self) -> float | None:
        if self.started_at is None or self.state != MachineState.RUNNING:
            return None
        return round(time.time() - self.started_at, 1)
