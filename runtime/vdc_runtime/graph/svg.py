"""The graph as a standalone SVG (the default of `vdc graph`): no script, no external
font or style sheet, so it opens offline in any browser and can be committed or attached."""

from __future__ import annotations

import re

from vdc_runtime.graph.layout import FONT, LINE_H, PAD, Layout, layout
from vdc_runtime.graph.model import Graph, fill, state_colour, visible

_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;"}


def escape(text: str) -> str:
    """Text or an attribute's value, safe in XML."""
    return re.sub("[&<>\"']", lambda m: _ESCAPES[m.group()], visible(text))


STYLE = (
    f"text{{font-family:monospace;font-size:{FONT}px;fill:#111}}"
    ".name{font-weight:bold}"
    ".bus{stroke:#444;stroke-width:3}"
    ".wire{stroke:#555;stroke-width:1.2;fill:none}"
    ".bmc{stroke-dasharray:4 3;stroke:#888}"
    ".box{stroke:#333;stroke-width:1}"
    ".router{rx:10}"
    ".band{fill:#f6f6f2;stroke:#999;stroke-dasharray:6 4}"
)


def render(graph: Graph) -> str:
    return draw(layout(graph))


def draw(plan: Layout) -> str:
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{plan.width}" height="{plan.height}"'
        f' viewBox="0 0 {plan.width} {plan.height}">',
        f"<style>{STYLE}</style>",
        f'<rect width="{plan.width}" height="{plan.height}" fill="#ffffff"/>',
    ]
    if plan.title:
        out.append(
            f'<text x="{PAD * 2}" y="{PAD * 2 + FONT}" class="name">{escape(plan.title)}</text>'
        )
    for band in plan.bands:
        r = band.rect
        out.append(
            f'<g class="group"><rect class="band" x="{r.x}" y="{r.y}" width="{r.w}"'
            f' height="{r.h}"/><text x="{r.x + PAD}" y="{r.y + LINE_H}" class="name">'
            f"{escape(band.cluster.label)}</text></g>"
        )
    for bus in plan.buses:
        out.append(
            f'<g class="network"><title>{escape(bus.label)}</title>'
            f'<line class="bus" x1="{bus.x0}" y1="{bus.y}" x2="{bus.x1}" y2="{bus.y}"/>'
            f'<text x="{PAD * 2}" y="{bus.y + 4}">{escape(bus.label)}</text></g>'
        )
    for wire in plan.wires:
        e = wire.edge
        what = " ".join([e.label, *e.addresses])
        kind = "wire bmc" if e.kind == "bmc" else "wire"
        out.append(
            f'<g><title>{escape(what)}</title><line class="{kind}" x1="{wire.x}"'
            f' y1="{wire.y0}" x2="{wire.x}" y2="{wire.y1}"/>'
            f'<circle cx="{wire.x}" cy="{wire.y1}" r="3" fill="#222"/></g>'
        )
    for box in plan.boxes:
        r, node = box.rect, box.node
        shape = "box router" if node.kind == "router" else "box"
        out.append(
            f'<g class="{node.kind}"><rect class="{shape}" x="{r.x}" y="{r.y}"'
            f' width="{r.w}" height="{r.h}" fill="{fill(node)}"/>'
        )
        for i, line in enumerate((box.heading, *node.lines)):
            cls = ' class="name"' if i == 0 else ""
            y = r.y + PAD + FONT + i * LINE_H
            out.append(f'<text x="{r.x + PAD}" y="{y}"{cls}>{escape(line)}</text>')
        out.append("</g>")
    x = PAD * 2
    for state in plan.legend:
        colour = state_colour(state)
        out.append(
            f'<rect class="box" x="{x}" y="{plan.legend_y}" width="14" height="14"'
            f' fill="{colour}"/><text x="{x + 20}" y="{plan.legend_y + 12}">'
            f"{escape(state)}</text>"
        )
        x += 20 + len(state) * 8 + 24
    out.append("</svg>")
    return "\n".join(out) + "\n"


__all__ = ["draw", "escape", "render"]
