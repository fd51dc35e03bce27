"""Redfish against a real guest: curl and sushy drive the machine, the DMTF validators judge.

One test guest (with a small disk, so a boot override has a device to move) boots under
TCG for the whole module, with its BMC's Redfish on 127.0.0.1 and a free high port, HTTPS
with a certificate from a CA made in tmp. The tests run in any order: each that changes the
power leaves the machine on and booted, and each that needs a booted guest first waits for
the boot in progress (`Bmc.settle`; the module's first test finds the first boot under
way). Power changes are proven by the console (`VDC-GUEST-READY` once per boot) and by the
target's own power state.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import socket
import ssl
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.bmc.conftest import RunningMachine, start_machine
from tests.e2e.cluster import build
from tests.guest.build import GuestPaths
from tests.prereqs import require
from vdc_runtime.bmc.machine_target import MachineTarget
from vdc_runtime.bmc.redfish import RedfishService
from vdc_runtime.bmc.target import BootOverride
from vdc_runtime.bmc.tls import CertificateAuthority, ssl_context
from vdc_runtime.bmc.users import BmcUser, Users
from vdc_runtime.nodes.machine import Machine

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NODE = "rf-node"
READY = "VDC-GUEST-READY"
ACPI_READY = "VDC-GUEST-ACPI ok"
ADMIN = ("admin", "Adm1n-secret")
OPERATOR = ("oper", "0per-secret")
VIEWER = ("viewer", "V1ewer-secret")
SYSTEM = f"/redfish/v1/Systems/{NODE}"
RESET = f"{SYSTEM}/Actions/ComputerSystem.Reset"
SESSIONS = "/redfish/v1/SessionService/Sessions"
# requests lets these override a Session's own `verify`: with them set, sushy and the
# protocol validator would check our certificate against the system CAs instead of ours.
CA_ENV = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


def free_port(address: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 120) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.2)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def message_ids(self) -> list[str]:
        infos = self.json()["error"]["@Message.ExtendedInfo"]
        return [i["MessageId"].rsplit(".", 1)[1] for i in infos]


class Bmc:
    """The BMC under test and a curl to talk to it."""

    def __init__(self, node: RunningMachine, service: RedfishService, port: int, ca: Path):
        self.node = node
        self.service = service
        self.port = port
        self.ca = ca
        self.url = f"https://127.0.0.1:{port}"
        self._n = 0

    @property
    def target(self) -> MachineTarget:
        return self.node.target

    async def curl(
        self,
        path: str,
        *,
        method: str | None = None,
        user: tuple[str, str] | None = ADMIN,
        token: str | None = None,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
        options: tuple[str, ...] = (),
    ) -> Answer:
        self._n += 1
        out = self.ca.parent / f"curl-{self._n}.out"
        argv = ["curl", "-sS", "--cacert", str(self.ca), "--max-time", "120", "-D", "-"]
        if method == "HEAD":
            argv += ["-I", "-o", os.devnull]  # curl reads no body after a HEAD
        else:
            argv += ["-o", str(out)]
        if method not in (None, "HEAD"):
            argv += ["-X", method]
        if user is not None:
            argv += ["-u", f"{user[0]}:{user[1]}"]
        if token is not None:
            argv += ["-H", f"X-Auth-Token: {token}"]
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            argv += ["--data-binary", "@-"]
            argv += ["-H", f"Content-Type: {content_type}" if content_type else "Content-Type:"]
        for name, value in (headers or {}).items():
            argv += ["-H", f"{name}: {value}"]
        argv += [*options, self.url + path]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, stderr = await proc.communicate(data)
        assert proc.returncode == 0, f"curl {path}: {stderr.decode()}"
        # The last header block is the final answer (a 100 Continue may precede it).
        block = re.split(rb"\r\n\r\n(?=HTTP/)", stdout.strip())[-1].decode()
        status_line, *lines = block.split("\r\n")
        answer_headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            answer_headers[name.strip().lower()] = value.strip()
        payload = out.read_bytes() if out.exists() else b""
        return Answer(int(status_line.split()[1]), answer_headers, payload)

    async def get(self, path: str, **kw: Any) -> Any:
        answer = await self.curl(path, **kw)
        assert answer.status == 200, (path, answer.status, answer.body[:500])
        return answer.json()

    async def reset(self, reset_type: str, **kw: Any) -> Answer:
        return await self.curl(RESET, method="POST", body={"ResetType": reset_type}, **kw)

    def boots(self) -> int:
        return self.node.console.count(READY)

    async def booted(self, count: int) -> None:
        """Wait for boot number `count` to reach its ACPI handler (GracefulShutdown needs it)."""
        await self.node.wait_console(READY, count)
        await self.node.wait_console(ACPI_READY, count)
        assert await self.target.power_state() == "On"

    async def settle(self) -> int:
        """Wait for the boot in progress (the first one, if the module's tests start here)
        to reach its ACPI handler, and return its number."""
        boots = max(self.boots(), 1)
        await self.booted(boots)
        return boots

    async def power(self, state: str, within: float = 60) -> None:
        async def reached() -> bool:
            return await self.target.power_state() == state

        await eventually(reached, within)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningMachine]:
    running = await start_machine(
        guest,
        tmp_path_factory.mktemp("rf"),
        NODE,
        disk=True,
        smbios="  manufacturer: Acme\n  product: Rack 1U\n",
    )
    try:
        yield running
    finally:
        await running.machine.stop()


USERS = Users(
    (
        BmcUser(*ADMIN, "Administrator"),
        BmcUser(*OPERATOR, "Operator"),
        BmcUser(*VIEWER, "ReadOnly"),
    )
)


@contextlib.asynccontextmanager
async def serve_redfish(node: RunningMachine, tmp: Path) -> AsyncIterator[Bmc]:
    """A Redfish service for `node` on a free loopback port, its certificate from a CA in
    `tmp` (for both loopback addresses)."""
    ca = CertificateAuthority.load_or_create(tmp / "ca")
    cert, key = ca.issue(["127.0.0.1", "::1"], tmp / "certs")
    service = RedfishService(USERS, ssl_for=lambda _address: ssl_context(cert, key))
    port = free_port()
    await service.add("127.0.0.1", node.target, port)
    try:
        yield Bmc(node, service, port, ca.cert_path)
    finally:
        await service.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bmc(node: RunningMachine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bmc]:
    async with serve_redfish(node, tmp_path_factory.mktemp("rf-bmc")) as running:
        yield running


async def disk_bootindex(machine: Machine) -> int:
    path = "/machine/peripheral/disk0"
    return await machine.control.execute("qom-get", {"path": path, "property": "bootindex"})


# -- reading -------------------------------------------------------------------------------------


async def test_public_documents_need_no_login(bmc: Bmc) -> None:
    assert await bmc.get("/redfish", user=None) == {"v1": "/redfish/v1/"}
    assert await bmc.get("/", user=None) is None  # Placemat's liveness answer
    root = await bmc.get("/redfish/v1", user=None)
    assert root == await bmc.get("/redfish/v1/", user=None)
    assert root["Systems"] == {"@odata.id": "/redfish/v1/Systems"}
    assert root["Links"]["Sessions"] == {"@odata.id": SESSIONS}
    uuid.UUID(root["UUID"])
    odata = await bmc.get("/redfish/v1/odata", user=None)
    assert odata["@odata.context"] == "/redfish/v1/$metadata"
    metadata = await bmc.curl("/redfish/v1/$metadata", user=None)
    assert metadata.status == 200
    assert metadata.headers["content-type"].startswith("application/xml")
    assert ET.fromstring(metadata.body).tag.endswith("Edmx")
    # Everything else needs credentials, and says how to give them.
    refused = await bmc.curl(SYSTEM, user=None)
    assert refused.status == 401
    assert refused.headers["www-authenticate"].startswith("Basic")
    assert refused.message_ids() == ["NoValidSession"]


async def test_headers_a_redfish_service_sends(bmc: Bmc) -> None:
    answer = await bmc.curl("/redfish/v1/")
    headers = answer.headers
    assert headers["odata-version"] == "4.0"
    assert headers["content-type"].replace(" ", "") == "application/json;charset=utf-8"
    assert headers["cache-control"] == "no-store"
    assert headers["allow"] == "GET, HEAD"
    assert "ServiceRoot.v1_" in headers["link"] and "rel=describedby" in headers["link"]
    assert headers["etag"].startswith('W/"')
    system = await bmc.curl(SYSTEM)
    assert system.headers["allow"] == "GET, HEAD, PATCH"
    head = await bmc.curl(SYSTEM, method="HEAD")
    assert head.status == 200
    assert head.headers["etag"] == system.headers["etag"]
    assert head.headers["content-length"] == system.headers["content-length"]


async def test_the_system_is_the_node(bmc: Bmc, node: RunningMachine) -> None:
    facts = node.target.facts
    collection = await bmc.get("/redfish/v1/Systems")
    assert collection["Members"] == [{"@odata.id": SYSTEM}]
    assert collection["Members@odata.count"] == 1
    system = await bmc.get(SYSTEM)
    assert system["Id"] == NODE
    assert system["SerialNumber"] == f"SERIAL-{NODE}"
    assert system["UUID"] == facts.uuid
    assert (system["Manufacturer"], system["Model"]) == ("Acme", "Rack 1U")
    assert system["MemorySummary"]["TotalSystemMemoryGiB"] == 0.25
    assert system["ProcessorSummary"]["Count"] == 1
    assert system["PowerState"] == "On"
    assert "TrustedModules" not in system  # the node has no TPM
    assert system["Links"]["ManagedBy"] == [{"@odata.id": "/redfish/v1/Managers/BMC"}]
    assert system["Boot"]["BootSourceOverrideEnabled"] == "Disabled"
    # Placemat's URI is the same system, for its scripts.
    placemat = await bmc.get("/redfish/v1/Systems/System.Embedded.1")
    assert placemat == system
    chassis = await bmc.get(system["Links"]["Chassis"][0]["@odata.id"])
    assert chassis["SerialNumber"] == f"SERIAL-{NODE}" and chassis["PowerState"] == "On"
    assert await bmc.get("/redfish/v1/Chassis/System.Embedded.1") == chassis
    manager = await bmc.get("/redfish/v1/Managers/BMC")
    assert manager["Links"]["ManagerForServers"] == [{"@odata.id": SYSTEM}]
    nics = await bmc.get(system["EthernetInterfaces"]["@odata.id"])
    assert nics["Members@odata.count"] == len(facts.macs)
    info = await bmc.get(system["Actions"]["#ComputerSystem.Reset"]["@Redfish.ActionInfo"])
    assert "PushPowerButton" in info["Parameters"][0]["AllowableValues"]


# -- protocol --------------------------------------------------------------------------------


async def test_etags(bmc: Bmc) -> None:
    first = await bmc.curl(SYSTEM)
    etag = first.headers["etag"]
    unchanged = await bmc.curl(SYSTEM, headers={"If-None-Match": etag})
    assert unchanged.status == 304 and unchanged.body == b""
    assert (await bmc.curl(SYSTEM, headers={"If-None-Match": '"other"'})).status == 200
    patch = {"Boot": {"BootSourceOverrideTarget": "Pxe", "BootSourceOverrideEnabled": "Continuous"}}
    stale = await bmc.curl(SYSTEM, method="PATCH", body=patch, headers={"If-Match": '"stale"'})
    assert stale.status == 412
    assert stale.message_ids() == ["PreconditionFailed"]
    assert bmc.target.boot_override().enabled == "disabled"  # the refused write did nothing
    done = await bmc.curl(SYSTEM, method="PATCH", body=patch, headers={"If-Match": etag})
    assert done.status == 200
    assert done.json()["Boot"]["BootSourceOverrideTarget"] == "Pxe"
    assert done.headers["etag"] != etag
    # The old tag is stale now: a second writer holding it loses.
    again = await bmc.curl(SYSTEM, method="PATCH", body=patch, headers={"If-Match": etag})
    assert again.status == 412
    # `Expect: 100-continue`: curl sends the body only once the BMC says so (or after 30 s).
    off = json.dumps({"Boot": {"BootSourceOverrideEnabled": "Disabled"}}).encode()
    started = time.monotonic()
    expecting = await bmc.curl(
        SYSTEM,
        method="PATCH",
        raw=off + b" " * 4096,
        headers={"Expect": "100-continue"},
        options=("--expect100-timeout", "30"),
    )
    assert expecting.status == 200
    assert time.monotonic() - started < 10
    assert bmc.target.boot_override() == BootOverride("none", "disabled", "legacy")


async def test_errors_are_dmtf_bodies(bmc: Bmc) -> None:
    async def refused(status: int, message_id: str, path: str, **kw: Any) -> Answer:
        answer = await bmc.curl(path, **kw)
        assert answer.status == status, (path, kw, answer.status, answer.body)
        error = answer.json()["error"]
        assert error["code"].startswith("Base.1.") and error["message"]
        assert message_id in answer.message_ids(), answer.json()
        return answer

    await refused(400, "MalformedJSON", SYSTEM, method="PATCH", raw=b'{"Boot": ')
    unknown = await refused(400, "PropertyUnknown", SYSTEM, method="PATCH", body={"Colour": "red"})
    assert unknown.json()["error"]["@Message.ExtendedInfo"][0]["RelatedProperties"] == ["/Colour"]
    bad_value = {"Boot": {"BootSourceOverrideTarget": "Floppy"}}
    await refused(400, "PropertyValueNotInList", SYSTEM, method="PATCH", body=bad_value)
    await refused(400, "PropertyNotWritable", SYSTEM, method="PATCH", body={"PowerState": "Off"})
    answer = await refused(
        400, "ActionParameterValueNotInList", RESET, method="POST", body={"ResetType": "Explode"}
    )
    assert "Explode" in answer.json()["error"]["@Message.ExtendedInfo"][0]["Message"]
    await refused(400, "ActionParameterMissing", RESET, method="POST", body={})
    await refused(404, "ResourceMissingAtURI", "/redfish/v1/Systems/no-such-node")
    await refused(404, "ResourceMissingAtURI", "/redfish/v1/Nowhere")
    gone = await refused(405, "OperationNotAllowed", SYSTEM, method="DELETE")
    assert gone.headers["allow"] == "GET, HEAD, PATCH"
    action = await refused(405, "OperationNotAllowed", RESET)
    assert action.headers["allow"] == "POST"
    weird = await refused(405, "OperationNotAllowed", "/redfish/v1/", method="FAKEMETHODFORTEST")
    assert weird.headers["allow"] == "GET, HEAD"
    form = await refused(
        415,
        "HeaderInvalid",
        RESET,
        method="POST",
        raw=b"ResetType=On",
        content_type="application/x-www-form-urlencoded",
    )
    assert "application/json" in form.json()["error"]["message"]
    await refused(501, "QueryParameterUnsupported", "/redfish/v1/Systems?$select=Members")
    assert (await bmc.curl("/redfish/v1/Systems?only")).status == 200  # non-$ ones are ignored
    await refused(412, "HeaderInvalid", "/redfish/v1/", headers={"OData-Version": "4.1"})
    big = b'{"a": "' + b"x" * 70_000 + b'"}'
    await refused(413, "PayloadTooLarge", SYSTEM, method="PATCH", raw=big)


async def test_accounts_are_read_only(bmc: Bmc) -> None:
    accounts = await bmc.get("/redfish/v1/AccountService/Accounts")
    assert accounts["Members@odata.count"] == 3
    admin = await bmc.get("/redfish/v1/AccountService/Accounts/admin")
    assert admin["RoleId"] == "Administrator" and "Password" not in admin
    create = {"UserName": "new", "Password": "New-passw0rd", "RoleId": "ReadOnly"}
    for path, method, body in (
        ("/redfish/v1/AccountService/Accounts", "POST", create),
        ("/redfish/v1/AccountService/Accounts/admin", "PATCH", {"Password": "Other-passw0rd"}),
        ("/redfish/v1/AccountService/Accounts/oper", "DELETE", None),
        ("/redfish/v1/AccountService/Roles/ReadOnly", "PATCH", {"AssignedPrivileges": []}),
    ):
        answer = await bmc.curl(path, method=method, body=body)
        assert answer.status == 405, (path, method)
        assert "data center file" in answer.json()["error"]["message"] or "Role" in path
        assert "POST" not in answer.headers["allow"] and "PATCH" not in answer.headers["allow"]
    # Nothing changed: the old password still works.
    assert (await bmc.curl("/redfish/v1/AccountService/Accounts/admin")).status == 200
    roles = await bmc.get("/redfish/v1/AccountService/Roles/Operator")
    assert "ConfigureComponents" in roles["AssignedPrivileges"]


async def test_authentication_failures(bmc: Bmc) -> None:
    for user in (("admin", "wrong"), ("nobody", "Adm1n-secret")):
        answer = await bmc.curl(SYSTEM, user=user)
        assert answer.status == 401
        assert b"Adm1n-secret" not in answer.body and b"wrong" not in answer.body
    assert (await bmc.curl(SYSTEM, user=None, token="0" * 32)).status == 401
    login = await bmc.curl(
        SESSIONS, method="POST", user=None, body={"UserName": "admin", "Password": "wrong"}
    )
    assert login.status == 401 and "location" not in login.headers
    assert "x-auth-token" not in login.headers and b"wrong" not in login.body
    # Unauthenticated clients learn nothing about which URIs exist.
    assert (await bmc.curl("/redfish/v1/Nowhere", user=None)).status == 401


async def test_sessions(bmc: Bmc) -> None:
    store = bmc.service.bmc("127.0.0.1").sessions
    open_before = len(store)
    login = await bmc.curl(
        SESSIONS, method="POST", user=None, body={"UserName": "oper", "Password": "0per-secret"}
    )
    assert login.status == 201, login.body
    token, location = login.headers["x-auth-token"], login.headers["location"]
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    session = login.json()
    assert session["UserName"] == "oper" and location == session["@odata.id"]
    assert (await bmc.get(SYSTEM, user=None, token=token))["Id"] == NODE
    # The operator sees its own session only; the administrator sees every one.
    own = await bmc.get(SESSIONS, user=None, token=token)
    assert own["Members"] == [{"@odata.id": location}]
    assert {"@odata.id": location} in (await bmc.get(SESSIONS))["Members"]
    assert (await bmc.get(location, user=None, token=token))["Id"] == session["Id"]
    # Also at Members, as DSP0266 allows; and two logins are two sessions.
    second = await bmc.curl(
        f"{SESSIONS}/Members",
        method="POST",
        user=None,
        body={"UserName": "oper", "Password": "0per-secret"},
    )
    assert second.status == 201 and second.headers["location"] != location
    viewer = await bmc.curl(
        SESSIONS, method="POST", user=None, body={"UserName": "viewer", "Password": "V1ewer-secret"}
    )
    assert (await bmc.curl(location, user=VIEWER)).status == 403  # not the viewer's session
    assert (await bmc.curl(location, method="DELETE", user=VIEWER)).status == 403
    logout = await bmc.curl(location, method="DELETE", user=None, token=token)
    assert logout.status == 204
    assert (await bmc.curl(SYSTEM, user=None, token=token)).status == 401
    assert (await bmc.curl(location)).status == 404
    # An administrator ends anybody's session.
    for other in (second, viewer):
        assert (await bmc.curl(other.headers["location"], method="DELETE")).status == 204
    assert len(store) == open_before
    # The idle timeout is the SessionService's, writable by administrators only.
    patch = {"SessionTimeout": 600}
    assert (
        await bmc.curl("/redfish/v1/SessionService", method="PATCH", body=patch, user=OPERATOR)
    ).status == 403
    done = await bmc.curl("/redfish/v1/SessionService", method="PATCH", body=patch)
    assert done.status == 200 and done.json()["SessionTimeout"] == 600
    too_short = await bmc.curl(
        "/redfish/v1/SessionService", method="PATCH", body={"SessionTimeout": 1}
    )
    assert too_short.message_ids() == ["PropertyValueOutOfRange"]
    # An idle session ends: shortened below what clients may set, to see it happen.
    store.timeout = 1
    try:
        idle = await bmc.curl(
            SESSIONS,
            method="POST",
            user=None,
            body={"UserName": "viewer", "Password": "V1ewer-secret", "Context": "ci job 7"},
        )
        assert idle.json()["Context"] == "ci job 7"
        await asyncio.sleep(1.5)
        expired = await bmc.curl(SYSTEM, user=None, token=idle.headers["x-auth-token"])
        assert expired.status == 401
    finally:
        store.timeout = 600


async def test_manager_reset_ends_every_session(bmc: Bmc) -> None:
    manager = await bmc.get("/redfish/v1/Managers/BMC")
    nic = await bmc.get(f"{manager['EthernetInterfaces']['@odata.id']}/eth0")
    assert nic["IPv4Addresses"] == [{"Address": "127.0.0.1", "AddressOrigin": "Static"}]
    reset = manager["Actions"]["#Manager.Reset"]["target"]
    login = await bmc.curl(
        SESSIONS, method="POST", user=None, body={"UserName": "oper", "Password": "0per-secret"}
    )
    token = login.headers["x-auth-token"]
    refused = await bmc.curl(
        reset, method="POST", body={"ResetType": "GracefulRestart"}, user=None, token=token
    )
    assert refused.status == 403  # ConfigureManager: administrators only
    done = await bmc.curl(reset, method="POST", body={"ResetType": "GracefulRestart"})
    assert done.status == 204
    assert (await bmc.curl(SYSTEM, user=None, token=token)).status == 401
    assert await bmc.target.power_state() == "On"  # the machine is not the BMC


async def test_privileges(bmc: Bmc) -> None:
    assert (await bmc.get(SYSTEM, user=VIEWER))["Id"] == NODE
    boot = {"Boot": {"BootSourceOverrideTarget": "Hdd", "BootSourceOverrideEnabled": "Continuous"}}
    for answer in (
        await bmc.reset("Nmi", user=VIEWER),
        await bmc.curl(SYSTEM, method="PATCH", body=boot, user=VIEWER),
        await bmc.curl(
            "/redfish/v1/Chassis/System.Embedded.1/Actions/Chassis.Reset",
            method="POST",
            body={"ResetType": "ForceOff"},
            user=VIEWER,
        ),
    ):
        assert answer.status == 403
        assert answer.message_ids() == ["InsufficientPrivilege"]
    assert bmc.target.boot_override().enabled == "disabled"
    assert await bmc.target.power_state() == "On"
    # The viewer sees its own account only.
    own = await bmc.get("/redfish/v1/AccountService/Accounts", user=VIEWER)
    assert own["Members"] == [{"@odata.id": "/redfish/v1/AccountService/Accounts/viewer"}]
    assert (await bmc.curl("/redfish/v1/AccountService/Accounts/admin", user=VIEWER)).status == 403
    # An operator may set the boot override and reset (Nmi leaves the guest running).
    assert (await bmc.curl(SYSTEM, method="PATCH", body=boot, user=OPERATOR)).status == 200
    assert bmc.target.boot_override() == BootOverride("hdd", "continuous", "legacy")
    assert (await bmc.reset("Nmi", user=OPERATOR)).status == 204
    off = {"Boot": {"BootSourceOverrideEnabled": "Disabled"}}
    assert (await bmc.curl(SYSTEM, method="PATCH", body=off, user=OPERATOR)).status == 200


# -- the DMTF validators ---------------------------------------------------------------------

# The protocol validator looks for SSDP by multicast on every interface; this service has no
# SSDP, so those assertions are "not tested" either way, and the traffic stays on 127.0.0.1.
PROTOCOL_VALIDATOR = """
import sys
from redfish_protocol_validator import console_scripts, utils
utils.discover_ssdp = lambda *args, **kwargs: {}
sys.argv[0] = "rf_protocol_validator"
console_scripts.main()
"""

ANSI = re.compile(r"\x1b\[[0-9;]*m")


async def run(argv: list[str], cwd: Path) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k not in CA_ENV}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 600)
    assert proc.returncode is not None
    return proc.returncode, ANSI.sub("", out.decode(errors="replace"))


def service_validator_counts(output: str) -> dict[str, int]:
    """The summary table the service validator prints last: PASS, WARN, FAIL, NOT TESTED."""
    rows = [line for line in output.splitlines() if line.startswith("|")]
    for header, values in itertools.pairwise(rows):
        names = [c.strip() for c in header.strip("|").split("|")]
        if names[:3] == ["PASS", "WARN", "FAIL"]:
            numbers = [int(c) for c in values.strip("|").split("|")]
            return dict(zip(("pass", "warn", "fail", "skip"), numbers, strict=True))
    raise AssertionError(f"no summary in the service validator's output:\n{output[-3000:]}")


def debug_log_errors(log_dir: Path) -> list[str]:
    """What the service validator logged as errors (each failed check is one)."""
    lines = []
    for log in log_dir.glob("*/RedfishServiceValidatorDebug*.log"):
        lines += [line for line in log.read_text().splitlines() if " - ERROR - " in line]
    return lines


def debug_log_warnings(log_dir: Path) -> list[str]:
    lines = []
    for log in log_dir.glob("*/RedfishServiceValidatorDebug*.log"):
        lines += [line for line in log.read_text().splitlines() if " - WARN - " in line]
    return lines


# Manager.VirtualMedia is deprecated in favour of ComputerSystem.VirtualMedia, and served all
# the same: iDRAC and sushy-tools do, and older clients (Ironic before 2023) look there only.
MANAGER_MEDIA_DEPRECATED = re.compile(
    r"WARN - /(VirtualMedia|@odata\.id) \((\[Link to: )?/redfish/v1/Managers/BMC/VirtualMedia"
    r"(/Cd)?\]?\)"
    r": Deprecated (Property|URI) Warning"
)


def failures(report_dir: Path, result: str) -> list[str]:
    """The protocol validator's failed (or warned) assertions, from its TSV report."""
    lines = []
    for tsv in report_dir.glob("*.tsv"):
        for row in tsv.read_text().splitlines()[1:]:
            cells = row.split("\t")
            if len(cells) > 5 and cells[4] == result:
                lines.append(" | ".join(cells[:6]))
    return lines


@pytest.mark.timeout(900)
async def test_dmtf_service_validator(bmc: Bmc, tmp_path: Path) -> None:
    csdl = require.redfish_csdl()
    if csdl is not None:
        schema_args = ["--skipschema", "--schema_directory", str(csdl)]
    else:  # the validator downloads DMTF's bundle (DSP8010) into a cache of ours
        csdl = build.cache_root() / "redfish-csdl"
        csdl.mkdir(parents=True, exist_ok=True)
        schema_args = ["--schema_directory", str(csdl)]
    code, output = await run(
        [
            str(Path(sys.executable).with_name("rf_service_validator")),
            *schema_args,
            "-r",
            bmc.url,
            "-u",
            ADMIN[0],
            "-p",
            ADMIN[1],
            "--logdir",
            str(tmp_path),
        ],
        tmp_path,
    )
    if not any(csdl.glob("*_v1.xml")):
        pytest.fail(
            f"no Redfish schemas (CSDL) in {csdl}: the validator could not download DMTF's"
            f" bundle (DSP8010). Unpack its csdl/ folder into a directory and name it in"
            f" ${require.CSDL_ENV}.\n{output[-2000:]}"
        )
    counts = service_validator_counts(output)
    print(f"Redfish Service Validator: {counts}, exit code {code}")
    problems = [line for line in output.splitlines() if "FAIL - " in line or "WARN - " in line]
    problems += debug_log_errors(tmp_path)
    assert counts["fail"] == 0 and code == 0, "\n".join(problems) or output[-3000:]
    warnings = debug_log_warnings(tmp_path)
    deprecated = [line for line in warnings if MANAGER_MEDIA_DEPRECATED.search(line)]
    assert counts["warn"] == len(deprecated), "\n".join(problems + warnings)
    assert counts["pass"] > 555, counts  # it walked the inventory too: sushy-tools passes 555


@pytest.mark.timeout(900)
async def test_dmtf_protocol_validator(bmc: Bmc, tmp_path: Path) -> None:
    report_dir = tmp_path / "reports"
    sessions = bmc.service.bmc("127.0.0.1").sessions
    open_before = len(sessions)
    code, output = await run(
        [
            sys.executable,
            "-c",
            PROTOCOL_VALIDATOR,
            "-r",
            bmc.url,
            "-u",
            ADMIN[0],
            "-p",
            ADMIN[1],
            "--ca-bundle",
            str(bmc.ca),
            "--report-dir",
            str(report_dir),
            "--report-type",
            "tsv",
        ],
        tmp_path,
    )
    results = json.loads((report_dir / "results.json").read_text())
    counts = results["TestResults"]["Protocol Validations"]
    print(f"Redfish Protocol Validator: {counts}, exit code {code}")
    assert counts["fail"] == 0 and code == 0, "\n".join(failures(report_dir, "FAIL")) or output
    assert counts["warn"] == 0, "\n".join(failures(report_dir, "WARN"))
    assert counts["pass"] > 250, counts
    assert len(sessions) == open_before  # every session it opened, it closed


# -- power and boot, through sushy and curl ----------------------------------------------------


@pytest.fixture
def trusting_our_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_ENV:
        monkeypatch.delenv(name, raising=False)


async def test_sushy_power_off_and_on(bmc: Bmc, trusting_our_ca: None) -> None:
    import sushy

    boots = await bmc.settle()

    # Sushy's default authentication, made here so that its logout can be run in a thread:
    # left to Sushy.__del__, it would run wherever the garbage collector happens to be, the
    # event loop included, and block the very server it is talking to.
    auth = sushy.auth.SessionOrBasicAuth(*ADMIN)
    sessions = bmc.service.bmc("127.0.0.1").sessions
    open_before = len(sessions)

    def connect() -> Any:
        client = sushy.Sushy(f"{bmc.url}/redfish/v1", auth=auth, verify=str(bmc.ca))
        return client, client.get_system()  # the one member: identity from the collection

    _client, system = await asyncio.to_thread(connect)
    assert len(sessions) == open_before + 1  # it logged in
    assert (system.identity, system.serial_number) == (NODE, f"SERIAL-{NODE}")
    assert system.power_state == sushy.PowerState.ON
    assert sushy.ResetType.PUSH_POWER_BUTTON in system.get_allowed_reset_system_values()
    await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_OFF)
    assert await bmc.target.power_state() == "Off"
    await asyncio.to_thread(system.refresh)
    assert system.power_state == sushy.PowerState.OFF
    assert bmc.boots() == boots
    await asyncio.to_thread(system.reset_system, sushy.ResetType.ON)
    await bmc.booted(boots + 1)
    await asyncio.to_thread(system.refresh)
    assert system.power_state == sushy.PowerState.ON
    await asyncio.to_thread(auth.close)
    assert len(sessions) == open_before


