"""The picture of a data center, before it is drawn: nodes (networks, routers, machines),
edges (a router's interface or a machine's NIC on a network, a machine's BMC on the BMC
network) and clusters (the groups).

Standard library only: `vdc graph --endpoint` reads this model as JSON from a running data
center's API and draws it where the spec's models may not be installed (runner containers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

NodeKind = Literal["network", "router", "machine"]
EdgeKind = Literal["nic", "bmc"]
NODE_KINDS: tuple[NodeKind, ...] = ("network", "router", "machine")
EDGE_KINDS: tuple[EdgeKind, ...] = ("nic", "bmc")


@dataclass(frozen=True)
class Node:
    id: str
    """Unique in the graph, whatever the names: `network/NAME`, `netns/NAME`, `node/NAME`."""
    kind: NodeKind
    name: str
    lines: tuple[str, ...] = ()
    """What is written under the name: a network's type and address, a router's interfaces
    with their addresses, a machine's NICs and BMC."""
    group: str | None = None
    """The group (cluster) of a router or machine, when the data center has several."""
    state: str | None = None
    """A machine's state in a running data center (lower case); None from a spec alone."""


@dataclass(frozen=True)
class Edge:
    source: str
    """The router's or machine's node id."""
    target: str
    """The network's node id."""
    label: str
    """The interface: `eth0` of a namespace, `nic0` of a machine, `bmc`."""
    kind: EdgeKind = "nic"
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Cluster:
    id: str
    label: str
    members: tuple[str, ...]
    """Node ids, in drawing order."""


@dataclass(frozen=True)
class Graph:
    title: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    clusters: tuple[Cluster, ...] = ()

    def node(self, node_id: str) -> Node:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def of_kind(self, kind: NodeKind) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.kind == kind)

    def edges_of(self, node_id: str) -> tuple[Edge, ...]:
        return tuple(e for e in self.edges if e.source == node_id)


# Fill colours of machines by state: the runtime's machine states and the VirtualDataCenter
# status's node phases (lower-cased) share one palette, so a picture means the same from
# `vdc graph --endpoint` and `kubectl vdc graph`.
STATE_COLOURS: Mapping[str, str] = {
    "ready": "#b7e4b0",
    "running": "#b7e4b0",
    "booting": "#fde9a9",
    "starting": "#fde9a9",
    "restarting": "#fde9a9",
    "failed": "#f4a6a6",
    "stopped": "#d9d9d9",
    "off": "#d9d9d9",
    "pending": "#cfe2f3",
}
UNKNOWN_STATE_COLOUR = "#e8d4f0"
KIND_COLOURS: Mapping[str, str] = {
    "network": "#444444",
    "router": "#dde8f7",
    "machine": "#ffffff",
}


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")


def visible(text: str) -> str:
    """`text` with the control characters (but line breaks and tabs) that no picture shows,
    and that XML cannot hold even escaped, replaced by U+FFFD: names come from a spec or
    from an API's JSON, and a picture with one of them would not open."""
    return _CONTROL.sub("\ufffd", text)


def state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, UNKNOWN_STATE_COLOUR)


def fill(node: Node) -> str:
    """A node's fill: its state's colour when it has a state, else its kind's."""
    if node.state is None:
        return KIND_COLOURS[node.kind]
    return state_colour(node.state)


def heading(node: Node) -> str:
    """A node's first line: its name, and its state when it has one."""
    return node.name if node.state is None else f"{node.name} [{node.state}]"


def to_json(graph: Graph) -> dict[str, Any]:
    return {
        "title": graph.title,
        "nodes": [
            {
                "id": n.id,
                "kind": n.kind,
                "name": n.name,
                "lines": list(n.lines),
                "group": n.group,
                "state": n.state,
            }
            for n in graph.nodes
        ],
        "edges": [
            {
                "source": e.source,
                "target": e.target,
                "label": e.label,
                "kind": e.kind,
                "addresses": list(e.addresses),
            }
            for e in graph.edges
        ],
        "clusters": [
            {"id": c.id, "label": c.label, "members": list(c.members)} for c in graph.clusters
        ],
    }


class GraphError(ValueError):
    """A graph's JSON that is not one: says where."""


def _get(data: Any, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(data, dict):
        raise GraphError(f"{where}: expected an object")
    value = data.get(key)
    if not isinstance(value, kind):
        raise GraphError(f"{where}.{key}: expected {_type_name(kind)}, got {value!r}")
    return value


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", list: "a list", dict: "an object", type(None): "null"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _strings(data: Any, key: str, where: str) -> tuple[str, ...]:
    items = _get(data, key, where, list)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise GraphError(f"{where}.{key}[{i}]: expected a string, got {item!r}")
    return tuple(items)


def _one_of(data: Any, key: str, where: str, choices: tuple[str, ...]) -> Any:
    value = _get(data, key, where, str)
    if value not in choices:
        raise GraphError(f"{where}.{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _known(node_ids: set[str], node_id: str, where: str) -> str:
    if node_id not in node_ids:
        raise GraphError(f"{where}: no node {node_id!r}")
    return node_id


def from_json(data: Any) -> Graph:
    """The graph `to_json` wrote; GraphError names the first bad field."""
    nodes = []
    for i, n in enumerate(_get(data, "nodes", "graph", list)):
        where = f"graph.nodes[{i}]"
        nodes.append(
            Node(
                _get(n, "id", where, str),
                _one_of(n, "kind", where, NODE_KINDS),
                _get(n, "name", where, str),
                _strings(n, "lines", where),
                _get(n, "group", where, (str, type(None))),
                _get(n, "state", where, (str, type(None))),
            )
        )
    ids = {n.id for n in nodes}
    if len(ids) != len(nodes):
        raise GraphError("graph.nodes: two nodes have the same id")
    edges = []
    for i, e in enumerate(_get(data, "edges", "graph", list)):
        where = f"graph.edges[{i}]"
        edges.append(
            Edge(
                _known(ids, _get(e, "source", where, str), f"{where}.source"),
                _known(ids, _get(e, "target", where, str), f"{where}.target"),
                _get(e, "label", where, str),
                _one_of(e, "kind", where, EDGE_KINDS),
                _strings(e, "addresses", where),
            )
        )
    clusters = []
    for i, c in enumerate(_get(data, "clusters", "graph", list)):
        where = f"graph.clusters[{i}]"
        members = _strings(c, "members", where)
        for member in members:
            _known(ids, member, f"{where}.members")
        clusters.append(Cluster(_get(c, "id", where, str), _get(c, "label", where, str), members))
    return Graph(_get(data, "title", "graph", str), tuple(nodes), tuple(edges), tuple(clusters))


__all__ = [
    "EDGE_KINDS",
    "KIND_COLOURS",
    "NODE_KINDS",
    "STATE_COLOURS",
    "Cluster",
    "Edge",
    "EdgeKind",
    "Graph",
    "GraphError",
    "Node",
    "NodeKind",
    "fill",
    "from_json",
    "to_json",
    "visible",
]
