"""Stretched networks' VXLAN ports and their flood lists, and the underlay they ride on.

Through pyroute2: a data center has a handful of stretched networks, created once, so the
batching that `netlink` does for hundreds of links buys nothing here, while VXLAN's link
attributes and bridge FDB entries are what pyroute2 already encodes.

Head-end replication: a VXLAN port has one all-zeros FDB entry per peer, so broadcast,
unknown-unicast and multicast frames are copied to every peer by unicast; learning then
sends known MACs to their own peer only. No multicast is needed on the underlay, which a
pod network rarely carries.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vdc_runtime.fabric.plan import FabricPlan, TunnelPlan, Tunnels, plan_tunnels
from vdc_runtime.groups import VXLAN_OVERHEAD, Layout
from vdc_runtime.ledger import Ledger

ZERO_MAC = "00:00:00:00:00:00"


class TunnelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Underlay:
    """Where tunnels toward a peer leave this host."""

    local: str
    device: str
    mtu: int


def underlay(peer: str) -> Underlay:
    """The source address, device and MTU of the route toward `peer`."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        try:
            route = ipr.route("get", dst=peer)[0]
        except NetlinkError as exc:
            raise TunnelError(f"no route to peer {peer}: {exc.args[-1]}") from None
        src, oif = route.get_attr("RTA_PREFSRC"), route.get_attr("RTA_OIF")
        link = ipr.get_links(oif)[0]
    if src is None:
        raise TunnelError(f"the route to peer {peer} has no source address to tunnel from")
    return Underlay(src, link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU"))


def underlay_with(local: str) -> Underlay:
    """The device holding the address `local`, and its MTU: where tunnels leave before any
    peer is known (a pod whose peers have no addresses yet)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for entry in ipr.get_addr():
            if entry.get_attr("IFA_ADDRESS") == local or entry.get_attr("IFA_LOCAL") == local:
                link = ipr.get_links(entry["index"])[0]
                return Underlay(local, link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU"))
    raise TunnelError(f"no interface of this host has the tunnel address {local}")


def plan_group(
    the_layout: Layout,
    group: str,
    peers: Mapping[str, str],
    local: str | None,
    port: int,
    mtu: int | None,
) -> tuple[Tunnels, int | None, Underlay]:
    """`group`'s tunnels, the data center's MTU lowered by their overhead, and the underlay.

    The whole data center gets the lowered MTU, not only the stretched bridges: a guest or
    router then cannot tell a stretched network from a local one, and routing between them
    never needs fragments or path MTU discovery.
    """
    known = [peers[g] for g in the_layout.peers(group) if g in peers]
    if not known and local is None:
        raise TunnelError(f"group {group}: no peer address to tunnel to and no local one given")
    # Before any peer is known (their pods have no address yet), the device holding the
    # local address is where tunnels will leave.
    under = underlay(known[0]) if known else underlay_with(local)  # type: ignore[arg-type]
    local = local or under.local
    lowered = under.mtu - VXLAN_OVERHEAD[ipaddress.ip_address(local).version]
    if mtu is None or lowered < mtu:
        mtu = lowered
    return plan_tunnels(the_layout, group, local, peers, port), mtu, under


def create(plan: FabricPlan, ledger: Ledger) -> None:
    """Create the plan's VXLAN ports on their bridges, each flooding to its peers."""
    tunnels = plan.tunnels
    if tunnels is None or not tunnels.tunnels:
        return
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    ledger.record("links", group=plan.group, names=[t.name for t in tunnels.tunnels])
    local_key = (
        "vxlan_local" if ipaddress.ip_address(tunnels.local).version == 4 else "vxlan_local6"
    )
    with IPRoute() as ipr:
        for tunnel in tunnels.tunnels:
            what = f"VXLAN port {tunnel.name} of network {tunnel.bridge} (VNI {tunnel.vni})"
            try:
                ipr.link(
                    "add",
                    ifname=tunnel.name,
                    kind="vxlan",
                    vxlan_id=tunnel.vni,
                    vxlan_port=tunnels.port,
                    vxlan_learning=1,
                    group=plan.group,
                    **{local_key: tunnels.local},
                    **({"mtu": plan.mtu} if plan.mtu else {}),
                )
                index = ipr.link_lookup(ifname=tunnel.name)[0]
                master = ipr.link_lookup(ifname=tunnel.bridge)[0]
                ipr.link("set", index=index, master=master, state="up")
                for peer in tunnel.peers:
                    ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=peer)
            except NetlinkError as exc:
                raise TunnelError(f"{what}: {exc.args[-1]}") from None


def _entries(ipr: Any, index: int) -> list[tuple[str, str]]:
    """(MAC, peer) of every FDB entry of a VXLAN port that names a peer."""
    found = []
    for entry in ipr.fdb("dump", ifindex=index):
        mac, dst = entry.get_attr("NDA_LLADDR"), entry.get_attr("NDA_DST")
        if entry["ifindex"] == index and mac and dst:
            found.append((mac, dst))
    return found


def set_peers(tunnel: TunnelPlan, peers: tuple[str, ...]) -> None:
    """Make the port flood to exactly `peers`, as when a peer comes back at a new address.

    What the port learned behind a peer that is gone is forgotten too: a machine keeps its
    MAC when its group's pod is replaced, and frames to it would otherwise go to the old
    address until the entry aged out (minutes), not follow within seconds.
    """
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=tunnel.name)[0]
        entries = _entries(ipr, index)
        current = {dst for mac, dst in entries if mac == ZERO_MAC}
        gone = current - set(peers)
        for mac, dst in entries:
            if dst in gone:
                try:
                    ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
                except NetlinkError as exc:
                    if exc.code != errno.ENOENT:  # aged out meanwhile
                        raise
        for peer in peers:
            if peer not in current:
                ipr.fdb("append", ifindex=index, lladdr=ZERO_MAC, dst=peer)


__all__ = [
    "TunnelError",
    "Underlay",
    "create",
    "plan_group",
    "set_peers",
    "underlay",
    "underlay_with",
]
