"""Whole-data-center snapshots (issue 2-6): `vdc snapshot save` on a running data center,
then `vdc run --restore`, with a real guest whose RAM and disk hold tokens it wrote."""

from __future__ import annotations

import contextlib
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.guests import Console, answer, console, node_yaml, type_line
from tests.runtime.harness import HostNetns, VdcRun, sh
from tests.runtime.test_run_bmc import ADMIN, ipmitool

pytestmark = [pytest.mark.root, pytest.mark.slow]


def lab(guest: GuestPaths, memory: str = "256M") -> str:
    text = node_yaml("sn1", guest, extra="volumes:\n- {kind: raw, name: data, size: 16M}\n")
    return text.replace("memory: 256M", f"memory: {memory}")


def booted(
    host: HostNetns,
    spec: Path,
    run_dir: Path,
    running: list[VdcRun],
    node: str,
    timeout: float = 90,
) -> tuple[VdcRun, Console]:
    """A run of `spec` whose guest `node` has booted, and that guest's console."""
    run = VdcRun(host, [spec], run_dir).start()
    running.append(run)
    run.wait_ready(120)
    con = console(run, node)
    con.wait_for("VDC-GUEST-DONE", timeout=timeout)
    return run, con


def test_a_saved_data_center_is_restored_where_it_was(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    spec = write(tmp_path / "lab.yml", lab(guest))
    run, con = booted(host, spec, tmp_path / "run", running, "sn1")
    time.sleep(1)
    # One token in RAM only (the initramfs), one on the disk.
    mark = len(con.text)
    type_line(run, "sn1", "echo ram-41517 > /tmp/token; echo disk-82635 | dd of=/dev/vda"
              " conv=fsync 2>/dev/null; echo SAVED-$(cut -d' ' -f1 /proc/uptime)-END")  # fmt: skip
    saved_uptime = float(answer(con, r"SAVED-([0-9.]+)-END", mark)[1])

    status, body = run.api("/snapshots", "POST", body={"name": "first", "stop": True})
    assert status == 201, body
    assert body["machines"] == ["sn1"] and body["size"] > 0, body
    assert run.wait(120) == 0, run.output  # --stop: the run ends once saved
    running.remove(run)
    assert "stopping, as the snapshot asked" in run.output

    # Another spec's machine does not fit the snapshot: refused, naming the difference.
    changed = write(tmp_path / "changed.yml", lab(guest, memory="384M"))
    refused = VdcRun(host, [changed], tmp_path / "run", "--restore", "first")
    assert refused.run_to_exit(120) == 1
    assert 'nodes[sn1].memory: "256M" -> "384M"' in refused.output, refused.output

    # Carried elsewhere as one file: exported, deleted here, imported back.
    vdc = [sys.executable, "-m", "vdc_runtime.cli"]
    data = ["--data-dir", str(tmp_path / "data")]
    archive = tmp_path / "first.tar.zst"
    host.sh([*vdc, "snapshot", "export", "first", str(archive), *data], timeout=120)
    host.sh([*vdc, "snapshot", "delete", "first", *data])
    assert "first" not in host.sh([*vdc, "snapshot", "list", *data])
    host.sh([*vdc, "snapshot", "import", str(archive), *data], timeout=120)

    restored = VdcRun(host, [spec], tmp_path / "run", "--restore", "first").start()
    running.append(restored)
    restored.wait_ready(120)
    node = restored.api("/nodes/sn1")[1]
    assert node["power_status"] == "On" and node["ready"] is True, node
    mark = len(con.text)
    type_line(restored, "sn1", "echo GOT-$(cat /tmp/token)-$(dd if=/dev/vda bs=10 count=1"
              " 2>/dev/null)-UP-$(cut -d' ' -f1 /proc/uptime)-END")  # fmt: skip
    got = answer(con, r"GOT-(\S*?)-(disk-\S*)-UP-([0-9.]+)-END", mark)
    assert (got[1], got[2]) == ("ram-41517", "disk-82635"), got[0]
    # The guest went on where it was paused: the same boot, its uptime running on.
    assert float(got[3]) >= saved_uptime
    assert con.count("VDC-GUEST-READY") == 1
    assert restored.stop() == 0, restored.output
    running.remove(restored)


def test_a_save_killed_halfway_leaves_no_partial_snapshot(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    spec = write(tmp_path / "lab.yml", lab(guest))
    run, con = booted(host, spec, tmp_path / "run", running, "sn1")
    time.sleep(1)
    # A save without --stop, as users take it: the machines run on at once.
    said = host.sh(
        [sys.executable, "-m", "vdc_runtime.cli", "snapshot", "save", "one"], timeout=120
    )
    assert said.startswith("snapshot one: 1 machines,"), said
    assert run.api("/nodes/sn1")[1]["power_status"] == "On"
    mark = len(con.text)
    type_line(run, "sn1", "echo STILL-$((40+2))-RUNNING")
    answer(con, r"STILL-42-RUNNING", mark)
    assert [s["name"] for s in run.api("/snapshots")[1]] == ["one"]

    # The next save, killed with the run as soon as it has begun writing.
    snapshots = tmp_path / "data" / "snapshots"

    def save_two() -> None:
        with contextlib.suppress(OSError):  # the run is killed under it
            run.api("/snapshots", "POST", body={"name": "two"})

    saving = threading.Thread(target=save_two, daemon=True)
    saving.start()
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".two.") for p in snapshots.iterdir()):
        assert time.monotonic() < deadline, "the second save never began"
        time.sleep(0.005)
    run.signal(signal.SIGKILL)
    run.wait()
    running.remove(run)
    assert not (snapshots / "two").exists()

    # The next run restores the last complete snapshot, and the killed save's files go.
    restored = VdcRun(host, [spec], tmp_path / "run", "--force", "--restore", "one").start()
    running.append(restored)
    restored.wait_ready(120)
    assert [p.name for p in snapshots.iterdir()] == ["one"], list(snapshots.iterdir())
    mark = len(con.text)
    type_line(restored, "sn1", "echo BACK-$((40+3))-AGAIN")
    answer(con, r"BACK-43-AGAIN", mark)
    assert con.count("VDC-GUEST-READY") == 1
    assert restored.stop() == 0, restored.output
    running.remove(restored)


