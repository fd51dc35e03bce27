"""Helpers for tests that boot real guests through `vdc run`."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.harness import HostNetns, VdcRun

BOOT_TIMEOUT = 90.0  # TCG on a loaded 2-core machine


class Console:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def count(self, marker: str) -> int:
        return self.text.count(marker)

    def wait_in_last_boot(self, marker: str, timeout: float = BOOT_TIMEOUT) -> str:
        """Wait for `marker` after the latest READY line (earlier boots may have been cut short)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.text.rpartition("VDC-GUEST-READY")[2]
            if marker in last:
                return last
            time.sleep(0.2)
        raise AssertionError(f"{marker!r} not seen after the last boot:\n{self.text[-3000:]}")

    def wait_for(self, marker: str, count: int = 1, timeout: float = BOOT_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(marker) >= count:
                return self.text
            time.sleep(0.2)
        raise AssertionError(f"{marker!r} x{count} not seen in {self.path}:\n{self.text[-3000:]}")


def console(run: VdcRun, node: str) -> Console:
    status, body = run.api(f"/nodes/{node}")
    assert status == 200, body
    return Console(Path(body["console_log"]))


def wait_power(run: VdcRun, node: str, power: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = run.api(f"/nodes/{node}")[1]
        if body["power_status"] == power:
            return body
        time.sleep(0.2)
    raise AssertionError(f"{node} not {power}: {body}")


def node_yaml(
    name: str, guest: GuestPaths, *, cmdline: str = "", extra: str = "", kernel: Path | None = None
) -> str:
    return f"""\
kind: Node
name: {name}
smp: {{cpus: 1}}
memory: 256M
kernel: {kernel or guest.vmlinux}
initrd: {guest.initrd}
cmdline: "console=ttyS0 quiet {cmdline}"
{extra}"""


def start(host: HostNetns, tmp_path: Path, runs: list[VdcRun], text: str, *extra: str) -> VdcRun:
    spec = write(tmp_path / "nodes.yml", text)
    run = VdcRun(host, [spec], tmp_path / "run", *extra).start()
    runs.append(run)
    run.wait_ready(120)
    return run


def type_line(run: VdcRun, node: str, line: str) -> None:
    """Type a line into the guest's shell on its serial console."""
    path = run.api(f"/nodes/{node}")[1]["socket_path"]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(line.encode() + b"\r")
        time.sleep(0.5)


def answer(con: Console, pattern: str, after: int) -> re.Match[str]:
    """The first match of `pattern` in what the console printed past offset `after`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, con.text[after:])
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not seen:\n{con.text[after:][-2000:]}")
