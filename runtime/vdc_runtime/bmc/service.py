"""Every node's BMC in one run: its address on a bmc bridge, IPMI and Redfish bound to it.

A BMC comes up when its address is known: at start-up for a static `bmc.address`, or when
the guest announces one on its `placemat` port (Placemat's way). The address joins the
bridge of the bmc network whose prefix holds it, and both servers listen on exactly that
address. An announced address that fits no bmc network, or that cannot be bound, is
reported on the node (API and log) and the run goes on, as a real BMC with a bad network
setting would; a static one that cannot be bound fails the start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import shutil
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vdc_runtime import fabric
from vdc_runtime.bmc.faults import BmcFaults
from vdc_runtime.bmc.machine_target import MachineTarget
from vdc_runtime.bmc.stats import BmcStats
from vdc_runtime.bmc.users import PLACEMAT_USER, BmcUser, Users
from vdc_runtime.fabric import nft
from vdc_runtime.nodes.machine import Machine
from vdc_runtime.spec import DataCenter
from vdc_runtime.spec.models import Network

log = logging.getLogger("vdc.bmc")

IPMI_PORT = 623
REDFISH_PORT = 443


class BmcError(RuntimeError):
    pass


@dataclass
class BmcEndpoint:
    node: str
    address: str
    origin: Literal["static", "announced"]
    network: str | None = None
    state: Literal["starting", "listening", "failed"] = "starting"
    error: str | None = None
    published: tuple[int, int] | None = None
    """(UDP port for IPMI, TCP port for Redfish) on the host's own addresses."""

    def as_json(self, ipmi_port: int, redfish_port: int) -> dict[str, Any]:
        host = f"[{self.address}]" if ":" in self.address else self.address
        listening = self.state == "listening"
        redfish = f"https://{host}" + ("" if redfish_port == 443 else f":{redfish_port}")
        return {
            "address": self.address,
            "origin": self.origin,
            "network": self.network,
            "state": self.state,
            "error": self.error,
            "ipmi": f"{host}:{ipmi_port}" if listening else None,
            "redfish": f"{redfish}/redfish/v1" if listening else None,
            "published": (
                {"ipmi_port": self.published[0], "redfish_port": self.published[1]}
                if self.published
                else None
            ),
        }


def load_users(dc: DataCenter) -> Users:
    """The accounts from the spec's BMC document, or Placemat's one when it names none."""
    settings = dc.bmc
    if settings is None or not settings.users:
        log.info(
            "BMC: no users in the spec; Placemat's default account %r is active", PLACEMAT_USER
        )
        return Users.placemat_default()
    users = []
    for user in settings.users:
        if user.password_file is not None:
            try:
                password = user.password_file.read_text().rstrip("\r\n")
            except OSError as exc:
                raise BmcError(f"BMC user {user.name}: cannot read password file: {exc}") from exc
            if not password:
                raise BmcError(f"BMC user {user.name}: password file {user.password_file} is empty")
        else:
            assert user.password is not None
            password = user.password
        users.append(BmcUser(user.name, password, user.role))
    return Users(tuple(users))


def bmc_network(
    dc: DataCenter, address: ipaddress.IPv4Address | ipaddress.IPv6Address
) -> Network | None:
    for network in dc.networks:
        if (
            network.type == "bmc"
            and network.address is not None
            and address in network.address.network
        ):
            return network
    return None


