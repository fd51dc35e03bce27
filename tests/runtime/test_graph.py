"""`vdc graph`: the topology built from a spec (pure), its four formats golden-tested on the
quick start, the SVG layout checked on a neco-sized lab, names that mean something to a
format kept as text, and the command itself."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from itertools import combinations
from pathlib import Path

import pytest

from tests.prereqs import require
from tests.runtime.conftest import write
from tests.runtime.test_fabric_plan import assert_golden
from vdc_runtime.graph import FORMATS, layout, model, render, topology
from vdc_runtime.graph.layout import PAD, text_width
from vdc_runtime.graph.model import Cluster, Edge, Graph, GraphError, Node
from vdc_runtime.spec import load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SVG = "{http://www.w3.org/2000/svg}"
SUFFIX = {"svg": "svg", "dot": "dot", "mermaid": "mmd", "json": "json"}


def quickstart(states: dict[str, str] | None = None) -> Graph:
    return topology.build(load_files([EXAMPLES / "quickstart.yml"]), "quickstart", states)


def neco() -> Graph:
    return topology.build(load_files([EXAMPLES / "neco.yml"]), "neco")


@pytest.mark.parametrize("fmt", FORMATS)
def test_quickstart_golden(fmt: str) -> None:
    assert_golden(f"graph/quickstart.{SUFFIX[fmt]}", render(quickstart(), fmt))


def test_neco_svg_golden() -> None:
    # Also the sample of what a lab of neco's size looks like.
    assert_golden("graph/neco.svg", render(neco(), "svg"))


def test_quickstart_topology() -> None:
    graph = quickstart()
    assert [(n.kind, n.name) for n in graph.nodes] == [
        ("network", "pxe-net"), ("network", "bmc"), ("router", "boot-server"),
        ("machine", "worker-1"), ("machine", "worker-2"),
    ]  # fmt: skip
    assert graph.node("netns/boot-server").lines == ("eth0 pxe-net 10.72.48.1/24 fd72:48::1/64",)
    assert [(e.source, e.target, e.label, e.kind) for e in graph.edges_of("node/worker-1")] == [
        ("node/worker-1", "network/pxe-net", "nic0", "nic"),
        ("node/worker-1", "network/bmc", "bmc", "bmc"),
    ]
    assert graph.clusters == ()  # one group: nothing to box


def test_neco_groups_are_clusters_and_stretched_networks_say_so() -> None:
    graph = neco()
    assert len(graph.of_kind("network")) == 32
    assert len(graph.of_kind("router")) == 13
    assert len(graph.of_kind("machine")) == 12
    assert [(c.label, len(c.members)) for c in graph.clusters] == [
        ("group pod-1", 9 + 6),
        ("group pod-2", 4 + 6),
    ]
    assert graph.node("network/s0-to-r2-1").lines == ("internal", "stretched: pod-1, pod-2")
    assert graph.node("network/r0-node1").lines == ("internal",)  # pod-1's alone
    assert graph.node("node/rack3-cs2").group == "pod-2"
    assert "BMC 10.72.17.17 on bmc" in graph.node("node/rack3-cs2").lines


def test_states_colour_the_machines_in_every_format() -> None:
    graph = quickstart({"worker-1": "ready", "worker-2": "failed"})
    ready, failed = model.STATE_COLOURS["ready"], model.STATE_COLOURS["failed"]
    root = ET.fromstring(render(graph, "svg"))
    fills = {
        g.find(f"{SVG}text").text: g.find(f"{SVG}rect").get("fill")
        for g in root.iter(f"{SVG}g") if g.get("class") == "machine"
    }  # fmt: skip
    assert fills == {"worker-1 [ready]": ready, "worker-2 [failed]": failed}
    legend = [t.text for t in root.iter(f"{SVG}text")][-2:]
    assert legend == ["ready", "failed"]
    dot = render(graph, "dot")
    assert f'fillcolor="{ready}"' in dot and f'fillcolor="{failed}"' in dot
    mermaid = render(graph, "mermaid").splitlines()
    assert f"  classDef st_ready fill:{ready}" in mermaid
    assert "  class n3 st_ready" in mermaid and "  class n4 st_failed" in mermaid
    assert model.from_json(json.loads(render(graph, "json"))) == graph


def test_neco_svg_layout_has_no_overlaps_and_reads_as_a_bus() -> None:
    graph = neco()
    root = ET.fromstring(render(graph, "svg"))  # well-formed XML
    assert root.tag == f"{SVG}svg"
    plan = layout.layout(graph)
    assert (len(plan.buses), len(plan.boxes), len(plan.bands)) == (32, 25, 2)
    assert int(root.get("width")) == plan.width and int(root.get("height")) == plan.height
    for a, b in combinations(plan.boxes, 2):
        assert not a.rect.overlaps(b.rect), (a.node.name, b.node.name)
    for a, b in combinations(plan.bands, 2):
        assert not a.rect.overlaps(b.rect)
    top_bus, bottom_bus = min(b.y for b in plan.buses), max(b.y for b in plan.buses)
    left = min(b.x0 for b in plan.buses)
    for box in plan.boxes:
        r = box.rect
        assert r.x >= left and r.right <= plan.width and r.bottom <= plan.height
        # Routers above every bus, machines below: no bus runs through a box.
        assert r.bottom < top_bus if box.node.kind == "router" else r.y > bottom_bus
        for line in (box.heading, *box.node.lines):
            assert text_width(line) + 2 * PAD <= r.w, line
        band = [b for b in plan.bands if box.node.id in b.cluster.members]
        assert len(band) == 1 and _inside(r, band[0].rect), box.node.name
    # Bus labels stay left of every wire and box.
    assert all(text_width(b.label) + 2 * PAD < left for b in plan.buses)
    # One wire per edge, each on its own x, from its box's edge to its network's bus.
    assert len(plan.wires) == len(graph.edges)
    assert len({w.x for w in plan.wires}) == len(plan.wires)
    boxes = {b.node.id: b.rect for b in plan.boxes}
    buses = {b.node.id: b.y for b in plan.buses}
    for wire in plan.wires:
        r = boxes[wire.edge.source]
        assert r.x < wire.x < r.right
        assert wire.y1 == buses[wire.edge.target]
        assert wire.y0 == (r.bottom if graph.node(wire.edge.source).kind == "router" else r.y)


def _inside(inner: layout.Rect, outer: layout.Rect) -> bool:
    return (outer.x <= inner.x and inner.right <= outer.right
            and outer.y <= inner.y and inner.bottom <= outer.bottom)  # fmt: skip


def _dot_nodes(text: str) -> list[str]:
    """Each node's text as graphviz itself draws it from DOT text (fails if it does not
    parse), its lines joined by line breaks."""
    done = subprocess.run([str(require.dot()), "-Tsvg"], input=text, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    drawn = ET.fromstring(done.stdout)
    return [
        "\n".join(t.text or "" for t in g.iter(f"{SVG}text"))
        for g in drawn.iter(f"{SVG}g") if g.get("class") == "node"
    ]  # fmt: skip


def test_dot_parses_with_graphviz() -> None:
    for graph in (quickstart({"worker-1": "ready"}), neco()):
        labels = _dot_nodes(render(graph, "dot"))
        assert len(labels) == len(graph.nodes)


HOSTILE = [
    'a"b', "x\\", "</text><script>alert(1)</script>", "&amp; <!-- -->", "l1\nl2",
    '"]; evil [label="pwn', "n0 --- n1", "end", "a|b]}{{c", "#35;", "ctl\x01\x1f",
]  # fmt: skip


def hostile_graph() -> Graph:
    nodes = [Node("network/" + name, "network", name, (name,)) for name in HOSTILE]
    nodes += [Node("netns/" + name, "router", name, (name,), "g" + name) for name in HOSTILE]
    nodes += [Node("node/" + name, "machine", name, (name,), "g" + name, name) for name in HOSTILE]
    edges = [
        Edge(f"{kind}/{name}", "network/" + name, name, "nic", (name,))
        for kind in ("netns", "node") for name in HOSTILE
    ]  # fmt: skip
    clusters = [Cluster("group/" + n, n, ("netns/" + n, "node/" + n)) for n in HOSTILE]
    return Graph('ti"tle</svg>', tuple(nodes), tuple(edges), tuple(clusters))


def test_hostile_names_stay_text_in_svg() -> None:
    graph = hostile_graph()
    root = ET.fromstring(render(graph, "svg"))
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    safe = [name.replace("\x01", "\ufffd").replace("\x1f", "\ufffd") for name in HOSTILE]
    for name in safe:
        # In a box (name and detail line) and as a network's label.
        assert texts.count(name) >= 2, name
        assert f"{name} [{name}]" in texts
    assert not list(root.iter(f"{SVG}script"))
    assert texts[0] == 'ti"tle</svg>'


def test_hostile_names_stay_text_in_dot() -> None:
    graph = hostile_graph()
    labels = _dot_nodes(render(graph, "dot"))
    assert len(labels) == len(graph.nodes)  # nothing injected, nothing lost
    assert "x\\ x\\" in labels  # a backslash stays one backslash
    assert "l1\nl2\nl1\nl2" in labels  # a line break stays one (graphviz's own)
    assert f"{HOSTILE[5]}\n{HOSTILE[5]}" in labels


def _mermaid_text(label: str) -> str:
    return re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), label)


def test_hostile_names_stay_text_in_mermaid() -> None:
    graph = hostile_graph()
    lines = render(graph, "mermaid").splitlines()
    # One line per node, edge, cluster opening and end, plus the header: nothing injected.
    header = lines.index("flowchart TB")
    body = lines[header + 1 :]
    shapes = [line for line in body if re.match(r"\s+n\d+(\[|\{\{)", line)]
    assert len(shapes) == len(graph.nodes)
    links = [line for line in body if re.match(r"\s+n\d+ (---|-\.-)\|", line)]
    assert len(links) == len(graph.edges)
    for line in shapes + links:
        labels = re.findall(r'"([^"]*)"', line)
        assert labels, line
        for part in (p for label in labels for p in label.split("<br>")):
            assert not set(part) & set('|<>{}[]\n"'), part
    names = {_mermaid_text(re.findall(r'"([^"]*)"', s)[0]).split("<br>")[0] for s in shapes}
    assert names >= set(HOSTILE)
    assert lines[1] == 'title: "ti\\"tle</svg>"'  # front matter: one JSON (YAML) string


def test_json_round_trip_and_errors() -> None:
    graph = hostile_graph()
    assert model.from_json(json.loads(render(graph, "json"))) == graph
    data = model.to_json(quickstart())
    data["edges"][0]["target"] = "network/nowhere"
    with pytest.raises(GraphError, match=r"graph\.edges\[0\]\.target: no node 'network/nowhere'"):
        model.from_json(data)
    data = model.to_json(quickstart())
    data["nodes"][1]["kind"] = "switch"
    with pytest.raises(GraphError, match=r"graph\.nodes\[1\]\.kind: 'switch' is not one of"):
        model.from_json(data)
    with pytest.raises(GraphError, match=r"graph\.nodes: expected a list"):
        model.from_json({"title": "x", "nodes": {}, "edges": [], "clusters": []})


VDC = [sys.executable, "-m", "vdc_runtime.cli"]


def vdc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VDC, *args], capture_output=True, text=True, timeout=60)


def test_cli_draws_a_spec_file(tmp_path: Path) -> None:
    out = tmp_path / "quickstart.svg"
    done = vdc("graph", str(EXAMPLES / "quickstart.yml"), "--title", "quickstart", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == (Path(__file__).parent / "golden/graph/quickstart.svg").read_text()
    done = vdc("graph", "--format", "mermaid", str(EXAMPLES / "neco.yml"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('---\ntitle: "neco.yml"\n---\nflowchart TB\n')
    assert '  subgraph g1["group pod-2"]' in done.stdout
    done = vdc("graph", "--format", "json", str(EXAMPLES / "quickstart.yml"))
    assert model.from_json(json.loads(done.stdout)).title == "quickstart.yml"


def test_cli_refuses_bad_input_and_says_why(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yml", "kind: Node\nname: n1\ninterfaces: [missing]\n")
    done = vdc("graph", str(bad), "-o", str(tmp_path / "out.svg"))
    assert done.returncode == 1
    assert """document 1 (Node "n1"): interfaces[0]: no Network named 'missing'""" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.svg").exists()
    done = vdc("graph")
    assert done.returncode == 2 and "give spec FILEs or --endpoint URL" in done.stderr
    done = vdc("graph", str(bad), "--endpoint", "http://127.0.0.1:1")
    assert done.returncode == 2
    done = vdc("graph", "--format", "png", str(bad))
    assert done.returncode == 2 and "invalid choice: 'png'" in done.stderr
    # Nothing listens there (a port no one binds): said in one line.
    done = vdc("graph", "--endpoint", "http://127.0.0.1:1")
    assert done.returncode == 1 and "cannot reach vdc at http://127.0.0.1:1" in done.stderr
