"""A node's CD drive through `vdc run`: an ISO in it at start (`cdrom: {image: NAME}`),
booted by the firmware, reported by the Redfish BMC, ejected and inserted again by URL
from a web server in one of the lab's namespaces.

The clients (curl) run in the test's host namespace, where `vdc run` puts the bridges;
the image server runs inside the lab, so nothing leaves the namespaces the test made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.guest.build import GuestPaths
from tests.guest.iso import build_iso, iso_boots
from tests.prereqs import require
from tests.runtime.guests import console, start
from tests.runtime.harness import HostNetns, VdcRun

pytestmark = [pytest.mark.root, pytest.mark.slow]

ADMIN = ("admin", "s3cret-admin")
BMC = "10.72.17.11"
MEDIA = f"https://{BMC}/redfish/v1/Managers/BMC/VirtualMedia/Cd"


def spec(tmp_path: Path, iso: Path) -> str:
    return f"""\
kind: Network
name: lab
type: external
address: 10.72.49.254/24
---
kind: Network
name: bmc
type: bmc
address: 10.72.17.1/24
---
kind: BMC
users:
- {{name: {ADMIN[0]}, password: {ADMIN[1]}}}
---
kind: NetworkNamespace
name: images
interfaces:
- network: lab
  addresses: [10.72.49.1/24]
apps:
- name: http
  command: [python3, -m, http.server, "8080", --bind, 10.72.49.1, --directory, {iso.parent}]
---
kind: Image
name: guest-iso
file: {iso}
---
kind: Node
name: cd-1
smp: {{cpus: 1}}
memory: 256M
interfaces: [lab]
cdrom: {{image: guest-iso}}
bmc: {{address: {BMC}}}
"""


def redfish(host: HostNetns, ca: Path, url: str, *args: str) -> Any:
    out = host.sh(["curl", "-sS", "--fail-with-body", "--cacert", str(ca), "-u", ":".join(ADMIN),
                   *args, url])  # fmt: skip
    return json.loads(out) if out.strip() else None


def post(host: HostNetns, ca: Path, url: str, body: dict[str, Any]) -> Any:
    args = ["-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(body)]
    return redfish(host, ca, url, *args)


def test_cd_at_start_then_eject_and_insert(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    require.iso_tools()
    images = tmp_path / "images"
    images.mkdir()
    iso = build_iso(guest, images / "guest.iso")
    run = start(host, tmp_path, running, spec(tmp_path, iso))
    ca = tmp_path / "data" / "bmc" / "ca.crt"

    # No disk and an ISO in the drive: the firmware boots the CD by itself.
    cd = console(run, "cd-1")
    cd.wait_for("VDC-GUEST-READY")
    assert iso_boots(cd.text.partition("VDC-GUEST-READY")[0]) == 1
    media = redfish(host, ca, MEDIA)
    assert (media["Inserted"], media["ImageName"]) == (True, "guest-iso")
    assert media["Image"].startswith("file:///")
    system = f"https://{BMC}/redfish/v1/Systems/cd-1/VirtualMedia/Cd"
    assert redfish(host, ca, system)["Image"] == media["Image"]

    # Ejected: the image stays in the cache (it is the spec's), the drive is empty.
    assert post(host, ca, f"{MEDIA}/Actions/VirtualMedia.EjectMedia", {}) is None
    assert redfish(host, ca, MEDIA)["Inserted"] is False
    assert iso.exists()

    # Inserted again by URL, from the web server inside the lab, into the running machine.
    url = "http://10.72.49.1:8080/guest.iso"
    post(host, ca, f"{MEDIA}/Actions/VirtualMedia.InsertMedia", {"Image": url})
    media = redfish(host, ca, MEDIA)
    assert (media["Inserted"], media["Image"], media["ImageName"]) == (True, url, "guest.iso")
    downloaded = list((tmp_path / "cache" / "virtual-media" / "cd-1").iterdir())
    assert [p.suffix for p in downloaded] == [".iso"]
    assert downloaded[0].read_bytes() == iso.read_bytes()

    # A power cycle boots it again from the CD, the one the BMC put in.
    assert iso_boots(cd.text) == 1
    post(host, ca, f"https://{BMC}/redfish/v1/Systems/cd-1/Actions/ComputerSystem.Reset",
         {"ResetType": "ForceRestart"})  # fmt: skip
    cd.wait_for("VDC-GUEST-READY", 2)
    assert iso_boots(cd.text) == 2