async def test_sushy_once_pxe_is_consumed_by_the_next_boot(bmc: Bmc, trusting_our_ca: None) -> None:
    import sushy

    machine = bmc.node.machine
    boots = await bmc.settle()
    sessions = bmc.service.bmc("127.0.0.1").sessions
    open_before = len(sessions)

    def set_once(target: Any) -> Any:
        auth = sushy.auth.SessionAuth(*OPERATOR)  # a session, no falling back to Basic
        client = sushy.Sushy(f"{bmc.url}/redfish/v1", auth=auth, verify=str(bmc.ca))
        system = client.get_system(SYSTEM)
        system.set_system_boot_options(target, enabled=sushy.BootSourceOverrideEnabled.ONCE)
        system.refresh()
        return auth, system

    # Hdd: the disk first in the running QEMU's boot order, until the next boot.
    assert await disk_bootindex(machine) == -1  # no override: the firmware's own order
    auth, system = await asyncio.to_thread(set_once, sushy.BootSource.HDD)
    assert len(sessions) == open_before + 1
    assert system.boot.target == sushy.BootSource.HDD
    assert await disk_bootindex(machine) == 1
    await asyncio.to_thread(auth.close)  # logs out
    assert len(sessions) == open_before
    # Pxe replaces it; the disk stays in the order, after the NICs (this node has none).
    auth, system = await asyncio.to_thread(set_once, sushy.BootSource.PXE)
    assert system.boot.target == sushy.BootSource.PXE
    assert system.boot.enabled == sushy.BootSourceOverrideEnabled.ONCE
    assert bmc.target.boot_override() == BootOverride("pxe", "once", "legacy")
    assert await disk_bootindex(machine) == 1
    # UEFI on a BIOS node: accepted and reported, the firmware stays as it is.
    mode = {"Boot": {"BootSourceOverrideMode": "UEFI"}}
    answer = await bmc.curl(SYSTEM, method="PATCH", body=mode)
    assert answer.json()["Boot"]["BootSourceOverrideMode"] == "UEFI"
    assert answer.json()["Boot"]["BootSourceOverrideEnabled"] == "Once"
    assert not bmc.target.facts.uefi
    await asyncio.to_thread(system.reset_system, sushy.ResetType.FORCE_RESTART)
    await bmc.booted(boots + 1)

    async def consumed() -> bool:
        boot = (await bmc.get(SYSTEM))["Boot"]
        return (boot["BootSourceOverrideEnabled"], boot["BootSourceOverrideTarget"]) == (
            "Disabled",
            "None",
        ) and await disk_bootindex(machine) == -1

    await eventually(consumed, 30)
    assert bmc.target.boot_override() == BootOverride("none", "disabled", "uefi")
    await asyncio.to_thread(system.refresh)
    assert system.boot.enabled == sushy.BootSourceOverrideEnabled.DISABLED
    await asyncio.to_thread(auth.close)
    legacy = {"Boot": {"BootSourceOverrideMode": "Legacy"}}
    assert (await bmc.curl(SYSTEM, method="PATCH", body=legacy)).status == 200