class BmcManager:
    def __init__(
        self,
        dc: DataCenter,
        *,
        data_dir: Path,
        run_dir: Path,
        ipmi_port: int = IPMI_PORT,
        redfish_port: int = REDFISH_PORT,
        nft_table: str | None = None,
        publish_order: list[str] | None = None,
    ) -> None:
        self.dc = dc
        self.publish_order = publish_order or [node.name for node in dc.nodes]
        """The whole spec's nodes: a node's published ports follow its place in the spec,
        also when this run builds only its group."""
        self.nft_table = nft_table
        """The run's nftables table, whose `publish` chain forwards published BMC ports."""
        self.ipmi_port = ipmi_port
        self.redfish_port = redfish_port
        self.endpoints: dict[str, BmcEndpoint] = {}
        self._ca_dir = data_dir / "bmc"
        self._cert_dir = run_dir / "bmc"
        self._targets: dict[str, MachineTarget] = {}
        self._lock = asyncio.Lock()
        self._ipmi: Any = None
        self._redfish: Any = None
        self._ca: Any = None
        self._user_tls: ssl.SSLContext | None = None
        self.users = load_users(dc)
        self.stats = BmcStats()
        self.faults = BmcFaults()
        """BMCs answering late or failing (the run's faults)."""

    @property
    def ca_cert(self) -> Path | None:
        """The CA that signs the BMCs' certificates, for clients to trust (None: user's cert)."""
        return self._ca.cert_path if self._ca is not None else None

    async def start(self) -> None:
        # Imported here: a run whose nodes have no BMC never pays for pyghmi and TLS.
        from vdc_runtime.bmc.ipmi import IpmiService
        from vdc_runtime.bmc.redfish import RedfishService
        from vdc_runtime.bmc.tls import CertificateAuthority, ssl_context

        tls = self.dc.bmc.tls if self.dc.bmc is not None else None
        if tls is not None:
            try:
                self._user_tls = ssl_context(tls.cert, tls.key)
            except (OSError, ValueError, ssl.SSLError) as exc:
                raise BmcError(f"BMC tls: {exc}") from exc
        else:
            self._ca = await asyncio.to_thread(CertificateAuthority.load_or_create, self._ca_dir)
            log.info("BMC: HTTPS certificates are signed by the CA in %s", self._ca.cert_path)
        self._ssl_context = ssl_context
        self._ipmi = IpmiService(self.users, stats=self.stats, faults=self.faults)
        self._redfish = RedfishService(
            self.users, ssl_for=self._ssl_for, stats=self.stats, faults=self.faults
        )

    def _ssl_for(self, address: str) -> ssl.SSLContext:
        if self._user_tls is not None:
            return self._user_tls
        self._cert_dir.mkdir(parents=True, exist_ok=True)
        cert, key = self._ca.issue([address], self._cert_dir)
        return self._ssl_context(cert, key)

    def target(self, machine: Machine) -> MachineTarget:
        if machine.name not in self._targets:
            self._targets[machine.name] = MachineTarget(machine)
        return self._targets[machine.name]

    async def attach(
        self, machine: Machine, text: str, origin: Literal["static", "announced"]
    ) -> BmcEndpoint:
        """Bring the node's BMC up on `text`; the result says whether it listens and why not."""
        async with self._lock:
            current = self.endpoints.get(machine.name)
            if current is not None and current.state == "listening":
                if current.address != text:
                    log.warning(
                        "node %s: BMC stays on its %s address %s; ignoring %s address %s",
                        machine.name, current.origin, current.address, origin, text,
                    )  # fmt: skip
                return current
            endpoint = BmcEndpoint(machine.name, text, origin)
            self.endpoints[machine.name] = endpoint
            try:
                await self._bring_up(machine, endpoint)
            except (BmcError, OSError) as exc:
                endpoint.state, endpoint.error = "failed", str(exc)
                log.error("node %s: BMC on %s: %s", machine.name, text, exc)
                await self._take_down(endpoint.address)
                return endpoint
            endpoint.state = "listening"
            log.info(
                "node %s: BMC on %s (IPMI udp/%d, Redfish https/%d)",
                machine.name, endpoint.address, self.ipmi_port, self.redfish_port,
            )  # fmt: skip
            await self._publish(machine, endpoint)
            return endpoint

    async def _publish(self, machine: Machine, endpoint: BmcEndpoint) -> None:
        """Forward the node's published ports on the host's addresses to its BMC."""
        publish = self.dc.bmc.publish if self.dc.bmc is not None else None
        if publish is None or self.nft_table is None:
            return
        if ipaddress.ip_address(endpoint.address).version != 4:
            log.warning(
                "node %s: BMC %s is IPv6: published ports forward to IPv4 BMCs only",
                machine.name, endpoint.address,
            )  # fmt: skip
            return
        index = self.publish_order.index(machine.name)
        ports = (publish.ipmi_port + index, publish.redfish_port + index)
        rules = nft.publish_rules(
            self.nft_table,
            [("udp", ports[0], endpoint.address, self.ipmi_port),
             ("tcp", ports[1], endpoint.address, self.redfish_port)],
        )  # fmt: skip
        try:
            await nft.apply(rules)
        except nft.NftError as exc:
            endpoint.error = f"cannot publish ports {ports[0]}/{ports[1]}: {exc}"
            log.error("node %s: BMC: %s", machine.name, endpoint.error)
            return
        endpoint.published = ports
        log.info(
            "node %s: BMC published on the host's addresses: IPMI udp/%d, Redfish https/%d",
            machine.name, *ports,
        )  # fmt: skip

    async def _bring_up(self, machine: Machine, endpoint: BmcEndpoint) -> None:
        try:
            address = ipaddress.ip_address(endpoint.address)
        except ValueError:
            raise BmcError(f"{endpoint.address!r} is not an IP address") from None
        endpoint.address = str(address)
        network = bmc_network(self.dc, address)
        if network is None or network.address is None:
            nets = [
                f"{n.name} ({n.address.network})"
                for n in self.dc.networks
                if n.type == "bmc" and n.address is not None
            ]
            listed = ", ".join(nets) or "none has an address"
            raise BmcError(f"{address} is not inside any bmc network ({listed})")
        endpoint.network = network.name
        interface = ipaddress.ip_interface(f"{address}/{network.address.network.prefixlen}")
        await asyncio.to_thread(fabric.add_bridge_address, network.name, interface)
        target = self.target(machine)
        await self._ipmi.add(endpoint.address, target, self.ipmi_port)
        await self._redfish.add(endpoint.address, target, self.redfish_port)

    async def _take_down(self, address: str) -> None:
        for server in (self._ipmi, self._redfish):
            if server is not None:
                with contextlib.suppress(OSError, KeyError):
                    await server.remove(address)

    async def close(self) -> None:
        for server in (self._redfish, self._ipmi):
            if server is not None:
                await server.close()
        self._ipmi = self._redfish = None
        for target in self._targets.values():
            await target.close()
        await asyncio.to_thread(shutil.rmtree, self._cert_dir, True)

    def endpoint_json(self, node: str) -> dict[str, Any] | None:
        endpoint = self.endpoints.get(node)
        if endpoint is None:
            return None
        ca = self.ca_cert
        return endpoint.as_json(self.ipmi_port, self.redfish_port) | {
            "ca_cert": str(ca) if ca is not None else None
        }


__all__ = ["BmcEndpoint", "BmcError", "BmcManager", "bmc_network", "load_users"]
