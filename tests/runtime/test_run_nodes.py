"""Real guests under TCG, driven through `vdc run` and its API."""

from __future__ import annotations

import hashlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.guests import console, node_yaml, start, wait_power
from tests.runtime.harness import HostNetns, VdcRun

pytestmark = [pytest.mark.root, pytest.mark.slow]


def wait_for_node(run: VdcRun, name: str, predicate, timeout: float = 30) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        body = run.api(f"/nodes/{name}")[1]
        if predicate(body) or time.monotonic() > deadline:
            assert predicate(body), body
            return body  # type: ignore[no-any-return]
        time.sleep(0.2)


def test_direct_kernel_boot_status_and_power(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    text = """\
kind: Network
name: bmcnet
type: bmc
address: 10.72.16.1/20
---
""" + node_yaml(
        "n1",
        guest,
        cmdline="vdc.bmc=10.72.16.5",
        extra="interfaces: [bmcnet]\nsmbios: {manufacturer: ACME, product: R1}\n"
        "readiness: {console: 'VDC-GUEST-BMC 10\\.72\\.'}\n",
    )
    run = start(host, tmp_path, running, text)
    con = console(run, "n1")
    con.wait_for("VDC-GUEST-READY")

    status, nodes = run.api("/nodes")
    assert status == 200 and [n["name"] for n in nodes] == ["n1"]
    n1 = nodes[0]
    # Placemat's NodeStatus keys, with the always-0 cpu fixed and the effective serial.
    for key in (
        "name",
        "taps",
        "volumes",
        "cpu",
        "memory",
        "uefi",
        "tpm",
        "smbios",
        "power_status",
        "socket_path",
    ):
        assert key in n1
    assert n1["cpu"] == 1 and n1["memory"] == "256M" and n1["power_status"] == "On"
    assert n1["smbios"] == {
        "manufacturer": "ACME",
        "product": "R1",
        "serial": hashlib.sha1(b"n1").hexdigest(),
    }
    assert list(n1["taps"]) == ["bmcnet"] and n1["taps"]["bmcnet"].startswith("vdt")
    assert n1["accel"] == "tcg" and n1["pid"] and Path(n1["socket_path"]).exists()
    assert run.api("/health")[1]["accel"] == "tcg"
    con.wait_for("VDC-GUEST-SERIAL " + hashlib.sha1(b"n1").hexdigest())

    # The guest announces its BMC address on the placemat port.
    con.wait_for("VDC-GUEST-BMC 10.72.16.5")
    deadline = time.monotonic() + 20
    while run.api("/nodes/n1")[1]["bmc_address"] != "10.72.16.5" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert run.api("/nodes/n1")[1]["bmc_address"] == "10.72.16.5"
    # Ready once its console matched the readiness rule, again after each boot.
    ready = wait_for_node(run, "n1", lambda n: n["ready"])
    assert ready["boots"] == 1 and ready["ready_at"] >= ready["power_transitions"][0]["at"]

    # Power off pauses; power on boots afresh; restart boots again.
    assert run.api("/nodes/n1/stop", "POST")[0] == 200
    assert not wait_power(run, "n1", "Off")["ready"]
    assert run.api("/nodes/n1/start", "POST")[0] == 200
    con.wait_for("VDC-GUEST-READY", count=2)
    again = wait_for_node(run, "n1", lambda n: n["ready"])
    assert again["boots"] > ready["boots"] and again["ready_at"] > ready["ready_at"]
    assert run.api("/nodes/n1/restart", "POST")[0] == 200
    con.wait_for("VDC-GUEST-READY", count=3)
    assert run.api("/nodes/n1/reset", "POST")[0] == 200
    con.wait_for("VDC-GUEST-READY", count=4)

    # The guest powers itself off (ACPI power button): QEMU stays, and power on works.
    con.wait_in_last_boot("VDC-GUEST-DONE")
    time.sleep(1)  # acpid has just started; a press before it listens is lost, as on hardware
    assert run.api("/nodes/n1/shutdown", "POST")[0] == 200
    wait_power(run, "n1", "Off")
    assert run.api("/nodes/n1/reset", "POST")[0] == 409  # nothing to reset while off
    assert run.api("/nodes/n1/start", "POST")[0] == 200
    con.wait_for("VDC-GUEST-READY", count=5)
    body = wait_power(run, "n1", "On")
    assert run.api("/nodes/n1/nmi", "POST")[0] == 200
    con.wait_for("NMI received")
    causes = [t["cause"] for t in body["power_transitions"]]
    assert "power off" in causes and any(c.startswith("guest shut down") for c in causes)

    assert run.api("/nodes/nope")[0] == 404
    assert run.api("/nodes/n1/explode", "POST")[0] == 400
    assert run.stop() == 0, run.output


def test_disk_image_copy_on_write_with_seed_and_ignition(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    base_sum = hashlib.sha256(guest.disk.read_bytes()).hexdigest()
    write(tmp_path / "user-data.yml", "#cloud-config\nhostname: d1\n")
    ignition = write(tmp_path / "ignition.json", '{"ignition": {"version": "3.4.0"}}\n')
    text = f"""\
kind: Image
name: tiny
file: {guest.disk}
---
kind: Node
name: d1
smp: {{cpus: 1}}
memory: 256M
ignition: ignition.json
volumes:
- {{kind: image, name: root, image: tiny, copy-on-write: true}}
- {{kind: localds, name: seed, user-data: user-data.yml}}
- {{kind: raw, name: data, size: 64M}}
"""
    run = start(host, tmp_path, running, text)
    con = console(run, "d1")
    con.wait_for("VDC-GUEST-READY")
    # The NoCloud seed vdc built in Python, and the ignition file passed by fw_cfg.
    con.wait_for("VDC-GUEST-SEED instance-id=d1")
    con.wait_for("VDC-GUEST-USERDATA #cloud-config")
    con.wait_for("VDC-GUEST-IGNITION " + hashlib.sha1(ignition.read_bytes()).hexdigest())
    assert "VDC-GUEST-DISKS vda vdb vdc" in con.wait_for("VDC-GUEST-DISKS")
    overlay = tmp_path / "data" / "volumes" / "d1" / "root.img"
    assert overlay.exists() and overlay.stat().st_size < guest.disk.stat().st_size
    assert run.stop() == 0, run.output
    assert hashlib.sha256(guest.disk.read_bytes()).hexdigest() == base_sum  # the base is untouched


def test_uefi_tpm_and_writable_9p(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    share = tmp_path / "share"
    text = node_yaml(
        "u1",
        guest,
        kernel=guest.vmlinuz,
        cmdline="initrd=initrd.gz vdc.9p=share",
        extra="uefi: true\ntpm: true\nvolumes:\n"
        f"- {{kind: hostPath, name: share, path: {share}, writable: true}}\n",
    )
    run = start(host, tmp_path, running, text)
    con = console(run, "u1")
    con.wait_for("VDC-GUEST-READY", timeout=150)
    con.wait_for("VDC-GUEST-TPM 2")
    con.wait_for("VDC-GUEST-9P share ok")
    assert (share / "from-guest.txt").read_text().startswith("hello from")
    assert run.stop() == 0, run.output
    assert (tmp_path / "data" / "nvram" / "u1.fd").exists()  # UEFI variables persist across runs


def test_killed_qemu_is_reported_and_stops_the_run(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    run = start(host, tmp_path, running, node_yaml("k1", guest))
    pid = run.api("/nodes/k1")[1]["pid"]
    os.kill(pid, signal.SIGKILL)
    assert run.wait(60) == 1
    assert re.search(r"node k1: QEMU exited with -9", run.output), run.output


def test_killed_qemu_restarts_on_failure(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    run = start(host, tmp_path, running, node_yaml("r1", guest, extra="restart: on-failure\n"))
    con = console(run, "r1")
    con.wait_for("VDC-GUEST-READY")
    first = run.api("/nodes/r1")[1]["pid"]
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = run.api("/nodes/r1")[1]
        if body["restarts"] == 1 and body["state"] == "running":
            break
        time.sleep(0.2)
    assert body["restarts"] == 1 and body["pid"] != first, body
    con.wait_for("VDC-GUEST-READY", count=2)
    assert run.api("/health")[0] == 200
    assert run.stop() == 0, run.output
    assert "restarting" in run.output


def test_forward_into_a_namespace(host: HostNetns, tmp_path: Path, running: list[VdcRun]) -> None:
    text = """\
kind: Network
name: fwnet
type: internal
---
kind: NetworkNamespace
name: fwsrv
interfaces:
- {network: fwnet, addresses: [10.44.0.2/24]}
apps:
- name: web
  command: [python3, -m, http.server, "8000", --bind, 10.44.0.2]
"""
    run = start(host, tmp_path, running, text)
    vdc = [sys.executable, "-m", "vdc_runtime.cli"]
    host.sh([*vdc, "forward", "add", "30000", "fwsrv:10.44.0.2:8000"])
    assert host.sh([*vdc, "forward", "list"]).strip() == "30000 fwsrv:10.44.0.2:8000"
    deadline = time.monotonic() + 10
    while True:
        page = host.sh(["curl", "-sS", "--max-time", "3", "http://127.0.0.1:30000/"], check=False)
        if "Directory listing" in page or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert "Directory listing" in page
    host.sh([*vdc, "forward", "delete", "30000"])
    assert host.sh([*vdc, "forward", "list"]).strip() == ""
    assert run.stop() == 0


REPO = Path(__file__).resolve().parents[2]


def stage_quickstart(guest: GuestPaths) -> Path:
    """Put the guest's kernel and initrd where the quick start's boot server serves them."""
    boot = REPO / "examples" / "quickstart" / "boot"
    for src, name in ((guest.vmlinuz, "vmlinuz"), (guest.initrd, "initrd.gz")):
        dst = boot / name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.write_bytes(src.read_bytes())
    return REPO / "examples" / "quickstart.yml"


def test_pxe_quickstart_two_workers(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    spec = stage_quickstart(guest)
    run = VdcRun(host, [spec], tmp_path / "run").start()
    running.append(run)
    run.wait_ready(120)
    for name, bmc in (("worker-1", "10.72.16.11"), ("worker-2", "10.72.16.12")):
        con = console(run, name)
        text = con.wait_for("VDC-GUEST-BMC", timeout=180)
        assert re.search(r"VDC-GUEST-DHCP eth0 10\.72\.48\.(1\d\d|200)", text), text[-2000:]
        assert f"VDC-GUEST-BMC {bmc}" in text
        assert "iPXE" in text  # the console log shows the network boot itself
    assert run.stop() == 0, run.output


def test_enter_console_and_console_log(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    run = start(host, tmp_path, running, node_yaml("c1", guest))
    con = console(run, "c1")
    con.wait_for("VDC-GUEST-DONE")
    time.sleep(1)
    # `vdc node enter` on a real terminal: type into the guest's shell, read its answer,
    # leave with Ctrl-].
    master, slave = os.openpty()
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{host.name}", "--",
         sys.executable, "-m", "vdc_runtime.cli", "node", "enter", "c1"],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    # A second client on the console socket at the same time sees the same session.
    other = socket.socket(socket.AF_UNIX)
    other.connect(run.api("/nodes/c1")[1]["socket_path"])
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"Connected to c1's console" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 4096)
        os.write(master, b"\r")
        time.sleep(0.5)
        os.write(master, b"echo hi-$((6*7))\r")
        while b"hi-42" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                seen += os.read(master, 4096)
        assert b"hi-42" in seen, seen
        os.write(master, b"\x1d")
        assert proc.wait(10) == 0
        other.settimeout(5)
        beside = b""
        while b"hi-42" not in beside:
            beside += other.recv(4096)
    finally:
        other.close()
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert "hi-42" in con.text  # the console log kept the session too
    log = host.sh([sys.executable, "-m", "vdc_runtime.cli", "node", "console-log", "c1"])
    assert "VDC-GUEST-READY" in log and "hi-42" in log
    assert run.stop() == 0
