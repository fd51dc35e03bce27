"""The graph in graphviz's DOT language, for those who have graphviz (`dot -Tpng`)."""

from __future__ import annotations

from vdc_runtime.graph.model import Graph, Node, fill, heading, visible


def _escape(text: str, newline: str = "\\n") -> str:
    """Inside a DOT string only `"` needs escaping, but graphviz reads a backslash in a
    label as the start of an escape (\\n, \\N, \\G...), so it is doubled too; a line break
    in a name becomes graphviz's own (`newline`)."""
    text = visible(text).replace("\\", "\\\\").replace('"', '\\"').replace("\r", "")
    return text.replace("\n", newline)


def quote(text: str) -> str:
    return f'"{_escape(text)}"'


def _label(node: Node) -> str:
    """The name over the details, each line left-aligned (graphviz's `\\l` ends one)."""
    lines = (heading(node), *node.lines)
    return '"' + "".join(_escape(line, "\\l") + "\\l" for line in lines) + '"'


_SHAPES = {
    "network": 'shape=box, style="filled,bold", fillcolor="#444444", fontcolor="#ffffff",'
    " height=0.3",
    "router": 'shape=box, style="filled,rounded"',
    "machine": 'shape=box, style="filled"',
}


def render(graph: Graph) -> str:
    ids = {n.id: f"n{i}" for i, n in enumerate(graph.nodes)}
    out = [
        f"graph {quote(graph.title or 'vdc')} {{",
        '  graph [rankdir=TB, fontname="monospace"];',
        '  node [fontname="monospace", fontsize=10];',
        '  edge [fontname="monospace", fontsize=9];',
    ]

    def node_line(node: Node, indent: str) -> str:
        colour = "" if node.kind == "network" else f', fillcolor="{fill(node)}"'
        label = (
            quote(" ".join([node.name, *node.lines])) if node.kind == "network" else (_label(node))
        )
        return f"{indent}{ids[node.id]} [label={label}, {_SHAPES[node.kind]}{colour}];"

    clustered = {m for c in graph.clusters for m in c.members}
    for node in graph.nodes:
        if node.id not in clustered:
            out.append(node_line(node, "  "))
    for i, cluster in enumerate(graph.clusters):
        out.append(f"  subgraph cluster_{i} {{")
        out.append(f'    label={quote(cluster.label)}; style="dashed";')
        for member in cluster.members:
            out.append(node_line(graph.node(member), "    "))
        out.append("  }")
    for edge in graph.edges:
        # The interface alone on the line (its addresses are in its router's label, and
        # long edge labels are what make graphviz's pictures of a large lab unreadable);
        # the addresses again in the tooltip.
        extra = f", tooltip={quote(' '.join(edge.addresses))}" if edge.addresses else ""
        extra += ", style=dashed" if edge.kind == "bmc" else ""
        out.append(
            f"  {ids[edge.source]} -- {ids[edge.target]} [label={quote(edge.label)}{extra}];"
        )
    out.append("}")
    return "\n".join(out) + "\n"


__all__ = ["quote", "render"]
