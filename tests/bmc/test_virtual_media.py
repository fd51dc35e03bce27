"""Virtual media on a real guest, driven by sushy exactly as Ironic's redfish-virtual-media
boot interface drives a server: find the CD among the system's virtual media, insert an
ISO by URL, a one-time CD boot, ForceRestart; then eject.

The node boots the test guest's own disk by default (SeaBIOS tries the disk before the
CD), so only a CD boot override brings up the ISO, whose ISOLINUX prints `ISO_MARKER`
on the console before the guest's kernel starts. The ISO is served by an HTTP server on
loopback in the test; the BMC's Redfish listens on loopback too.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from tests.bmc.conftest import RunningMachine, start_machine
from tests.guest.build import GuestPaths
from tests.guest.iso import build_iso, iso_boots
from tests.prereqs import require
from vdc_runtime.bmc.redfish import RedfishService
from vdc_runtime.bmc.tls import CertificateAuthority, ssl_context
from vdc_runtime.bmc.users import BmcUser, Users
from vdc_runtime.nodes.layout import DriveLayout

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NODE = "vm-node"
ADMIN = ("admin", "Adm1n-secret")
READY = "VDC-GUEST-READY"
SYSTEM = f"/redfish/v1/Systems/{NODE}"
CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 120) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


async def eventually_true(check: Callable[[], bool], within: float = 120) -> None:
    async def checked() -> bool:
        return check()

    await eventually(checked, within)


class Lab:
    def __init__(
        self, node: RunningMachine, url: str, ca: Path, images: str, tls: tuple[Path, Path]
    ) -> None:
        self.node = node
        self.url = url
        self.ca = ca
        self.images = images
        self.tls = tls

    def count(self, text: str) -> int:
        return self.node.console.count(text)

    def iso_boots(self) -> int:
        return iso_boots(self.node.console)

    async def wait_iso_boots(self, count: int) -> None:
        await eventually_true(lambda: self.iso_boots() >= count)

    async def cd(self) -> dict[str, Any] | None:
        """What QEMU says is in the CD drive (None: empty)."""
        for device in await self.node.machine.control.execute("query-block"):
            if device.get("qdev") == "cd0":
                return device.get("inserted")
        raise AssertionError("no CD drive in QEMU")

    async def cd_bootindex(self) -> int:
        path = "/machine/peripheral/cd0"
        arguments = {"path": path, "property": "bootindex"}
        return await self.node.machine.control.execute("qom-get", arguments)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def lab(guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    require.iso_tools()
    tmp = tmp_path_factory.mktemp("vmedia")
    # The guest's disk boots by itself; an overlay keeps the shared image untouched.
    overlay = tmp / "disk.qcow2"
    qemu_img = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(guest.disk), "-F", "raw"]
    await asyncio.to_thread(subprocess.run, [*qemu_img, str(overlay)], check=True)
    disk = DriveLayout("root", "image", overlay, "qcow2", "writeback", read_only=False)
    iso = build_iso(guest, tmp / "guest.iso")
    (tmp / "notes.txt").write_text("not a CD image\n" * 4000)

    app = web.Application()
    app.router.add_static("/", tmp)
    images = web.AppRunner(app, access_log=None)
    await images.setup()
    site = web.TCPSite(images, "127.0.0.1", 0)
    await site.start()
    images_url = f"http://127.0.0.1:{images.addresses[0][1]}"
    assert iso.exists()

    ca = CertificateAuthority.load_or_create(tmp / "ca")
    cert, key = ca.issue(["127.0.0.1"], tmp / "certs")
    service = RedfishService(
        Users((BmcUser(*ADMIN, "Administrator"),)), ssl_for=lambda _: ssl_context(cert, key)
    )
    node = await start_machine(guest, tmp, NODE, kernel=False, drives=(disk,))
    port = free_port()
    try:
        await service.add("127.0.0.1", node.target, port)
        yield Lab(node, f"https://127.0.0.1:{port}", ca.cert_path, images_url, (cert, key))
    finally:
        await service.close()
        await node.machine.stop()
        await images.cleanup()


@pytest.fixture
def trusting_our_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_ENV:
        monkeypatch.delenv(name, raising=False)


def connect(lab: Lab, system_uri: str = SYSTEM) -> tuple[Any, Any, Any]:
    """As Ironic does: the system, then the CD among its virtual media (and the manager's)."""
    import sushy

    auth = sushy.auth.SessionOrBasicAuth(*ADMIN)
    client = sushy.Sushy(f"{lab.url}/redfish/v1", auth=auth, verify=str(lab.ca))
    system = client.get_system(system_uri)
    (cd,) = [
        m for m in system.virtual_media.get_members() if sushy.VirtualMediaType.CD in m.media_types
    ]
    (manager,) = system.managers
    (manager_cd,) = manager.virtual_media.get_members()
    return auth, system, (cd, manager_cd)


async def test_ironic_virtual_media_boot(lab: Lab, trusting_our_ca: None) -> None:
    import sushy
    from sushy import exceptions
    from sushy.resources.manager.constants import ConnectedVia

    # The disk's boot first: the ISO is nowhere yet.
    await lab.node.wait_console(READY, 1)
    assert lab.iso_boots() == 0
    auth, system, (cd, manager_cd) = await asyncio.to_thread(connect, lab)
    assert (cd.inserted, cd.image, cd.write_protected) == (False, None, True)
    assert cd.connected_via == ConnectedVia.NOT_CONNECTED
    assert cd.path == f"{SYSTEM}/VirtualMedia/Cd"
    assert manager_cd.path == "/redfish/v1/Managers/BMC/VirtualMedia/Cd"
    assert await lab.cd() is None

    # Errors first, while the drive is empty: each a DMTF body, and the drive stays empty.
    def refused(url: str) -> Any:
        with pytest.raises(exceptions.HTTPError) as info:
            cd.insert_media(url, inserted=True, write_protected=True)
        return info.value

    closed = f"http://127.0.0.1:{free_port()}/guest.iso"
    error = await asyncio.to_thread(refused, closed)
    assert (error.status_code, error.code) == (400, "Base.1.16.0.CouldNotEstablishConnection")
    assert closed in error.detail
    error = await asyncio.to_thread(refused, f"{lab.images}/notes.txt")
    assert (error.status_code, error.code) == (400, "Base.1.16.0.ResourceAtUriInUnknownFormat")
    error = await asyncio.to_thread(refused, f"{lab.images}/nowhere.iso")
    assert (error.status_code, error.code) == (400, "Base.1.16.0.ResourceMissingAtURI")
    assert await lab.cd() is None

    # Insert, as Ironic's _insert_vmedia does; the running machine gets it at once.
    image = f"{lab.images}/guest.iso"
    await asyncio.to_thread(cd.insert_media, image, inserted=True, write_protected=True)
    for view in (cd, manager_cd):  # one drive, both places
        await asyncio.to_thread(view.refresh)
        assert (view.inserted, view.image, view.image_name) == (True, image, "guest.iso")
        assert view.connected_via == ConnectedVia.URI
    inserted = await lab.cd()
    assert inserted is not None and inserted["ro"] and inserted["file"].endswith(".iso")
    assert lab.count(READY) == 1  # no reboot for that

    # A second insertion while one is in: refused, the first stays.
    error = await asyncio.to_thread(refused, image)
    assert (error.status_code, error.code) == (409, "Base.1.16.0.ResourceInUse")
    assert (await lab.cd() or {}).get("file") == inserted["file"]

    # One-time CD boot and ForceRestart, as Ironic's prepare_ramdisk and reboot.
    await asyncio.to_thread(
        system.set_system_boot_options,
        sushy.BootSource.CD,
        enabled=sushy.BootSourceOverrideEnabled.ONCE,
    )
    await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_RESTART)
    await lab.wait_iso_boots(1)
    await lab.node.wait_console(READY, 2)  # the ISO's kernel came up

    async def consumed() -> bool:
        await asyncio.to_thread(system.refresh)
        return system.boot.enabled == sushy.BootSourceOverrideEnabled.DISABLED and (
            await lab.cd_bootindex() == -1  # the node's own order is back
        )

    await eventually(consumed, 60)

    # With the override consumed, a restart boots the disk again, the ISO still in.
    await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_RESTART)
    await lab.node.wait_console(READY, 3)
    assert lab.iso_boots() == 1

    # Continuous: every boot from the CD until the override is lifted.
    await asyncio.to_thread(
        system.set_system_boot_options,
        sushy.BootSource.CD,
        enabled=sushy.BootSourceOverrideEnabled.CONTINUOUS,
    )
    for boot in (4, 5):
        await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_RESTART)
        await lab.node.wait_console(READY, boot)
        assert lab.iso_boots() == boot - 2

    # Eject through the manager's view, as older Ironic (and iDRAC clients) do.
    await asyncio.to_thread(manager_cd.eject_media)
    for view in (cd, manager_cd):
        await asyncio.to_thread(view.refresh)
        assert (view.inserted, view.image) == (False, None)
    assert await lab.cd() is None
    media_dir = lab.node.machine.layout.media_dir
    assert media_dir is not None and list(media_dir.iterdir()) == []
    # The CD override still stands, but the tray is empty: the firmware goes on to the disk.
    await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_RESTART)
    await lab.node.wait_console(READY, 6)
    assert lab.iso_boots() == 3
    await asyncio.to_thread(
        system.set_system_boot_options,
        sushy.BootSource.NONE,
        enabled=sushy.BootSourceOverrideEnabled.DISABLED,
    )
    await asyncio.to_thread(auth.close)