async def test_every_reset_type(bmc: Bmc) -> None:
    boots = await bmc.settle()
    assert (await bmc.reset("On")).json()["error"]["message"] == "Server is already powered ON."
    chassis_reset = "/redfish/v1/Chassis/System.Embedded.1/Actions/Chassis.Reset"
    assert (await bmc.curl(chassis_reset, method="POST", body={"ResetType": "On"})).status == 409
    assert (await bmc.reset("Nmi")).status == 204  # the guest lives on

    # GracefulShutdown: the guest's ACPI handler powers it off.
    assert (await bmc.reset("GracefulShutdown")).status == 204
    await bmc.power("Off")
    assert (await bmc.get(SYSTEM))["PowerState"] == "Off"
    already_off = await bmc.reset("ForceOff")
    assert already_off.status == 409
    assert already_off.json()["error"]["message"] == "Server is already powered OFF."
    for refused in ("ForceRestart", "Nmi", "GracefulShutdown", "GracefulRestart"):
        answer = await bmc.reset(refused)
        assert answer.status == 409, refused
        assert answer.message_ids() == ["ChassisPowerStateOnRequired"]
    assert bmc.boots() == boots

    # PowerCycle boots an off machine.
    assert (await bmc.reset("PowerCycle")).status == 204
    await bmc.booted(boots + 1)

    # GracefulRestart answers at once and powers on again once the guest is off.
    started = time.monotonic()
    assert (await bmc.reset("GracefulRestart")).status == 204
    assert time.monotonic() - started < 10
    await bmc.booted(boots + 2)

    # PushPowerButton: the button when on, power on when off.
    assert (await bmc.reset("PushPowerButton")).status == 204
    await bmc.power("Off")
    assert (await bmc.reset("PushPowerButton")).status == 204
    await bmc.booted(boots + 3)

    # The chassis's own switch and Placemat's system URI, as Placemat's scripts use them.
    off = await bmc.curl(chassis_reset, method="POST", body={"ResetType": "ForceOff"})
    assert off.status == 204
    assert await bmc.target.power_state() == "Off"
    placemat_reset = "/redfish/v1/Systems/System.Embedded.1/Actions/ComputerSystem.Reset"
    on = await bmc.curl(placemat_reset, method="POST", body={"ResetType": "ForceOn"})
    assert on.status == 204
    await bmc.booted(boots + 4)


