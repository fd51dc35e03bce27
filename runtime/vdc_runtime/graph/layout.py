"""Where the SVG picture puts everything: networks as horizontal buses across the middle,
routers (namespaces) in a row above them, machines in a row below, each joined to its
buses by vertical wires, and each group a band of columns around its routers and machines.

Hand-written rather than left to graphviz: graphviz is a C program, and the default
picture must come out of a plain `pip install` with no binary to find at run time (DOT is
there for those who have it). A data center's shape is regular enough for a fixed,
layered scheme that stays readable at neco's size (30 networks, 13 namespaces, 12
machines) and gives the same bytes for the same spec, so its pictures can be golden-tested.

Pure: coordinates are integers computed from the graph alone; text widths are estimated
for a monospace font, which the SVG asks for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from vdc_runtime.graph.model import STATE_COLOURS, Cluster, Edge, Graph, Node, heading

CHAR_W = 7.25
"""Advance of one character of a 12px monospace font (DejaVu Sans Mono: 0.602 em), a bit
over so the text stays inside its box."""
FONT = 12
LINE_H = 15
PAD = 8
MARGIN = 16
MIN_BOX_W = 120
BOX_GAP = 24
BAND_PAD = 12
BAND_GAP = 24
BUS_GAP = 28
BUS_STEP = 22
LANE = 8
"""The grid wires are drawn on: no two wires share an x, so none runs along another."""
LEGEND_H = 28


@dataclass(frozen=True)
class Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def right(self) -> int:
        return self.x + self.w

    @property
    def bottom(self) -> int:
        return self.y + self.h

    def overlaps(self, other: Rect) -> bool:
        return (
            self.x < other.right
            and other.x < self.right
            and self.y < other.bottom
            and other.y < self.bottom
        )


@dataclass(frozen=True)
class Box:
    node: Node
    rect: Rect
    heading: str
    """The first line: the name (and a machine's state)."""


@dataclass(frozen=True)
class Bus:
    node: Node
    y: int
    x0: int
    x1: int
    label: str


@dataclass(frozen=True)
class Wire:
    edge: Edge
    x: int
    y0: int
    """Where it leaves its router or machine."""
    y1: int
    """The bus it reaches."""


@dataclass(frozen=True)
class Band:
    cluster: Cluster
    rect: Rect


@dataclass(frozen=True)
class Layout:
    title: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    buses: tuple[Bus, ...]
    wires: tuple[Wire, ...]
    bands: tuple[Band, ...]
    legend: tuple[str, ...]
    """The states shown, in palette order, when machines have states."""
    legend_y: int


def text_width(text: str) -> int:
    return math.ceil(len(text) * CHAR_W)


def _box_size(node: Node, ports: int) -> tuple[int, int]:
    text = max(text_width(line) for line in (heading(node), *node.lines))
    width = max(MIN_BOX_W, text + 2 * PAD, (ports + 1) * LANE * 2)
    return width, 2 * PAD + LINE_H * (1 + len(node.lines))


def _bus_rank(graph: Graph, network: Node, index: int) -> tuple[int, int]:
    """Networks only routers use on top (nearest the routers), those machines use below,
    the BMC network last (nearest the machines)."""
    users = [e for e in graph.edges if e.target == network.id]
    if any(e.kind == "bmc" for e in users):
        return 2, index
    machines = any(graph.node(e.source).kind == "machine" for e in users)
    return (1 if machines else 0), index


def _bands(graph: Graph) -> list[tuple[Cluster | None, list[Node]]]:
    """Each group's members (routers and machines), then those in none, unboxed."""
    members = [n for n in graph.nodes if n.kind != "network"]
    bands: list[tuple[Cluster | None, list[Node]]] = []
    placed: set[str] = set()
    for cluster in graph.clusters:
        inside = [n for n in members if n.id in cluster.members and n.id not in placed]
        placed.update(n.id for n in inside)
        bands.append((cluster, inside))
    rest = [n for n in members if n.id not in placed]
    if rest or not bands:
        bands.append((None, rest))
    return bands


def _lane(ideal: float, lo: int, hi: int, taken: set[int]) -> int:
    """The free lane nearest `ideal` within [lo, hi] (a taken one if all are)."""
    first, last = math.ceil(lo / LANE), math.floor(hi / LANE)
    lanes = sorted(range(first, last + 1), key=lambda k: (abs(k * LANE - ideal), k))
    free = [k for k in lanes if k * LANE not in taken]
    x = (free or lanes or [first])[0] * LANE
    taken.add(x)
    return x


def _ports(box: Rect, edges: Iterable[Edge], taken: set[int]) -> list[tuple[Edge, int]]:
    edges = list(edges)
    return [
        (
            edge,
            _lane(
                box.x + box.w * (i + 1) / (len(edges) + 1), box.x + LANE, box.right - LANE, taken
            ),
        )
        for i, edge in enumerate(edges)
    ]


def layout(graph: Graph) -> Layout:
    networks = graph.of_kind("network")
    ranked = sorted(range(len(networks)), key=lambda i: _bus_rank(graph, networks[i], i))
    labels = {n.id: " ".join([n.name, *n.lines]) for n in networks}
    left = MARGIN + (
        max((text_width(t) for t in labels.values()), default=0) + BOX_GAP if networks else 0
    )
    top = MARGIN + (LINE_H + PAD if graph.title else 0)
    bands = _bands(graph)
    clustered = any(cluster is not None for cluster, _ in bands)
    if clustered:
        top += LINE_H + BAND_PAD

    sizes = {n.id: _box_size(n, len(graph.edges_of(n.id))) for _, ms in bands for n in ms}
    routers_h = max(
        (sizes[n.id][1] for _, ms in bands for n in ms if n.kind == "router"), default=0
    )
    bus_top = top + routers_h + BUS_GAP
    bus_y = {networks[i].id: bus_top + k * BUS_STEP for k, i in enumerate(ranked)}
    machines_top = bus_top + max(len(networks) - 1, 0) * BUS_STEP + BUS_GAP
    machines_h = max(
        (sizes[n.id][1] for _, ms in bands for n in ms if n.kind == "machine"), default=0
    )

    boxes: list[Box] = []
    band_rects: list[Band] = []
    x = left
    for cluster, members in bands:
        pad = BAND_PAD if cluster is not None else 0
        widest = 0
        for kind, y in (("router", top), ("machine", machines_top)):
            cursor = x + pad
            for node in (n for n in members if n.kind == kind):
                w, h = sizes[node.id]
                boxes.append(Box(node, Rect(cursor, y, w, h), heading(node)))
                cursor += w + BOX_GAP
            widest = max(widest, cursor - BOX_GAP - x - pad)
        width = max(widest, 0) + 2 * pad
        if cluster is not None:
            width = max(width, text_width(cluster.label) + 2 * BAND_PAD)
            head = LINE_H + BAND_PAD
            band_rects.append(
                Band(
                    cluster,
                    Rect(x, top - head, width, machines_top + machines_h + BAND_PAD - top + head),
                )
            )
        x += width + BAND_GAP
    right = max(x - BAND_GAP, left + MIN_BOX_W)

    # Routers' wires first, then machines', each choosing free lanes within its box.
    taken: set[int] = set()
    wires: list[Wire] = []
    for kind in ("router", "machine"):
        for box in (b for b in boxes if b.node.kind == kind):
            for edge, wx in _ports(box.rect, graph.edges_of(box.node.id), taken):
                side = box.rect.bottom if kind == "router" else box.rect.y
                wires.append(Wire(edge, wx, side, bus_y[edge.target]))

    buses = tuple(
        Bus(networks[i], bus_y[networks[i].id], left, right, labels[networks[i].id]) for i in ranked
    )
    bottom = machines_top + machines_h + (BAND_PAD if clustered else 0)
    if not any(n.kind == "machine" for n in graph.nodes):
        bottom = machines_top
    states = {n.state for n in graph.nodes if n.state is not None}
    legend = tuple(s for s in STATE_COLOURS if s in states) + tuple(
        sorted(states - set(STATE_COLOURS))
    )
    legend_y = bottom + PAD
    height = bottom + (LEGEND_H if legend else 0) + MARGIN
    return Layout(
        graph.title,
        right + MARGIN,
        height,
        tuple(boxes),
        buses,
        tuple(wires),
        tuple(band_rects),
        legend,
        legend_y,
    )


__all__ = ["Band", "Box", "Bus", "Layout", "Rect", "Wire", "heading", "layout", "text_width"]
