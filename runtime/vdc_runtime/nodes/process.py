"""A node's processes: its QEMU and, with a TPM, its swtpm.

Starting them (with the files they need), knowing when one dies, and stopping them. What
runs inside, power and boot order, is `nodes.power`'s, over the QMP connection that
`start` hands back; the node's lifecycle around both is `nodes.machine`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from pathlib import Path

from qemu.qmp import QMPClient
from qemu.qmp.error import QMPError

from vdc_runtime.launch import Launched, Launcher, LocalLauncher, stop_process_group
from vdc_runtime.ledger import Ledger
from vdc_runtime.nodes.errors import NodeError
from vdc_runtime.nodes.layout import NodeLayout
from vdc_runtime.nodes.power import QMP_TIMEOUT
from vdc_runtime.nodes.qemu_args import qemu_argv
from vdc_runtime.procs import OutputFollower
from vdc_runtime.runstate import ProcessRef
from vdc_runtime.spec import Node

log = logging.getLogger("vdc.nodes")

SOCKET_TIMEOUT = 30.0  # QEMU under TCG on a loaded 2-core host can take a while to start
QUIT_GRACE = 5.0


def _exited(proc: Launched) -> str:
    return "exited" if proc.returncode is None else f"exited with {proc.returncode}"


async def _wait_for_socket(path: Path, proc: Launched, what: str, output: OutputFollower) -> None:
    """Wait until `path` exists, or fail at once when the process that makes it dies."""
    deadline = time.monotonic() + SOCKET_TIMEOUT
    while not path.exists():  # noqa: ASYNC240 - a stat every 20 ms
        if proc.exited:
            detail = " | ".join(output.last(5)) or "no output"
            raise NodeError(f"{what} {_exited(proc)} before creating {path}: {detail}")
        if time.monotonic() > deadline:
            raise NodeError(f"{what} did not create {path} within {SOCKET_TIMEOUT:.0f} s")
        await asyncio.sleep(0.02)


class QemuProcess:
    """One node's QEMU (and swtpm), started again by each `start` after the last died."""

    def __init__(
        self, node: Node, layout: NodeLayout, ledger: Ledger, launcher: Launcher | None = None
    ) -> None:
        self.node = node
        self.layout = layout
        self.ledger = ledger
        self.launcher: Launcher = launcher if launcher is not None else LocalLauncher()
        self._qemu: Launched | None = None
        self._swtpm: Launched | None = None
        """Both, whether this run started them or adopted them from a killed one."""
        self._outputs: list[OutputFollower] = []
        self._output: OutputFollower | None = None
        """QEMU's, for error messages."""

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def pid(self) -> int | None:
        return self._qemu.pid if self._qemu is not None and not self._qemu.exited else None

    @property
    def qemu_ref(self) -> ProcessRef | None:
        return ProcessRef(self._qemu.pid, self._qemu.start) if self._qemu is not None else None

    @property
    def swtpm_ref(self) -> ProcessRef | None:
        return ProcessRef(self._swtpm.pid, self._swtpm.start) if self._swtpm else None

    @property
    def alive(self) -> bool:
        return self.pid is not None

    def last_output(self, lines: int = 3) -> str:
        """QEMU's latest lines of output, joined, for error messages."""
        return " | ".join(self._output.last(lines)) if self._output is not None else ""

    async def _follow(self, path: Path, prefix: str) -> OutputFollower:
        output = await asyncio.to_thread(OutputFollower, path, prefix, f"vdc.qemu.{prefix}")
        output.start()
        self._outputs.append(output)
        return output

    async def _close_outputs(self) -> None:
        await asyncio.gather(*(output.close() for output in self._outputs))
        self._outputs.clear()

    def clear_stale_files(self) -> None:
        # The run dir is locked by this run, so sockets here are a dead run's leftovers.
        for path in (self.layout.serial_socket, self.layout.qmp_socket, self.layout.guest_socket):
            path.unlink(missing_ok=True)
        if self.layout.tpm_dir is not None:
            shutil.rmtree(self.layout.tpm_dir, ignore_errors=True)

    async def start(self, incoming: bool = False) -> QMPClient:
        """Start swtpm (if any) and QEMU; return a QMP connection to the new QEMU (with
        `incoming`, one that waits for its state: `nodes.migration.load_state`)."""
        layout = self.layout
        await self._close_outputs()  # an earlier start's, whose lines were read
        layout.run_dir.mkdir(parents=True, exist_ok=True)
        layout.console_log.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.clear_stale_files)
        if layout.nvram is not None and not layout.nvram.exists():
            await asyncio.to_thread(self._create_nvram)
        if layout.tpm_socket is not None and layout.tpm_dir is not None:
            await self._start_swtpm(layout.tpm_dir, layout.tpm_socket)
        argv = qemu_argv(layout, self.node)
        if incoming:
            argv += ["-incoming", "defer"]
        log.debug("node %s: %s", self.name, " ".join(argv))
        label = f"qemu/{self.name}"
        self._output = await self._follow(layout.output_log, label)
        self._qemu = await self.launcher.spawn(argv, layout.output_log, label=label)
        self._record(self._qemu, label)
        what = f"QEMU of node {self.name}"
        await _wait_for_socket(layout.qmp_socket, self._qemu, what, self._output)
        try:
            return await self._connect_qmp()
        except (TimeoutError, OSError, QMPError) as exc:
            # A QEMU that rejects its arguments still creates the socket first; its own
            # message says more than the failed handshake.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._qemu.wait(), 1)
            if self._qemu.exited:
                detail = self.last_output() or "no output"
                raise NodeError(f"{what} {_exited(self._qemu)}: {detail}") from exc
            raise NodeError(f"{what}: cannot connect to QMP at {layout.qmp_socket}: {exc}") from exc

    async def adopt(self, qemu: ProcessRef, swtpm: ProcessRef | None) -> QMPClient:
        """Take over a QEMU (and swtpm) that a killed run started and that still runs: a new
        QMP connection to it (QEMU's QMP server takes one client at a time, the dead run's
        is gone), its output followed from now on."""
        self._qemu = self.launcher.adopt(qemu.pid, qemu.start)
        self._swtpm = self.launcher.adopt(swtpm.pid, swtpm.start) if swtpm is not None else None
        self._output = await self._follow(self.layout.output_log, f"qemu/{self.name}")
        if swtpm is not None:
            await self._follow(self.layout.swtpm_log, f"swtpm/{self.name}")
        try:
            return await self._connect_qmp()
        except (TimeoutError, OSError, QMPError) as exc:
            raise NodeError(
                f"QEMU of node {self.name} (pid {qemu.pid}): cannot connect to QMP at"
                f" {self.layout.qmp_socket}: {exc}"
            ) from exc

    async def _connect_qmp(self) -> QMPClient:
        # QEMU creates the socket file just before it listens on it: a refusal in that
        # window is retried while QEMU lives.
        deadline = time.monotonic() + QMP_TIMEOUT
        while True:
            client = QMPClient(self.name)
            try:
                await asyncio.wait_for(client.connect(str(self.layout.qmp_socket)), QMP_TIMEOUT)
                return client
            except (OSError, QMPError):
                if self.pid is None or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)

    def _record(self, proc: Launched, label: str) -> None:
        self.ledger.record("process", pid=proc.pid, start=proc.start, label=label)

    def _create_nvram(self) -> None:
        host = self.layout.host
        secure = self.layout.secure_boot
        template = host.ovmf_secure_vars_template if secure else host.ovmf_vars_template
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
        label = f"swtpm/{self.name}"
        path = self.layout.swtpm_log
        output = await self._follow(path, label)
        argv = ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={tpm_dir}",
                "--ctrl", f"type=unixio,path={tpm_socket}"]  # fmt: skip
        try:
            self._swtpm = await self.launcher.spawn(argv, path, label=label)
        except FileNotFoundError:
            raise NodeError(f"node {self.name} wants a TPM but swtpm is not installed") from None
        self._record(self._swtpm, label)
        await _wait_for_socket(tpm_socket, self._swtpm, f"swtpm of node {self.name}", output)

    async def wait_exit(self) -> tuple[str, int | None]:
        """Wait until QEMU or swtpm exits; say which, with QEMU's exit status if it was
        QEMU and anyone knows it (not when adopted from a killed `vdc run`)."""
        qemu, swtpm = self._qemu, self._swtpm
        assert qemu is not None
        waits = [asyncio.ensure_future(qemu.wait())]
        if swtpm is not None:
            waits.append(asyncio.ensure_future(swtpm.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if qemu.exited:
            return f"QEMU {_exited(qemu)}", qemu.returncode
        return f"swtpm {_exited(swtpm)}" if swtpm is not None else "swtpm exited", None

    async def quit(self, qmp: QMPClient | None) -> None:
        """Ask QEMU to quit and give it a moment (its disks are flushed on the way out)."""
        if self.pid is None or self._qemu is None:
            return
        if qmp is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(qmp.execute("quit"), 2)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._qemu.wait(), QUIT_GRACE)

    async def kill(self) -> None:
        """End whatever still runs: TERM, then KILL after a grace period."""
        for proc in (self._qemu, self._swtpm):
            if proc is not None and not proc.exited:
                await stop_process_group(proc.pid, proc.start, grace=QUIT_GRACE)
                await proc.wait()

    async def release(self) -> None:
        """Stop following them, and leave them running."""
        for proc in (self._qemu, self._swtpm):
            if proc is not None:
                proc.close()
        await self._close_outputs()

    async def close(self) -> None:
        """Kill, then stop reading their output."""
        await self.kill()
        await self._close_outputs()


__all__ = ["QemuProcess"]