# -- listening -------------------------------------------------------------------------------


async def test_ipv6_bind_errors_and_close(bmc: Bmc, tmp_path: Path) -> None:
    tasks_before = set(asyncio.all_tasks())
    ca = CertificateAuthority.load_or_create(tmp_path / "ca")
    cert, key = ca.issue(["::1"], tmp_path / "certs")
    contexts: list[str] = []

    def ssl_for(address: str) -> ssl.SSLContext:
        contexts.append(address)
        return ssl_context(cert, key)

    service = RedfishService(USERS, ssl_for=ssl_for)
    port = free_port("::1")
    await service.add("::1", bmc.target, port)
    assert contexts == ["::1"]
    url = f"https://[::1]:{port}/redfish/v1/Systems/{NODE}"
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-g", "--cacert", str(ca.cert_path), "-u", "admin:Adm1n-secret", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert json.loads(out)["Id"] == NODE
    # The port of another BMC, or the address taken already: OSError.
    with pytest.raises(OSError):
        await service.add("127.0.0.1", bmc.target, bmc.port)
    with pytest.raises(OSError):
        await service.add("::1", bmc.target, port)
    # A client holding its keep-alive connection does not keep the BMC from stopping.
    trust = ssl.create_default_context(cafile=ca.cert_path)
    basic = "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()
    async with aiohttp.ClientSession(headers={"Authorization": basic}) as client:
        async with client.get(url, ssl=trust) as answer:
            assert answer.status == 200
            await answer.read()
        started = time.monotonic()
        await service.remove("::1")
        assert time.monotonic() - started < 5
    with pytest.raises(KeyError):
        await service.remove("::1")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("::1", port)
    await service.close()
    await asyncio.sleep(0.1)
    assert not {t for t in asyncio.all_tasks() if not t.done()} - tasks_before


async def test_a_machine_that_failed_is_500(
    guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """QEMU goes away, as when it crashes, and the BMC says so (a machine of its own: the
    module's stays up for the other tests, whatever their order)."""
    tmp = tmp_path_factory.mktemp("rf-crash")
    running = await start_machine(guest, tmp, "rf-crash")
    ca = CertificateAuthority.load_or_create(tmp / "ca")
    cert, key = ca.issue(["127.0.0.1"], tmp / "certs")
    service = RedfishService(USERS, ssl_for=lambda _address: ssl_context(cert, key))
    port = free_port()
    await service.add("127.0.0.1", running.target, port)
    try:
        crashed = Bmc(running, service, port, ca.cert_path)
        await running.machine.stop()
        system = await crashed.get("/redfish/v1/Systems/rf-crash")
        assert system["PowerState"] is None
        assert system["Status"]["Health"] == "Critical"
        answer = await crashed.curl(
            "/redfish/v1/Systems/rf-crash/Actions/ComputerSystem.Reset",
            method="POST",
            body={"ResetType": "ForceOff"},
        )
        assert answer.status == 500
        assert answer.message_ids() == ["InternalError"]
    finally:
        await service.close()
        await running.machine.stop()
