"""BMCs of real guests through `vdc run`: addresses, IPMI and Redfish clients, boot overrides.

Every client runs inside the test's host namespace, where `vdc run` puts the bmc bridges,
so nothing leaves the namespaces the test made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.guests import console, start
from tests.runtime.harness import HostNetns, VdcRun, call_in_netns

pytestmark = [pytest.mark.root, pytest.mark.slow]


ADMIN = ("admin", "s3cret-admin")
VIEWER = ("viewer", "s3cret-viewer")
DISK_MAC = "52:54:00:48:00:21"


def ipmitool(host: HostNetns, address: str, *args: str, suite: int = 17, user=ADMIN, check=True):
    argv = ["ipmitool", "-I", "lanplus", "-H", address, "-U", user[0], "-P", user[1]]
    return host.sh([*argv, "-C", str(suite), "-N", "2", "-R", "2", *args], check=check)


def curl(host: HostNetns, ca: Path, url: str, *args: str, user=ADMIN) -> Any:
    out = host.sh(["curl", "-sS", "--fail-with-body", "--cacert", str(ca), "-u", ":".join(user),
                   *args, url])  # fmt: skip
    return json.loads(out) if out.strip() else None


def spec(tmp_path: Path, guest: GuestPaths) -> str:
    boot = tmp_path / "boot"
    boot.mkdir()
    for src, name in ((guest.vmlinuz, "vmlinuz"), (guest.initrd, "initrd.gz")):
        (boot / name).symlink_to(src)
    # Any machine that network-boots gets DHCP in its guest: its marker tells a PXE boot
    # from a disk boot, whose command line has no vdc.dhcp.
    write(
        boot / "boot.ipxe",
        "#!ipxe\nkernel http://10.72.48.1:8080/vmlinuz initrd=initrd.gz console=ttyS0 quiet"
        " vdc.dhcp=1\ninitrd http://10.72.48.1:8080/initrd.gz\nboot\n",
    )
    write(
        tmp_path / "dnsmasq.conf",
        "port=0\ninterface=eth0\nbind-interfaces\nleasefile-ro\npid-file=\n"
        "dhcp-range=10.72.48.100,10.72.48.200,255.255.255.0,1h\n"
        "dhcp-match=set:ipxe,175\ndhcp-boot=tag:ipxe,http://10.72.48.1:8080/boot.ipxe\n",
    )
    write(tmp_path / "viewer.pw", VIEWER[1] + "\n")

    def kernel_node(name: str, extra: str) -> str:
        return f"""\
kind: Node
name: {name}
smp: {{cpus: 1}}
memory: 192M
kernel: {guest.vmlinux}
initrd: {guest.initrd}
{extra}
---
"""

    return f"""\
kind: Network
name: pxe-net
type: external
address: 10.72.48.254/24
---
kind: Network
name: bmc
type: bmc
address: 10.72.16.1/20
---
kind: Network
name: bmc6
type: bmc
address: fd00:72::1/64
---
kind: BMC
users:
- {{name: {ADMIN[0]}, password: {ADMIN[1]}}}
- {{name: {VIEWER[0]}, password-file: viewer.pw, role: ReadOnly}}
publish: {{ipmi-port: 6230, redfish-port: 8443}}
---
kind: NetworkNamespace
name: boot-server
interfaces:
- network: pxe-net
  addresses: [10.72.48.1/24]
apps:
- name: dnsmasq
  command: [dnsmasq, --keep-in-foreground, --log-facility=-, --conf-file=dnsmasq.conf]
- name: http
  command: [python3, -m, http.server, "8080", --bind, 10.72.48.1, --directory, boot]
