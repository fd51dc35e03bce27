"""Pictures of a data center's topology (`vdc graph`, `kubectl vdc graph`).

`topology.build` turns a spec into a `model.Graph` (pure); each format has its renderer:
`svg` (with its own layout, `layout`), `dot`, `mermaid` and `jsonfmt`. Only `topology`
needs the spec's models; the rest is the standard library, so a graph read as JSON from a
running data center's API is drawn anywhere.
"""

from __future__ import annotations

from collections.abc import Callable

from vdc_runtime.graph import dot, jsonfmt, mermaid, svg
from vdc_runtime.graph.model import Graph

RENDERERS: dict[str, Callable[[Graph], str]] = {
    "svg": svg.render,
    "dot": dot.render,
    "mermaid": mermaid.render,
    "json": jsonfmt.render,
}
FORMATS = tuple(RENDERERS)


def render(graph: Graph, fmt: str = "svg") -> str:
    try:
        renderer = RENDERERS[fmt]
    except KeyError:
        raise ValueError(f"format {fmt!r}: one of {', '.join(FORMATS)}") from None
    return renderer(graph)


__all__ = ["FORMATS", "RENDERERS", "render"]