async def test_uefi_node_boots_the_cd(
    guest: GuestPaths, tmp_path: Path, lab: Lab, trusting_our_ca: None
) -> None:
    """The same drive under OVMF on q35 (AHCI): inserted into a running UEFI node, a
    one-time CD boot starts the ISO's EFI loader."""
    import sushy

    node = await start_machine(guest, tmp_path, "uefi-node", kernel=False, uefi=True,
                               memory="512M")  # fmt: skip
    service = RedfishService(
        Users((BmcUser(*ADMIN, "Administrator"),)),
        ssl_for=lambda _: ssl_context(*lab.tls),
    )
    port = free_port()
    try:
        await service.add("127.0.0.1", node.target, port)
        # Nothing to boot yet: OVMF tries the empty drive and goes on.
        await node.wait_console("UEFI QEMU DVD-ROM")
        uefi = Lab(node, f"https://127.0.0.1:{port}", lab.ca, lab.images, lab.tls)
        auth, system, (cd, _) = await asyncio.to_thread(
            connect, uefi, "/redfish/v1/Systems/uefi-node"
        )
        await asyncio.to_thread(cd.insert_media, f"{lab.images}/guest.iso")
        await asyncio.to_thread(
            system.set_system_boot_options,
            sushy.BootSource.CD,
            enabled=sushy.BootSourceOverrideEnabled.ONCE,
        )
        await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_RESTART)
        await eventually_true(lambda: iso_boots(node.console) == 1)
        await node.wait_console(READY)
        console = node.console
        assert "Welcome to GRUB!" in console  # the EFI loader, not ISOLINUX
        assert console.index("Welcome to GRUB!") < console.index(READY)
        await asyncio.to_thread(cd.eject_media)
        await asyncio.to_thread(auth.close)
    finally:
        await service.close()
        await node.machine.stop()