---
kind: Node
name: disk-1
smp: {{cpus: 1}}
memory: 192M
interfaces:
- {{network: pxe-net, mac: "{DISK_MAC}"}}
volumes:
- {{kind: image, name: root, image: tiny, copy-on-write: true}}
bmc: {{address: 10.72.16.21}}
---
kind: Image
name: tiny
file: {guest.disk}
---
{kernel_node("k-1", 'cmdline: "console=ttyS0 quiet vdc.bmc=10.72.16.22"')}\
{kernel_node("k-2", 'cmdline: "console=ttyS0 quiet"' + chr(10) + "bmc: {address: 'fd00:72::23'}")}\
{kernel_node("k-3", 'cmdline: "console=ttyS0 quiet vdc.bmc=198.51.100.9"')}"""


def test_bmcs_of_real_guests(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    run = start(host, tmp_path, running, spec(tmp_path, guest))
    ca = tmp_path / "data" / "bmc" / "ca.crt"

    # Addresses: static v4 and v6 at start-up, announced by the guest, and one announced
    # outside every bmc network, reported on the node while the run goes on.
    console(run, "k-1").wait_for("VDC-GUEST-BMC 10.72.16.22")
    console(run, "k-3").wait_for("VDC-GUEST-BMC 198.51.100.9")
    bmcs = {name: run.api(f"/nodes/{name}")[1]["bmc"] for name in ("disk-1", "k-1", "k-2", "k-3")}
    assert bmcs["disk-1"]["state"] == "listening" and bmcs["disk-1"]["origin"] == "static"
    assert bmcs["k-1"] == bmcs["k-1"] | {"state": "listening", "origin": "announced",
                                        "network": "bmc", "ipmi": "10.72.16.22:623"}  # fmt: skip
    assert bmcs["k-2"]["redfish"] == "https://[fd00:72::23]/redfish/v1"
    assert bmcs["k-3"]["state"] == "failed"
    assert "198.51.100.9 is not inside any bmc network" in bmcs["k-3"]["error"]
    assert "10.72.16.22/20" in host.sh(["ip", "-o", "addr", "show", "dev", "bmc"])

    # Published on the host's own addresses: from another namespace, k-1's BMC (the second
    # node: ports 6231 and 8444) answers on the pxe-net bridge's address.
    assert bmcs["k-1"]["published"] == {"ipmi_port": 6231, "redfish_port": 8444}
    assert bmcs["disk-1"]["published"] == {"ipmi_port": 6230, "redfish_port": 8443}
    assert bmcs["k-2"]["published"] is None  # an IPv6 BMC
    outside = ["ip", "netns", "exec", "boot-server"]
    power = host.sh([*outside, "ipmitool", "-I", "lanplus", "-H", "10.72.48.254", "-p", "6231",
                     "-U", ADMIN[0], "-P", ADMIN[1], "-C", "17", "power", "status"])  # fmt: skip
    assert "Chassis Power is on" in power
    system = host.sh([*outside, "curl", "-sS", "--fail", "-k", "-u", ":".join(ADMIN),
                      "https://10.72.48.254:8444/redfish/v1/Systems/k-1"])  # fmt: skip
    assert json.loads(system)["Id"] == "k-1"

    # IPMI with both cipher suites, IPv6 included, and freeipmi.
    assert "Chassis Power is on" in ipmitool(host, "10.72.16.22", "power", "status", suite=3)
    assert "Chassis Power is on" in ipmitool(host, "fd00:72::23", "power", "status")
    info = ipmitool(host, "10.72.16.22", "mc", "info")
    assert "IPMI Version              : 2.0" in info, info
    stat = host.sh(["ipmipower", "-D", "LAN_2_0", "-h", "10.72.16.22", "-u", ADMIN[0],
                    "-p", ADMIN[1], "--stat"])  # fmt: skip
    assert "on" in stat
    wrong = ipmitool(host, "10.72.16.22", "power", "status", user=(ADMIN[0], "nope"), check=False)
    assert "Chassis Power" not in wrong
    refused = ipmitool(host, "10.72.16.22", "power", "off", user=VIEWER, check=False)
    assert "Chassis Power Control: Down/Off" not in refused
    assert run.api("/nodes/k-1")[1]["power_status"] == "On"

    # A power cycle through IPMI reboots the running guest: its console shows a second boot.
    k1 = console(run, "k-1")
    boots = k1.count("VDC-GUEST-READY")
    ipmitool(host, "10.72.16.22", "power", "cycle")
    k1.wait_for("VDC-GUEST-READY", boots + 1)

    # Redfish over HTTPS with the run's CA: the system is the real node.
    system = curl(host, ca, "https://10.72.16.21/redfish/v1/Systems/disk-1")
    assert system["SerialNumber"] == run.api("/nodes/disk-1")[1]["smbios"]["serial"]
    assert system["ProcessorSummary"]["Count"] == 1
    assert system["MemorySummary"]["TotalSystemMemoryGiB"] == pytest.approx(192 / 1024, abs=0.01)
    compat = curl(host, ca, "https://10.72.16.21/redfish/v1/Systems/System.Embedded.1")
    assert compat["SerialNumber"] == system["SerialNumber"]
    assert curl(host, ca, "https://[fd00:72::23]/redfish/v1/Systems/k-2")["Id"] == "k-2"

    # The disk node booted from its disk; a one-time PXE override set through Redfish makes
    # the next boot a network boot, and the boot after that is from the disk again.
    disk = console(run, "disk-1")
    disk.wait_for("VDC-GUEST-READY")
    assert "VDC-GUEST-DHCP" not in disk.wait_in_last_boot("VDC-GUEST-DONE")

    def redfish_once_pxe() -> str:
        import sushy

        auth = sushy.auth.SessionOrBasicAuth(*ADMIN)
        client = sushy.Sushy("https://10.72.16.21/redfish/v1", auth=auth, verify=str(ca))
        try:
            system = client.get_system("/redfish/v1/Systems/disk-1")
            system.set_system_boot_options(
                sushy.BOOT_SOURCE_TARGET_PXE, enabled=sushy.BOOT_SOURCE_ENABLED_ONCE
            )
            system.reset_system(sushy.RESET_FORCE_RESTART)
            return str(system.boot.target)
        finally:
            # Log out now, in the namespace: left to a garbage collection later, sushy
            # retries an unreachable BMC for a minute in whatever thread collects it.
            auth.close()

    call_in_netns(host.name, redfish_once_pxe)
    disk.wait_for("VDC-GUEST-READY", 2)
    disk.wait_in_last_boot("VDC-GUEST-DHCP eth0 10.72.48.")
    boot = curl(host, ca, "https://10.72.16.21/redfish/v1/Systems/disk-1")["Boot"]
    assert boot["BootSourceOverrideEnabled"] == "Disabled"
    curl(host, ca, "https://10.72.16.21/redfish/v1/Systems/disk-1/Actions/ComputerSystem.Reset",
         "-X", "POST", "-H", "Content-Type: application/json",
         "-d", '{"ResetType": "ForceRestart"}')  # fmt: skip
    disk.wait_for("VDC-GUEST-READY", 3)
    assert "VDC-GUEST-DHCP" not in disk.wait_in_last_boot("VDC-GUEST-DONE")

    # The same through IPMI: boot device PXE with the EFI flag, applied at the next reset.
    ipmitool(host, "10.72.16.21", "chassis", "bootdev", "pxe", "options=efiboot")
    flags = ipmitool(host, "10.72.16.21", "chassis", "bootparam", "get", "5")
    assert "Force PXE" in flags and "BIOS EFI boot" in flags, flags
    ipmitool(host, "10.72.16.21", "power", "reset")
    disk.wait_for("VDC-GUEST-READY", 4)
    disk.wait_in_last_boot("VDC-GUEST-DHCP eth0 10.72.48.")

    # What inventory tools read of the node: both PXE boots in the SEL, the NIC with its
    # MAC and link, the volume as a drive of the image's virtual size.
    events = ipmitool(host, "10.72.16.21", "sel", "list")
    assert events.count("User requested PXE boot") == 2, events
    system = "https://10.72.16.21/redfish/v1/Systems/disk-1"
    nic = curl(host, ca, f"{system}/EthernetInterfaces/1")
    assert (nic["MACAddress"], nic["LinkStatus"]) == (DISK_MAC, "LinkUp")
    assert nic["Description"] == "virtio-net NIC on network pxe-net"
    (link,) = curl(host, ca, f"{system}/Storage/1")["Drives"]
    drive = curl(host, ca, "https://10.72.16.21" + link["@odata.id"])
    image = json.loads(host.sh(["qemu-img", "info", "--output=json", str(guest.disk)]))
    assert (drive["Id"], drive["CapacityBytes"]) == ("root", image["virtual-size"])

    assert run.stop() == 0, run.output
    assert "10.72.16.22" not in host.sh(["ip", "-o", "addr"])
