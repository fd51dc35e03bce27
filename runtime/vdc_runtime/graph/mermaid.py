"""The graph as a Mermaid flowchart, which GitHub and most Markdown viewers draw."""

from __future__ import annotations

import json
import re

from vdc_runtime.graph.model import STATE_COLOURS, Graph, Node, fill, heading, state_colour

_PLAIN = re.compile(r"[A-Za-z0-9 ._:/,\[\]()-]")


def quote(text: str) -> str:
    """A quoted Mermaid label: every character that could end the label or mean something
    to Mermaid's parser or its HTML labels (quotes, brackets of shapes, pipes, `<`, `&`,
    `#`, line breaks...) written as Mermaid's numeric entity `#NN;`."""
    inner = "".join(c if _PLAIN.fullmatch(c) else f"#{ord(c)};" for c in text)
    # Square brackets are harmless inside quotes but make a label read as a shape to some
    # renderers; entities keep them harmless everywhere.
    inner = inner.replace("[", "#91;").replace("]", "#93;")
    return f'"{inner}"'


def _label(node: Node) -> str:
    return "<br>".join(quote(line)[1:-1] for line in (heading(node), *node.lines))


def _shape(node: Node, ident: str) -> str:
    label = f'"{_label(node)}"'
    if node.kind == "network":
        return f"{ident}[/{label}/]"
    if node.kind == "router":
        return f"{ident}{{{{{label}}}}}"
    return f"{ident}[{label}]"


def _class(state: str) -> str:
    return f"st_{state}" if state in STATE_COLOURS else "st_other"


def render(graph: Graph) -> str:
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    out = ["flowchart TB"]
    if graph.title:
        # A JSON string is a YAML one: the front matter stays one line, whatever the title.
        out.insert(0, f"---\ntitle: {json.dumps(graph.title)}\n---")
    clustered = {m for c in graph.clusters for m in c.members}
    out += [f"  {_shape(n, ids[n.id])}" for n in graph.nodes if n.id not in clustered]
    for i, cluster in enumerate(graph.clusters):
        out.append(f"  subgraph g{i}[{quote(cluster.label)}]")
        out += [f"    {_shape(graph.node(m), ids[m])}" for m in cluster.members]
        out.append("  end")
    for edge in graph.edges:
        link = "-.-" if edge.kind == "bmc" else "---"
        label = quote(" ".join([edge.label, *edge.addresses]))
        out.append(f"  {ids[edge.source]} {link}|{label}| {ids[edge.target]}")
    states = sorted({n.state for n in graph.nodes if n.state is not None})
    for cls, state in sorted({_class(s): s for s in states}.items()):
        out.append(f"  classDef {cls} fill:{state_colour(state)}")
    for node in graph.nodes:
        if node.state is not None:
            out.append(f"  class {ids[node.id]} {_class(node.state)}")
        elif node.kind == "router":
            out.append(f"  style {ids[node.id]} fill:{fill(node)}")
    return "\n".join(out) + "\n"


__all__ = ["quote", "render"]
