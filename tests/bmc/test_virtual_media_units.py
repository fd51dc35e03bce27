"""Virtual media without a guest: the Redfish bodies and checks, and the download of an
image from a real HTTP server on loopback (checked as ISO 9660, with credentials, the
errors a BMC must tell apart)."""

from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from tests.loopback import serving
from vdc_runtime.bmc.media import MediaError as BmcMediaError
from vdc_runtime.bmc.media import MediaState
from vdc_runtime.bmc.redfish import media as vm
from vdc_runtime.bmc.redfish import resources as rs
from vdc_runtime.bmc.redfish.messages import RedfishError
from vdc_runtime.bmc.target import SystemFacts
from vdc_runtime.nodes import cdrom

FACTS = SystemFacts("node-1", "S1", "0d8f4c0e-7b51-5d3e-9a35-5c1b0f3b2a11", "Acme", "1U", 1024,
                    1, False, False, ())  # fmt: skip
IDENT = rs.Identity(FACTS, "10.0.0.5", 443, "1.2.3")


def ids(err: RedfishError) -> list[str]:
    return [i["MessageId"].rsplit(".", 1)[1] for i in err.infos]


def iso_bytes(size: int = 64 * 1024) -> bytes:
    data = bytearray(size)
    data[0x8000:0x8006] = b"\x01CD001"
    return bytes(data)


# -- resources -----------------------------------------------------------------------------


def test_locations_system_aliases_and_manager() -> None:
    assert vm.locations(IDENT) == [
        ("/redfish/v1/Systems/node-1/VirtualMedia", "/redfish/v1/Systems/node-1/VirtualMedia"),
        (
            "/redfish/v1/Systems/System.Embedded.1/VirtualMedia",
            "/redfish/v1/Systems/node-1/VirtualMedia",
        ),
        ("/redfish/v1/Managers/BMC/VirtualMedia", "/redfish/v1/Managers/BMC/VirtualMedia"),
    ]
    assert rs.computer_system(IDENT, "On", rs.BootOverride())["VirtualMedia"] == {
        "@odata.id": "/redfish/v1/Systems/node-1/VirtualMedia"
    }


def test_collection_and_empty_and_inserted_drive() -> None:
    uri = "/redfish/v1/Managers/BMC/VirtualMedia"
    assert vm.collection(uri)["Members"] == [{"@odata.id": f"{uri}/Cd"}]
    empty = vm.virtual_media(uri, MediaState())
    assert empty["@odata.type"] == "#VirtualMedia.v1_6_5.VirtualMedia"
    assert (empty["Inserted"], empty["Image"], empty["ConnectedVia"]) == (
        False,
        None,
        "NotConnected",
    )
    assert empty["MediaTypes"] == ["CD", "DVD"] and empty["WriteProtected"] is True
    assert empty["Actions"]["#VirtualMedia.InsertMedia"]["target"] == (
        f"{uri}/Cd/Actions/VirtualMedia.InsertMedia"
    )
    full = vm.virtual_media(uri, MediaState("https://h/img/boot.iso", "boot.iso", "u"))
    assert (full["Inserted"], full["ImageName"], full["ConnectedVia"]) == (True, "boot.iso", "URI")
    assert (full["TransferProtocolType"], full["UserName"], full["Password"]) == (
        "HTTPS",
        "u",
        None,
    )
    assert vm.virtual_media(uri, MediaState("file:///x.iso", "x"))["TransferProtocolType"] is None


# -- InsertMedia and EjectMedia bodies -----------------------------------------------------


def test_insert_request_as_sushy_and_ironic_send_it() -> None:
    assert vm.insert_request({"Image": "http://10.0.0.1/a.iso"}) == vm.Insert(
        "http://10.0.0.1/a.iso"
    )
    body = {
        "Image": "https://h/a.iso",
        "Inserted": True,
        "WriteProtected": True,
        "UserName": "u",
        "Password": "p",
        "TransferProtocolType": "HTTPS",
        "TransferMethod": "Stream",
    }
    assert vm.insert_request(body) == vm.Insert("https://h/a.iso", "u", "p")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, ["ActionParameterMissing"]),
        ({"Image": 3}, ["ActionParameterValueTypeError"]),
        ({"Image": "nfs://h/a.iso"}, ["ActionParameterValueFormatError"]),
        ({"Image": "/a.iso"}, ["ActionParameterValueFormatError"]),
        ({"Image": "http://h/a.iso", "TransferProtocolType": "HTTPS"},
         ["ActionParameterValueFormatError"]),
        ({"Image": "http://h/a.iso", "TransferProtocolType": "NFS"},
         ["ActionParameterValueNotInList"]),
        ({"Image": "http://h/a.iso", "TransferMethod": "Copy"}, ["ActionParameterValueNotInList"]),
        ({"Image": "http://h/a.iso", "WriteProtected": False}, ["ActionParameterNotSupported"]),
        ({"Image": "http://h/a.iso", "Inserted": False}, ["ActionParameterNotSupported"]),
        ({"Image": "http://h/a.iso", "Password": "p"}, ["ActionParameterMissing"]),
        ({"Image": "http://h/a.iso", "Colour": 1}, ["ActionParameterUnknown"]),
        ({"Password": 5, "Slot": 1}, ["ActionParameterUnknown", "ActionParameterValueTypeError",
                                      "ActionParameterMissing"]),
    ],
)  # fmt: skip
def test_insert_request_refused(body: dict, expected: list[str]) -> None:
    with pytest.raises(RedfishError) as info:
        vm.insert_request(body)
    assert info.value.status == 400
    assert ids(info.value) == expected
    assert "5" not in str(info.value.infos) or "Password" not in body  # never echoed


