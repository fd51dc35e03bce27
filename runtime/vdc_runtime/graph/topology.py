"""The graph of a data center's spec: pure, so a picture of a spec file, of a running data
center and of a VirtualDataCenter is the same picture."""

from __future__ import annotations

from collections.abc import Mapping

from vdc_runtime import groups
from vdc_runtime.graph.model import Cluster, Edge, Graph, Node
from vdc_runtime.spec import DataCenter
from vdc_runtime.spec import Network as SpecNetwork
from vdc_runtime.spec import Node as SpecNode


def network_id(name: str) -> str:
    return f"network/{name}"


def router_id(name: str) -> str:
    return f"netns/{name}"


def machine_id(name: str) -> str:
    return f"node/{name}"


def _network_lines(network: SpecNetwork, stretched: groups.Stretch | None) -> tuple[str, ...]:
    head = network.type
    if network.address is not None:
        head += f" {network.address}"
    if network.use_nat:
        head += " NAT"
    lines = [head]
    if stretched is not None:
        lines.append(f"stretched: {', '.join(stretched.groups)}")
    return tuple(lines)


def _machine_lines(node: SpecNode, bmc_network: str | None) -> tuple[str, ...]:
    memory = f", {node.memory}" if node.memory else ""
    lines = [f"{node.cpus} vCPU{'s' if node.cpus != 1 else ''}{memory}"]
    for i, iface in enumerate(node.interfaces):
        mac = f" {iface.mac}" if iface.mac else ""
        lines.append(f"nic{i} {iface.network}{mac}")
    if bmc_network is not None:
        # Without a static address the guest announces one, as in Placemat.
        if node.bmc and node.bmc.address:
            lines.append(f"BMC {node.bmc.address} on {bmc_network}")
        else:
            lines.append(f"BMC on {bmc_network}, address from the guest")
    return tuple(lines)


def build(dc: DataCenter, title: str = "", states: Mapping[str, str] | None = None) -> Graph:
    """The graph of `dc`; `states` gives machines' states by name (a running data center's),
    and clusters are drawn when the data center has several groups."""
    states = states or {}
    the_layout = groups.layout(dc)
    clustered = len(the_layout.order) > 1
    bmc_network = next((n.name for n in dc.networks if n.type == "bmc"), None)

    nodes = [
        Node(
            network_id(n.name),
            "network",
            n.name,
            _network_lines(n, the_layout.stretch(n.name) if clustered else None),
        )
        for n in dc.networks
    ]
    edges: list[Edge] = []
    for ns in dc.netns:
        lines = []
        for i, iface in enumerate(ns.interfaces):
            addresses = tuple(str(a) for a in iface.addresses)
            lines.append(" ".join([f"eth{i}", iface.network, *addresses]))
            edges.append(
                Edge(router_id(ns.name), network_id(iface.network), f"eth{i}", "nic", addresses)
            )
        group = groups.group_of(ns.group) if clustered else None
        nodes.append(Node(router_id(ns.name), "router", ns.name, tuple(lines), group))
    for node in dc.nodes:
        for i, nic in enumerate(node.interfaces):
            edges.append(Edge(machine_id(node.name), network_id(nic.network), f"nic{i}"))
        if bmc_network is not None:
            address = (str(node.bmc.address),) if node.bmc and node.bmc.address else ()
            edges.append(
                Edge(machine_id(node.name), network_id(bmc_network), "bmc", "bmc", address)
            )
        group = groups.group_of(node.group) if clustered else None
        nodes.append(
            Node(
                machine_id(node.name),
                "machine",
                node.name,
                _machine_lines(node, bmc_network),
                group,
                states.get(node.name),
            )
        )
    clusters = ()
    if clustered:
        clusters = tuple(
            Cluster(
                f"group/{g}",
                f"group {g}",
                tuple(router_id(n) for n in the_layout.netns[g])
                + tuple(machine_id(n) for n in the_layout.nodes[g]),
            )
            for g in the_layout.order
        )
    return Graph(title, tuple(nodes), tuple(edges), clusters)


__all__ = ["build", "machine_id", "network_id", "router_id"]
