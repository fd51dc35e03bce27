"""The requests each node's BMC answers, counted for metrics: `BmcStats`, its wiring into
`BmcManager`, and the counts real IPMI and Redfish clients leave against a real guest.

One test guest boots under TCG for the module, with both its IPMI (UDP) and its Redfish
(HTTPS) on 127.0.0.1 and free high ports, sharing one `BmcStats` as in `BmcManager`.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.bmc.conftest import ADMIN, HOST, OPERATOR, USERS, VIEWER, RunningMachine, start_machine
from tests.bmc.rmcp import RmcpClient, RmcpError
from tests.guest.build import GuestPaths
from vdc_runtime.bmc.ipmi import IpmiService
from vdc_runtime.bmc.redfish import RedfishService
from vdc_runtime.bmc.service import BmcManager
from vdc_runtime.bmc.stats import BmcStats
from vdc_runtime.bmc.tls import CertificateAuthority, ssl_context
from vdc_runtime.spec import load_text

NODE = "stats-node"


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# -- BmcStats and its wiring ---------------------------------------------------------------------


def test_counts_per_node_protocol_and_outcome() -> None:
    stats = BmcStats()
    assert stats.requests == {}
    stats.count("a", "ipmi")
    stats.count("a", "ipmi")
    stats.count("a", "ipmi", ok=False)
    stats.count("b", "redfish", ok=True)
    stats.count("b", "redfish", ok=False)
    assert stats.requests == {
        ("a", "ipmi", "ok"): 2,
        ("a", "ipmi", "error"): 1,
        ("b", "redfish", "ok"): 1,
        ("b", "redfish", "error"): 1,
    }
    assert stats.requests[("a", "redfish", "ok")] == 0  # a Counter: absent is zero


async def test_the_manager_hands_its_stats_to_both_services(tmp_path: Path) -> None:
    dc = load_text("kind: Network\nname: n\ntype: internal\n", source="x.yml", base_dir=tmp_path)
    manager = BmcManager(dc, data_dir=tmp_path / "data", run_dir=tmp_path / "run")
    await manager.start()
    try:
        assert isinstance(manager.stats, BmcStats)
        assert manager._ipmi.stats is manager.stats
        assert manager._redfish.stats is manager.stats
    finally:
        await manager.close()


# -- a real guest's BMC ------------------------------------------------------------------------


@dataclass
class Bmc:
    node: RunningMachine
    stats: BmcStats
    ipmi_port: int
    url: str
    ca: Path
    trust: ssl.SSLContext

    def counts(self, protocol: str) -> dict[tuple[str, str, str], int]:
        return {key: n for key, n in self.stats.requests.items() if key[1] == protocol and n}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bmc(guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bmc]:
    tmp = tmp_path_factory.mktemp("stats")
    node = await start_machine(guest, tmp, NODE)
    stats = BmcStats()
    ca = CertificateAuthority.load_or_create(tmp / "ca")
    cert, key = ca.issue([HOST], tmp / "certs")
    ipmi = IpmiService(USERS, stats=stats)
    redfish = RedfishService(USERS, ssl_for=lambda _address: ssl_context(cert, key), stats=stats)
    ipmi_port, https_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
    try:
        await ipmi.add(HOST, node.target, ipmi_port)
        await redfish.add(HOST, node.target, https_port)
        trust = ssl.create_default_context(cafile=ca.cert_path)
        yield Bmc(node, stats, ipmi_port, f"https://{HOST}:{https_port}", ca.cert_path, trust)
    finally:
        await redfish.close()
        await ipmi.close()
        await node.machine.stop()


async def ipmitool(bmc: Bmc, *args: str, user: tuple[str, str] = ADMIN, level: str = "") -> str:
    argv = ["ipmitool", "-I", "lanplus", "-H", HOST, "-p", str(bmc.ipmi_port), "-U", user[0],
            "-P", user[1], "-C", "17", "-N", "2", "-R", "2", *(["-L", level] if level else []),
            *args]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


async def rmcp(bmc: Bmc, work):  # type: ignore[no-untyped-def]
    """Run the blocking hand-made RMCP+ client off the loop the BMC answers on."""

    def run():  # type: ignore[no-untyped-def]
        with RmcpClient(HOST, bmc.ipmi_port) as client:
            return work(client)

    return await asyncio.to_thread(run)


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_ipmi_commands_in_a_session_are_counted(bmc: Bmc) -> None:
    ok, error = (NODE, "ipmi", "ok"), (NODE, "ipmi", "error")
    assert bmc.counts("ipmi") == {}

    # ipmitool's session: Set Session Privilege Level, Get Device ID, Get Chassis Status
    # and Close Session answer 0x00; its probes for DCMI and PICMG (netfn 0x2C: three
    # commands a plain BMC does not know) answer 0xC1, as they should: not errors. The
    # exchanges before the session (auth capabilities, open session, RAKP) are not counted.
    assert "Chassis Power is on" in await ipmitool(bmc, "power", "status")
    assert bmc.counts("ipmi") == {ok: 7}

    # A read-only user at User level (no Set Session Privilege Level then) may look but
    # not power off: Get Device ID, the three probes and Close Session, then the refusal.
    out = await ipmitool(bmc, "power", "off", user=VIEWER, level="USER")
    assert "Insufficient privilege level" in out
    assert bmc.counts("ipmi") == {ok: 12, error: 1}
    assert await bmc.node.target.power_state() == "On"

    def session(client: RmcpClient) -> list[int]:
        assert client.ping() is not None  # ASF ping: not counted
        client.login(*OPERATOR, privilege=3)
        return [
            client.request(0x06, 0x01).code,  # Get Device ID
            client.request(0x06, 0x02).code,  # Cold Reset: Administrator's
            client.request(0x06, 0x7F).code,  # no such command
            client.request(0x06, 0x3B, b"").code,  # Set Session Privilege, no data
            client.request(0x06, 0x3C, client.managed_id).code,  # Close Session
        ]

    assert await rmcp(bmc, session) == [0x00, 0xD4, 0xC1, 0xC7, 0x00]
    assert bmc.counts("ipmi") == {ok: 14, error: 4}

    def refused(client: RmcpClient) -> None:
        with pytest.raises(RmcpError):
            client.login(ADMIN[0], "wrong")

    await rmcp(bmc, refused)  # a failed login answers no command
    assert bmc.counts("ipmi") == {ok: 14, error: 4}


@pytest.mark.slow
@pytest.mark.asyncio(loop_scope="module")
async def test_redfish_requests_are_counted_by_status(bmc: Bmc) -> None:
    ok, error = (NODE, "redfish", "ok"), (NODE, "redfish", "error")
    assert bmc.counts("redfish") == {}
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(ADMIN).encode()).decode()}
    async with aiohttp.ClientSession() as client:

        async def get(path: str, headers: dict[str, str] | None = None) -> int:
            async with client.get(bmc.url + path, ssl=bmc.trust, headers=headers) as answer:
                await answer.read()
                return answer.status

        assert await get("/redfish/v1/") == 200  # public
        assert await get(f"/redfish/v1/Systems/{NODE}", auth) == 200
        assert await get("/redfish/v1/Nothing", auth) == 404
        assert await get(f"/redfish/v1/Systems/{NODE}") == 401  # no credentials
        async with client.post(
            bmc.url + f"/redfish/v1/Systems/{NODE}", ssl=bmc.trust, headers=auth, json={}
        ) as answer:
            assert answer.status == 405
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", str(bmc.ca),
        "-u", ":".join(ADMIN), f"{bmc.url}/redfish/v1/Chassis",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert out == b"200"
    assert bmc.counts("redfish") == {ok: 3, error: 3}