def test_eject_takes_no_parameters() -> None:
    vm.eject_request({})
    vm.eject_request({"@odata.type": "x"})
    with pytest.raises(RedfishError) as info:
        vm.eject_request({"Image": "x"})
    assert ids(info.value) == ["ActionParameterUnknown"]


@pytest.mark.parametrize(
    ("kind", "status", "message_id"),
    [
        ("in-use", 409, "ResourceInUse"),
        ("denied", 400, "AccessDenied"),
        ("missing", 400, "ResourceMissingAtURI"),
        ("bad-image", 400, "ResourceAtUriInUnknownFormat"),
        ("bad-url", 400, "ActionParameterValueFormatError"),
        ("unreachable", 400, "CouldNotEstablishConnection"),
    ],
)
def test_refusals(kind: cdrom.MediaErrorKind, status: int, message_id: str) -> None:
    err = vm.refusal(BmcMediaError(kind, "why", "http://h/a.iso"))
    assert (err.status, ids(err)) == (status, [message_id])
    assert err.body()["error"]["code"] == f"Base.1.16.0.{message_id}"


# -- the node side: URL and image checks, downloads ----------------------------------------


def test_url_and_image_checks(tmp_path: Path) -> None:
    assert cdrom.check_url("HTTPS://h/a.iso") == "https"
    for bad in ("ftp://h/a.iso", "http:///a.iso", "a.iso"):
        with pytest.raises(cdrom.MediaError) as info:
            cdrom.check_url(bad)
        assert info.value.kind == "bad-url"
    cdrom.check_iso_head(iso_bytes(), "u")
    with pytest.raises(cdrom.MediaError, match="not an ISO 9660 image"):
        cdrom.check_iso_head(b"\0" * 40000, "u")
    (tmp_path / "a.iso").write_bytes(iso_bytes())
    cdrom.check_iso_file(tmp_path / "a.iso")
    assert cdrom.image_name("http://h/images/boot.iso?x=1") == "boot.iso"
    assert cdrom.image_name("http://h/") == "h"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest_asyncio.fixture
async def server() -> AsyncIterator[str]:
    """Images on loopback: good.iso, secret.iso (Basic auth u:p), text.txt, small.iso,
    huge.iso (a Content-Length beyond the limit), broken (500)."""
    iso = iso_bytes(200 * 1024)

    async def good(request: web.Request) -> web.StreamResponse:
        return web.Response(body=iso)

    async def secret(request: web.Request) -> web.StreamResponse:
        wanted = "Basic " + base64.b64encode(b"u:p").decode()
        if request.headers.get("Authorization") != wanted:
            return web.Response(status=401, headers={"WWW-Authenticate": "Basic"})
        return web.Response(body=iso)

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(cdrom.MAX_IMAGE_BYTES + 1)})
        await response.prepare(request)
        await response.write(iso[:4096])
        return response

    app = web.Application()
    app.router.add_get("/good.iso", good)
    app.router.add_get("/secret.iso", secret)
    app.router.add_get("/text.txt", fixed(b"hello\n" * 10000))
    app.router.add_get("/small.iso", fixed(b"CD001"))
    app.router.add_get("/huge.iso", huge)
    app.router.add_get("/broken", fixed(b"", 500))
    async with serving(app) as url:
        yield url


def fixed(data: bytes, status: int = 200) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=data, status=status)

    return handler


async def test_download_checks_the_image(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "media" / "a.iso"
    await cdrom.download(f"{server}/good.iso", dest)
    assert dest.read_bytes()[0x8001:0x8006] == b"CD001"
    await cdrom.download(f"{server}/secret.iso", tmp_path / "s.iso", user="u", password="p")
    assert (tmp_path / "s.iso").stat().st_size == 200 * 1024
    cases = {
        "/secret.iso": "denied",
        "/missing.iso": "missing",
        "/broken": "unreachable",
        "/text.txt": "bad-image",
        "/small.iso": "bad-image",
        "/huge.iso": "bad-image",
    }
    for path, kind in cases.items():
        with pytest.raises(cdrom.MediaError) as info:
            await cdrom.download(f"{server}{path}", tmp_path / "x.iso")
        assert (info.value.kind, info.value.url) == (kind, f"{server}{path}")
    with pytest.raises(cdrom.MediaError) as info:
        await cdrom.download(f"http://127.0.0.1:{closed_port()}/a.iso", tmp_path / "x.iso")
    assert info.value.kind == "unreachable"
    # Nothing is left behind by a failed download, not even its partial file.
    left = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())  # noqa: ASYNC240
    assert left == ["a.iso", "s.iso"]
