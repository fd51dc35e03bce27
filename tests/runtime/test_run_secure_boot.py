"""A node with `uefi-secure-boot: true` through `vdc run`: OVMF's Secure Boot build with
Microsoft's keys boots Debian's signed shim, GRUB and kernel from the node's disk, the
guest reads the firmware's SecureBoot variable as 1, and the node's Redfish BMC and the
REST API say so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.guest.build import GuestPaths
from tests.guest.signed import SIGNED_MARKER, build_signed_disk
from tests.prereqs import require
from tests.runtime.guests import console, start
from tests.runtime.harness import HostNetns, VdcRun

pytestmark = [pytest.mark.root, pytest.mark.slow]

ADMIN = ("admin", "s3cret-admin")
BMC = "10.72.19.11"


def spec(disk: Path) -> str:
    return f"""\
kind: Network
name: bmc
type: bmc
address: 10.72.19.1/24
---
kind: BMC
users:
- {{name: {ADMIN[0]}, password: {ADMIN[1]}}}
---
kind: Image
name: signed
file: {disk}
---
kind: Node
name: sb-1
smp: {{cpus: 1}}
memory: 512M
machine: q35
uefi: true
uefi-secure-boot: true
volumes:
- {{kind: image, name: root, image: signed, copy-on-write: true}}
bmc: {{address: {BMC}}}
"""


def redfish(host: HostNetns, ca: Path, path: str) -> Any:
    out = host.sh(["curl", "-sS", "--fail-with-body", "--cacert", str(ca), "-u", ":".join(ADMIN),
                   f"https://{BMC}{path}"])  # fmt: skip
    return json.loads(out)


def test_secure_boot_node(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    disk = build_signed_disk(require.signed_loaders(), guest, tmp_path / "signed.img")
    run = start(host, tmp_path, running, spec(disk))
    con = console(run, "sb-1")
    text = con.wait_for("VDC-GUEST-EFI")
    assert SIGNED_MARKER in text
    assert "VDC-GUEST-EFI secureboot=1" in text
    node = run.api("/nodes/sb-1")[1]
    assert (node["secure_boot"], node["secure_boot_next"]) == (True, True)
    # Its own variable store, made from the template with the keys enrolled.
    assert (tmp_path / "data" / "nvram" / "sb-1.secboot.fd").exists()
    assert not (tmp_path / "data" / "nvram" / "sb-1.fd").exists()
    ca = tmp_path / "data" / "bmc" / "ca.crt"
    body = redfish(host, ca, "/redfish/v1/Systems/sb-1/SecureBoot")
    fields = [body[k] for k in ("SecureBootEnable", "SecureBootCurrentBoot", "SecureBootMode")]
    assert fields == [True, "Enabled", "UserMode"]
    assert run.stop() == 0, run.output
