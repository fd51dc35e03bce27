"""The IPMI BMC of a real guest, driven by ipmitool, FreeIPMI and a hand-made RMCP+ client.

The machine and its BMC run on an event loop in a thread of their own, so the clients
here can be plain blocking programs. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import socket
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.bmc.conftest import ADMIN, HOST, OPERATOR, USERS, VIEWER, RunningMachine, start_machine
from tests.bmc.rmcp import RmcpClient, RmcpError
from tests.guest.build import GuestPaths
from vdc_runtime.bmc.ipmi import IpmiService
from vdc_runtime.bmc.ipmi import server as ipmi_server
from vdc_runtime.bmc.target import BootOverride

pytestmark = pytest.mark.slow

T = TypeVar("T")


class Bmc:
    """A running guest and its IPMI endpoint, on an event loop in a background thread."""

    node = "ipmi-node"
    smbios = ""

    def __init__(self, guest: GuestPaths, tmp: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((HOST, 0))
            self.port = s.getsockname()[1]
        self.machine: RunningMachine = self.call(
            start_machine(guest, tmp, self.node, smbios=self.smbios)
        )
        self.target = self.machine.target
        self.service = IpmiService(USERS)
        self.call(self.service.add(HOST, self.target, self.port))

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 150) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def power(self) -> str:
        return self.call(self.target.power_state())

    def console(self) -> str:
        return self.machine.console

    def wait_console(self, text: str, count: int = 1) -> None:
        self.call(self.machine.wait_console(text, count))

    def wait_last_boot(self, text: str) -> None:
        """Wait for `text` after the latest READY (earlier boots may have been cut short)."""
        wait_until(lambda: text in self.console().rpartition("VDC-GUEST-READY")[2], text)

    def ready_count(self) -> int:
        return self.console().count("VDC-GUEST-READY")

    def close(self) -> None:
        self.call(self.service.close())
        self.call(self.machine.machine.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bmc(guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bmc]:
    running = Bmc(guest, tmp_path_factory.mktemp("ipmi"))
    try:
        running.wait_console("VDC-GUEST-READY")
        yield running
    finally:
        running.close()


def ipmitool(bmc: Bmc, *args: str, user=ADMIN, suite: int = 17, check: bool = True, extra=()):
    argv = ["ipmitool", "-I", "lanplus", "-H", HOST, "-p", str(bmc.port), "-U", user[0],
            "-P", user[1], "-C", str(suite), "-N", "2", "-R", "2", *extra, *args]  # fmt: skip
    # Dates in the C locale and UTC, whatever the machine's: `sel` reads and prints them so.
    env = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}):\n{output}")
    return output


def freeipmi(bmc: Bmc, tool: str, *args: str, password: str = ADMIN[1], check: bool = True) -> str:
    argv = [tool, "-D", "LAN_2_0", "-h", f"{HOST}:{bmc.port}", "-u", ADMIN[0], "-p", password,
            *args]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    if check and done.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} failed ({done.returncode}):\n{output}")
    return output


def wait_until(predicate, what: str, timeout: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- sessions and identity ----------------------------------------------------------------------


@pytest.mark.parametrize("suite", [3, 17])
def test_both_cipher_suites_and_device_id(bmc: Bmc, suite: int) -> None:
    assert "Chassis Power is on" in ipmitool(bmc, "power", "status", suite=suite)
    info = ipmitool(bmc, "mc", "info", suite=suite)
    assert "IPMI Version              : 2.0" in info
    assert "Chassis Device" in info
    ciphers = ipmitool(bmc, "channel", "getciphers", "ipmi", suite=suite)
    assert [line.split()[:4] for line in ciphers.splitlines()[1:]] == [
        ["3", "N/A", "hmac_sha1", "hmac_sha1_96"],
        ["17", "N/A", "hmac_sha256", "sha256_128"],
    ]


def test_guid_is_the_system_uuid_for_both_clients(bmc: Bmc) -> None:
    uuid = bmc.target.facts.uuid
    assert f"System GUID   : {uuid}" in ipmitool(bmc, "mc", "guid")
    info = freeipmi(bmc, "bmc-info")
    assert f"System GUID : {uuid}" in info
    assert "IPMI Version          : 2.0" in info and "Chassis Device        : supported" in info


def test_wrong_credentials_and_weak_suites_are_refused(bmc: Bmc) -> None:
    for user in ((ADMIN[0], "wrong"), ("nobody", ADMIN[1])):
        out = ipmitool(bmc, "power", "status", user=user, check=False)
        assert "Unable to establish IPMI v2 / RMCP+ session" in out
    assert "password invalid" in freeipmi(bmc, "ipmipower", "--stat", password="no", check=False)
    # Suites without a strong integrity or any authentication get the RMCP+ status for it.
    assert "invalid integrity algorithm" in ipmitool(bmc, "power", "status", suite=1, check=False)
    out = ipmitool(bmc, "power", "status", suite=0, check=False)
    assert "invalid authentication algorithm" in out
    with RmcpClient(HOST, bmc.port) as client:
        with pytest.raises(RmcpError) as refused:
            client.login(ADMIN[0], "wrong")
        assert refused.value.stage == "RAKP 2 check"  # the BMC's HMAC is over the real one
    with RmcpClient(HOST, bmc.port) as client:
        with pytest.raises(RmcpError) as refused:
            client.login("nobody", "x")
        assert (refused.value.stage, refused.value.status) == ("RAKP 2", 0x0D)


def test_roles_cap_the_session(bmc: Bmc) -> None:
    # ipmitool asks for Administrator unless told otherwise: a read-only user is refused
    # the session, as on iDRAC; at User level it may look but not touch.
    assert "Unable to establish" in ipmitool(bmc, "power", "status", user=VIEWER, check=False)
    with RmcpClient(HOST, bmc.port) as client:
        with pytest.raises(RmcpError) as refused:
            client.login(*VIEWER, privilege=4)
        assert refused.value.status == 0x0A  # unauthorized role or privilege level
    viewer = {"user": VIEWER, "extra": ("-L", "USER")}
    assert "Chassis Power is on" in ipmitool(bmc, "power", "status", **viewer)
    out = ipmitool(bmc, "power", "off", check=False, **viewer)
    assert "Insufficient privilege level" in out
    with RmcpClient(HOST, bmc.port) as client:
        client.login(*OPERATOR, privilege=3)
        assert client.request(0x06, 0x3B, bytes([4])).code == 0x81  # above the session's
        assert client.request(0x06, 0x3B, bytes([3])).data == bytes([3])
        assert client.request(0x06, 0x02).code == 0xD4  # cold reset is Administrator's
    assert bmc.power() == "On"
    users = ipmitool(bmc, "user", "list", "1")
    assert [line.split()[1] for line in users.splitlines()[2:]] == ["admin", "op", "viewer"]
    assert users.splitlines()[4].split()[-1] == "USER"


def test_integrity_is_checked_and_suites_negotiated(bmc: Bmc) -> None:
    with RmcpClient(HOST, bmc.port) as client:
        # Wildcards let the BMC choose: it picks its strongest suite, 17.
        status, chosen = client.open_session((None, None, None))
        assert status == 0 and (chosen[4], chosen[12], chosen[20]) == (0x03, 0x04, 0x01)
    for suite in (3, 17):
        with RmcpClient(HOST, bmc.port, timeout=1.0) as client:
            client.login(*ADMIN, suite=suite)
            reply = client.request(0x06, 0x01)  # Get Device ID
            assert reply.code == 0 and reply.data[4] == 0x02  # IPMI 2.0
            good = client.packet(0x06, 0x01)
            tampered = bytearray(good)
            tampered[40] ^= 0x01  # inside the encrypted payload
            client.send_raw(bytes(tampered))
            assert client.read_reply() is None
            bad_code = bytearray(client.packet(0x06, 0x01))
            bad_code[-1] ^= 0x80
            client.send_raw(bytes(bad_code))
            assert client.read_reply() is None
            # Unencrypted requests in an encrypted session are not taken either.
            plain = bytearray(client.packet(0x06, 0x01))
            plain[5] &= ~0x80
            client.send_raw(bytes(plain))
            assert client.read_reply() is None
            assert client.request(0x06, 0x01).code == 0  # the session still works


def test_a_retransmitted_request_is_carried_out_once(bmc: Bmc) -> None:
    before = bmc.ready_count()
    resets = sum(1 for t in bmc.machine.machine.transitions if t.cause == "reset")
    with RmcpClient(HOST, bmc.port) as client:
        client.login(*ADMIN)
        assert client.request(0x06, 0x3B, bytes([4])).code == 0  # Administrator
        first = client.packet(0x00, 0x02, bytes([0x03]), seq=9)  # hard reset
        again = client.packet(0x00, 0x02, bytes([0x03]), seq=9)  # same request, resent
        client.send_raw(first)
        assert client.read_reply().code == 0
        client.send_raw(again)
        assert client.read_reply().code == 0  # the same reply, and no second reset
    bmc.wait_console("VDC-GUEST-READY", before + 1)
    assert sum(1 for t in bmc.machine.machine.transitions if t.cause == "reset") == resets + 1


def test_sessions_are_bounded_and_pings_answered(bmc: Bmc, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ipmi_server, "MAX_SESSIONS", 4)
    monkeypatch.setattr(ipmi_server, "SETUP_TIMEOUT", 0.5)
    monkeypatch.setattr(ipmi_server, "SESSION_IDLE", 0.5)
    with RmcpClient(HOST, bmc.port) as client:
        pong = client.ping()
        assert pong is not None and pong[8] == 0x81  # IPMI supported
        time.sleep(0.6)  # earlier tests' sessions go idle and make room
        statuses = [client.open_session((0x03, 0x04, 0x01))[0] for _ in range(5)]
        assert statuses == [0, 0, 0, 0, 0x01]  # insufficient resources
        time.sleep(0.6)  # half-open sessions are dropped, and room is made again
        assert client.open_session((0x03, 0x04, 0x01))[0] == 0
        client.login(*ADMIN)
        assert client.request(0x06, 0x3C, client.managed_id).code == 0  # Close Session
        client.send_raw(client.packet(0x06, 0x01))
        assert client.read_reply() is None  # closed: the BMC no longer answers it


# -- power ------------------------------------------------------------------------------------


def test_power_control_drives_the_guest(bmc: Bmc) -> None:
    assert "Chassis Power is on" in ipmitool(bmc, "power", "status")
    boots = bmc.ready_count()
    assert "Chassis Power Control: Reset" in ipmitool(bmc, "power", "reset")
    bmc.wait_console("VDC-GUEST-READY", boots + 1)
    assert "Chassis Power Control: Cycle" in ipmitool(bmc, "power", "cycle")
    bmc.wait_console("VDC-GUEST-READY", boots + 2)
    assert "Chassis Power Control: Diag" in ipmitool(bmc, "power", "diag")
    wait_until(lambda: "NMI received" in bmc.console(), "the guest to see the NMI")

    ipmitool(bmc, "power", "off")
    assert bmc.power() == "Off"
    assert "Chassis Power is off" in ipmitool(bmc, "power", "status")
    assert "System Power         : off" in ipmitool(bmc, "chassis", "status")
    ipmitool(bmc, "power", "off")  # already off: nothing to do, no error
    for action in ("reset", "soft", "diag"):
        out = ipmitool(bmc, "power", action, check=False)
        assert "Command not supported in present state" in out, (action, out)
    ipmitool(bmc, "power", "on")
    assert bmc.power() == "On"
    bmc.wait_console("VDC-GUEST-READY", boots + 3)
    bmc.wait_last_boot("VDC-GUEST-ACPI ok")  # acpid listens: the button press is not lost

    # Soft off presses the ACPI button: the guest shuts itself down.
    assert "Chassis Power Control: Soft" in ipmitool(bmc, "power", "soft")
    wait_until(lambda: bmc.power() == "Off", "the guest to power itself off")
    assert "off" in freeipmi(bmc, "ipmipower", "--stat")
    assert "ok" in freeipmi(bmc, "ipmipower", "--on")
    bmc.wait_console("VDC-GUEST-READY", boots + 4)
    assert "System Power                        : on" in freeipmi(
        bmc, "ipmi-chassis", "--get-chassis-status"
    )
    assert "ok" in freeipmi(bmc, "ipmipower", "--reset")
    bmc.wait_console("VDC-GUEST-READY", boots + 5)
    assert "ok" in freeipmi(bmc, "ipmipower", "--cycle")
    bmc.wait_console("VDC-GUEST-READY", boots + 6)
    assert "ok" in freeipmi(bmc, "ipmipower", "--off")
    assert bmc.power() == "Off"
    freeipmi(bmc, "ipmipower", "--on")
    bmc.wait_console("VDC-GUEST-READY", boots + 7)


# -- boot device ----------------------------------------------------------------------------


def test_boot_device_next_boot_and_persistent(bmc: Bmc) -> None:
    assert "Set Boot Device to pxe" in ipmitool(bmc, "chassis", "bootdev", "pxe", "options=efiboot")
    assert bmc.target.boot_override() == BootOverride("pxe", "once", "uefi")
    flags = ipmitool(bmc, "chassis", "bootparam", "get", "5")
    for line in ("Boot Flag Valid", "Options apply to only next boot", "BIOS EFI boot",
                 "Boot Device Selector : Force PXE"):  # fmt: skip
        assert line in flags, flags
    # The next boot consumes a one-time override.
    boots = bmc.ready_count()
    ipmitool(bmc, "power", "reset")
    bmc.wait_console("VDC-GUEST-READY", boots + 1)
    wait_until(lambda: bmc.target.boot_override().enabled == "disabled", "the override to clear")
    flags = ipmitool(bmc, "chassis", "bootparam", "get", "5")
    assert "Boot Flag Invalid" in flags and "No override" in flags

    ipmitool(bmc, "chassis", "bootdev", "disk", "options=persistent")
    ipmitool(bmc, "power", "reset")
    bmc.wait_console("VDC-GUEST-READY", boots + 2)
    assert bmc.target.boot_override() == BootOverride("hdd", "continuous", "legacy")
    assert "Options apply to all future boots" in ipmitool(bmc, "chassis", "bootparam", "get", "5")

    ipmitool(bmc, "chassis", "bootdev", "cdrom")
    assert bmc.target.boot_override() == BootOverride("cd", "once", "legacy")
    out = ipmitool(bmc, "chassis", "bootdev", "floppy", check=False)
    assert "Invalid data field in request" in out
    flags = "--key-pair=Chassis_Boot_Flags:"
    freeipmi(bmc, "ipmi-config", "--category=chassis", "--commit", f"{flags}Boot_Device=PXE",
             f"{flags}BIOS_Boot_Type=EFI", f"{flags}Boot_Flags_Persistent=Yes")  # fmt: skip
    assert bmc.target.boot_override() == BootOverride("pxe", "continuous", "uefi")
    checkout = freeipmi(bmc, "ipmi-config", "--category=chassis", "--checkout",
                        "--section=Chassis_Boot_Flags")  # fmt: skip
    assert re.search(r"^\s*Boot_Device\s+PXE$", checkout, re.M), checkout
    ipmitool(bmc, "chassis", "bootdev", "none")
    assert bmc.target.boot_override().enabled == "disabled"


# -- serial over LAN -------------------------------------------------------------------------


class Terminal:
    """A program on a pseudo-terminal, as a person would run `ipmitool sol activate`."""

    def __init__(self, argv: list[str]) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave)
        os.close(slave)
        self.output = b""

    def read_until(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen; got:\n{self.output[-2000:]!r}")
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # the program ended
                    break
        return self.output.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(10)
        finally:
            os.close(self.master)


def sol(bmc: Bmc, *args: str) -> list[str]:
    return ["ipmitool", "-I", "lanplus", "-H", HOST, "-p", str(bmc.port), "-U", ADMIN[0],
            "-P", ADMIN[1], "-C", "17", "sol", *args]  # fmt: skip


def test_serial_over_lan(bmc: Bmc) -> None:
    info = ipmitool(bmc, "sol", "info", "1")
    assert "Enabled                         : true" in info
    assert "Force Encryption                : true" in info
    assert f"Payload Port                    : {bmc.port}" in info

    # A console client next to SOL: both see the guest, as with a console server.
    watcher = socket.socket(socket.AF_UNIX)
    watcher.connect(str(bmc.machine.machine.layout.console_socket))
    watcher.settimeout(0.2)
    terminal = Terminal(sol(bmc, "activate"))
    try:
        terminal.read_until("SOL Session operational")
        terminal.type("\r")
        terminal.type("echo sol-$((6*7))\r")
        terminal.read_until("sol-42")
        seen = b""
        deadline = time.monotonic() + 10
        while b"sol-42" not in seen and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                seen += watcher.recv(4096)
        assert b"sol-42" in seen

        second = subprocess.run(sol(bmc, "activate"), capture_output=True, text=True, timeout=30)
        assert "SOL payload already active on another session" in second.stdout + second.stderr

        # The session outlives a reboot: the second boot shows up over SOL.
        boots = bmc.ready_count()
        ipmitool(bmc, "power", "cycle")
        terminal.output = b""
        terminal.read_until("VDC-GUEST-READY", timeout=90)
        bmc.wait_console("VDC-GUEST-READY", boots + 1)

        terminal.type("\r~.")
        terminal.read_until("terminated by user")
    finally:
        watcher.close()
        if terminal.proc.poll() is None:
            terminal.proc.kill()
        terminal.close()
    # The payload is free again once the session has ended.
    again = Terminal(sol(bmc, "activate"))
    try:
        again.read_until("SOL Session operational")
        again.type("\r~.")
        again.read_until("terminated by user")
    finally:
        again.close()