def pxe_lab(tmp_path: Path, guest: GuestPaths) -> Path:
    """A boot server (dnsmasq and HTTP in a namespace) and a machine that PXE-boots from it."""
    boot = tmp_path / "boot"
    boot.mkdir()
    for src, name in ((guest.vmlinuz, "vmlinuz"), (guest.initrd, "initrd.gz")):
        (boot / name).symlink_to(src)
    write(boot / "boot.ipxe",
          "#!ipxe\nkernel http://10.73.48.1:8080/vmlinuz initrd=initrd.gz console=ttyS0 quiet"
          " vdc.dhcp=1\ninitrd http://10.73.48.1:8080/initrd.gz\nboot\n")  # fmt: skip
    write(tmp_path / "dnsmasq.conf",
          "port=0\ninterface=eth0\nbind-interfaces\nleasefile-ro\npid-file=\nlog-dhcp\n"
          "dhcp-range=10.73.48.100,10.73.48.200,255.255.255.0,1h\n"
          "dhcp-match=set:ipxe,175\n"
          "dhcp-boot=tag:ipxe,http://10.73.48.1:8080/boot.ipxe\n")  # fmt: skip
    return write(
        tmp_path / "pxe.yml",
        """\
kind: Network
name: pxe-net
type: internal
---
kind: NetworkNamespace
name: boot-server
interfaces:
- network: pxe-net
  addresses: [10.73.48.1/24]
apps:
- name: dnsmasq
  command: [dnsmasq, --keep-in-foreground, --log-facility=-, --conf-file=dnsmasq.conf]
- name: http
  command: [python3, -m, http.server, "8080", --bind, 10.73.48.1, --directory, boot]
---
kind: Node
name: px1
smp: {cpus: 1}
memory: 256M
interfaces: [pxe-net]
readiness: {console: VDC-GUEST-DONE}
""",
    )


def test_a_restored_pxe_lab_does_not_boot_or_ask_dhcp_again(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    spec = pxe_lab(tmp_path, guest)
    run, con = booted(host, spec, tmp_path / "run", running, "px1", 180)
    address = re.search(r"VDC-GUEST-DHCP eth0 ([0-9.]+)", con.text)
    assert address, con.text[-2000:]
    status, body = run.api("/snapshots", "POST", body={"name": "pxe", "stop": True})
    assert status == 201, body
    assert run.wait(120) == 0, run.output
    running.remove(run)

    dnsmasq_log = tmp_path / "data" / "logs" / "apps" / "boot-server.dnsmasq.log"
    offers_before = dnsmasq_log.read_text().count("DHCPDISCOVER")
    restored = VdcRun(host, [spec], tmp_path / "run", "--restore", "pxe").start()
    running.append(restored)
    restored.wait_ready(120)
    assert restored.api("/nodes/px1")[1]["ready"] is True
    # Its address still answers, through the new bridge, from the new boot server.
    sh(["ip", "netns", "exec", "boot-server", "ping", "-c", "1", "-W", "5", address[1]])
    time.sleep(3)
    assert con.count("VDC-GUEST-READY") == 1 and con.count("VDC-GUEST-DHCP") == 1
    assert dnsmasq_log.read_text().count("DHCPDISCOVER") == offers_before
    assert restored.stop() == 0, restored.output
    running.remove(restored)


def test_a_boot_override_pending_in_a_bmc_is_kept(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    # Held by the BMC, not by the machine: QEMU's saved state does not have it.
    text = f"""\
kind: Network
name: bmc
type: bmc
address: 10.74.16.1/24
---
kind: BMC
users:
- {{name: {ADMIN[0]}, password: {ADMIN[1]}}}
---
""" + node_yaml("bo1", guest, extra="bmc: {address: 10.74.16.21}\n")
    spec = write(tmp_path / "bmc.yml", text)
    run, _ = booted(host, spec, tmp_path / "run", running, "bo1")
    ipmitool(host, "10.74.16.21", "chassis", "bootdev", "pxe", "options=persistent")
    status, body = run.api("/snapshots", "POST", body={"name": "bmc", "stop": True})
    assert status == 201, body
    assert run.wait(120) == 0, run.output
    running.remove(run)

    restored = VdcRun(host, [spec], tmp_path / "run", "--restore", "bmc").start()
    running.append(restored)
    restored.wait_ready(120)
    flags = ipmitool(host, "10.74.16.21", "chassis", "bootparam", "get", "5")
    assert "Force PXE" in flags and "Options apply to all future boots" in flags, flags
    assert restored.stop() == 0, restored.output
    running.remove(restored)
