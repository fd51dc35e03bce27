"""The kernel objects a data center needs, computed from its spec without touching anything."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vdc_runtime.groups import VXLAN_PORT
from vdc_runtime.spec.identity import netns_mac

if TYPE_CHECKING:
    from collections.abc import Mapping

    from vdc_runtime.groups import Layout
    from vdc_runtime.spec import DataCenter

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# Sysctls every router namespace gets, as in Placemat; `default` keys are written before
# any interface exists so the veths created afterwards inherit them.
NETNS_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
    ("net.ipv6.conf.default.forwarding", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.conf.default.rp_filter", "0"),
)
NAT_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv6.conf.all.forwarding", "1"),
)


def host_veth_name(netns: str, index: int) -> str:
    """Host end of a namespace's veth: stable for a given spec, so `--force` finds it."""
    digest = hashlib.sha1(f"{netns}/{index}".encode()).hexdigest()
    return f"vdc{digest[:11]}"


def run_identity(run_dir: str) -> tuple[str, int]:
    """The nftables table name and link group owned by the run using `run_dir`."""
    digest = hashlib.sha1(run_dir.encode()).digest()
    table = "vdc_" + digest[:5].hex()
    group = int.from_bytes(digest[5:9], "big") & 0x7FFFFFFF or 1
    return table, group


def tunnel_name(bridge: str) -> str:
    """A stretched bridge's VXLAN port: named after the bridge, as its names are unique."""
    return f"vx{hashlib.sha1(bridge.encode()).hexdigest()[:11]}"


@dataclass(frozen=True)
class BridgePlan:
    name: str
    kind: str  # internal / external / bmc
    address: Address | None
    nat: bool
    stretched: bool = False


@dataclass(frozen=True)
class TunnelPlan:
    """The VXLAN port of a stretched network's bridge, flooding to every peer."""

    name: str
    bridge: str
    vni: int
    peers: tuple[str, ...]
    """The tunnel addresses of the other groups using the network (unknown ones left out:
    their pods may not have addresses yet)."""


@dataclass(frozen=True)
class Tunnels:
    """How this group's stretched networks reach the other groups."""

    local: str
    """This group's tunnel address (the pod's IP, or the host's toward its peers)."""
    port: int = VXLAN_PORT
    tunnels: tuple[TunnelPlan, ...] = ()
    away: frozenset[str] = frozenset()
    """Networks whose host address and NAT live in another group (their home)."""


def plan_tunnels(
    the_layout: Layout, group: str, local: str, peers: Mapping[str, str], port: int = VXLAN_PORT
) -> Tunnels:
    """The tunnels of `group`, given the other groups' tunnel addresses."""
    tunnels = tuple(
        TunnelPlan(
            name=tunnel_name(s.network),
            bridge=s.network,
            vni=s.vni,
            peers=tuple(peers[g] for g in s.groups if g != group and g in peers),
        )
        for s in the_layout.stretched
        if group in s.groups
    )
    away = frozenset(name for name in the_layout.networks[group] if the_layout.home[name] != group)
    return Tunnels(local=local, port=port, tunnels=tunnels, away=away)


@dataclass(frozen=True)
class VethPlan:
    host: str
    peer: str
    bridge: str
    addresses: tuple[Address, ...]
    mac: str | None = None
    """The namespace end's MAC (`identity.netns_mac`)."""


@dataclass(frozen=True)
class NetnsPlan:
    name: str
    veths: tuple[VethPlan, ...]


@dataclass(frozen=True)
class TapPlan:
    name: str
    bridge: str
    queues: int
    node: str


@dataclass(frozen=True)
class FabricPlan:
    mtu: int | None
    group: int
    table: str
    bridges: tuple[BridgePlan, ...]
    namespaces: tuple[NetnsPlan, ...]
    host_sysctls: tuple[tuple[str, str], ...] = field(default=())
    taps: tuple[TapPlan, ...] = field(default=())
    tunnels: Tunnels | None = None

    @property
    def links(self) -> list[str]:
        return (
            [b.name for b in self.bridges]
            + [v.host for ns in self.namespaces for v in ns.veths]
            + [t.name for t in self.taps]
            + [t.name for t in (self.tunnels.tunnels if self.tunnels else ())]
        )


def plan_fabric(
    dc: DataCenter,
    *,
    mtu: int | None,
    group: int,
    table: str,
    taps: tuple[TapPlan, ...] = (),
    tunnels: Tunnels | None = None,
) -> FabricPlan:
    """`taps` come from the nodes' layouts, which own the tap names and queue counts;
    `tunnels`, for a group of a data center split in groups, stretch its shared networks."""
    away = tunnels.away if tunnels else frozenset()
    stretched = {t.bridge for t in tunnels.tunnels} if tunnels else set()
    bridges = tuple(
        BridgePlan(
            name=n.name,
            kind=n.type,
            address=None if n.name in away else n.address,
            nat=n.use_nat and n.name not in away,
            stretched=n.name in stretched,
        )
        for n in dc.networks
    )
    namespaces = tuple(
        NetnsPlan(
            name=ns.name,
            veths=tuple(
                VethPlan(
                    host=host_veth_name(ns.name, i),
                    peer=f"eth{i}",
                    bridge=iface.network,
                    addresses=tuple(iface.addresses),
                    mac=netns_mac(ns.name, i),
                )
                for i, iface in enumerate(ns.interfaces)
            ),
        )
        for ns in dc.netns
    )
    sysctls = NAT_SYSCTLS if any(b.nat for b in bridges) else ()
    return FabricPlan(
        mtu=mtu,
        group=group,
        table=table,
        bridges=bridges,
        namespaces=namespaces,
        host_sysctls=sysctls,
        taps=taps,
        tunnels=tunnels,
    )
