"""A data center split into groups, and the networks stretched between them.

Each group runs on its own (a pod on Kubernetes, a host with `vdc run --group`) and builds
only its part: its nodes and namespaces, and the bridges of the networks they use. A network
used in several groups is stretched: each of those groups' bridges gets a VXLAN port with
the network's VNI, flooding to the other groups' tunnel addresses (unicast head-end
replication, so the underlay needs no multicast). A network's host address (and its NAT)
lives in one group only, its home, as one L2 segment has one gateway; the other groups'
bridges carry no address of their own but the BMC addresses of their nodes.

Pure: computed from the spec, so every group, and the operator, derive the same answer.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from vdc_runtime.spec import DEFAULT_GROUP, DataCenter
from vdc_runtime.spec.errors import did_you_mean

VXLAN_PORT = 4789
"""IANA's VXLAN port."""
VNI_MAX = 0xFFFFFF
VXLAN_OVERHEAD = {4: 50, 6: 70}
"""Outer IP + UDP + VXLAN + inner Ethernet headers, by the underlay's IP version."""


@dataclass(frozen=True)
class Stretch:
    """A network used in several groups."""

    network: str
    vni: int
    groups: tuple[str, ...]
    """The groups whose members use it, in group order."""


@dataclass(frozen=True)
class Layout:
    order: tuple[str, ...]
    """Every group with members: the default group first (when something is in it), then
    the declared ones in the order they were declared."""
    nodes: Mapping[str, tuple[str, ...]]
    netns: Mapping[str, tuple[str, ...]]
    networks: Mapping[str, tuple[str, ...]]
    """Group → the networks whose bridges it builds, in spec order."""
    home: Mapping[str, str]
    """Network → the group whose bridge carries its host address (and NAT)."""
    stretched: tuple[Stretch, ...]

    def stretch(self, network: str) -> Stretch | None:
        return next((s for s in self.stretched if s.network == network), None)

    def peers(self, group: str) -> tuple[str, ...]:
        """The groups `group` shares a stretched network with, in group order."""
        shared = {g for s in self.stretched if group in s.groups for g in s.groups}
        return tuple(g for g in self.order if g in shared and g != group)


def group_of(member_group: str | None) -> str:
    """The group of a node or namespace whose `group` is this."""
    return member_group or DEFAULT_GROUP


def group_order(members: Iterable[str | None], declared: Iterable[str]) -> tuple[str, ...]:
    """Every group with members (a member's group, None for the default): the default group
    first (when something is in it and it is not declared), then the declared ones in the
    order they were declared. A data center with nothing in it is one default group."""
    used = {group_of(m) for m in members}
    names = list(declared)
    order = tuple(
        ([DEFAULT_GROUP] if DEFAULT_GROUP in used and DEFAULT_GROUP not in names else [])
        + [name for name in names if name in used]
    )
    return order or (DEFAULT_GROUP,)


def layout(dc: DataCenter) -> Layout:
    order = group_order([m.group for m in [*dc.nodes, *dc.netns]], [g.name for g in dc.groups])
    nodes = {g: tuple(n.name for n in dc.nodes if group_of(n.group) == g) for g in order}
    netns = {g: tuple(ns.name for ns in dc.netns if group_of(ns.group) == g) for g in order}
    users: dict[str, set[str]] = {n.name: set() for n in dc.networks}
    for node in dc.nodes:
        for iface in node.interfaces:
            users[iface.network].add(group_of(node.group))
    for ns in dc.netns:
        for ns_iface in ns.interfaces:
            users[ns_iface.network].add(group_of(ns.group))
    for network in dc.networks:
        # Every group reaches every BMC, as on a real management network: its BMCs answer
        # there, and its hosts (a runner in its pod) drive the other groups' machines.
        if network.type == "bmc":
            users[network.name] = set(order)
        if not users[network.name]:
            users[network.name].add(order[0])
    ranked = {g: i for i, g in enumerate(order)}
    by_network = {name: tuple(sorted(gs, key=ranked.__getitem__)) for name, gs in users.items()}
    networks = {g: tuple(n.name for n in dc.networks if g in by_network[n.name]) for g in order}
    home = {name: groups[0] for name, groups in by_network.items()}
    shared = [n.name for n in dc.networks if len(by_network[n.name]) > 1]
    vnis = vni_for(shared)
    stretched = tuple(Stretch(name, vnis[name], by_network[name]) for name in shared)
    return Layout(order, nodes, netns, networks, home, stretched)


def vni_for(networks: list[str]) -> dict[str, int]:
    """A VNI per network, from its name alone, so that every group agrees on it without
    being told; a rare hash collision moves the later name (by sorted order) on."""
    vnis: dict[str, int] = {}
    taken: set[int] = set()
    for name in sorted(networks):
        vni = int.from_bytes(hashlib.sha1(name.encode()).digest()[:3], "big") % VNI_MAX + 1
        while vni in taken:
            vni = vni % VNI_MAX + 1
        taken.add(vni)
        vnis[name] = vni
    return vnis


def run_problems(
    the_layout: Layout, group: str, peers: Mapping[str, str], *, every_peer: bool = True
) -> list[str]:
    """What is wrong with building `group` with these peers' tunnel addresses (`vdc run
    --group/--peer`), each said as the user can fix it; `every_peer=False` lets peers not
    be known yet (a peer update names only some)."""
    if group not in the_layout.order:
        known = ", ".join(the_layout.order)
        return [f"--group {group}: no such group{did_you_mean(group, the_layout.order)}"
                f" (the spec's groups: {known})"]  # fmt: skip
    problems = []
    for name, address in peers.items():
        if name == group:
            problems.append(f"--peer {name}={address}: that is this run's own group")
        elif name not in the_layout.order:
            hint = did_you_mean(name, the_layout.order)
            problems.append(f"--peer {name}={address}: no such group{hint}")
        else:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                problems.append(f"--peer {name}={address}: not an IP address")
    for peer in the_layout.peers(group) if every_peer else ():
        if peer not in peers:
            shared = [s.network for s in the_layout.stretched if {group, peer} <= set(s.groups)]
            problems.append(
                f"group {peer} shares network(s) {', '.join(shared)} with group {group}:"
                f" give --peer {peer}=ADDRESS (its host's tunnel address)"
            )
    return problems


def part(dc: DataCenter, group: str, the_layout: Layout | None = None) -> DataCenter:
    """What `group` builds: its nodes and namespaces, and the networks they use. Images,
    device classes and BMC settings stay whole (they are only read)."""
    found = the_layout or layout(dc)
    if group not in found.order:
        raise KeyError(group)
    nodes, netns = set(found.nodes[group]), set(found.netns[group])
    networks = set(found.networks[group])
    return dc.model_copy(
        update={
            "nodes": [n for n in dc.nodes if n.name in nodes],
            "netns": [ns for ns in dc.netns if ns.name in netns],
            "networks": [n for n in dc.networks if n.name in networks],
        }
    )


__all__ = [
    "VNI_MAX",
    "VXLAN_OVERHEAD",
    "VXLAN_PORT",
    "Layout",
    "Stretch",
    "group_of",
    "group_order",
    "layout",
    "part",
    "run_problems",
    "vni_for",
]
