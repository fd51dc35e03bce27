"""`kubectl vdc graph`: a VirtualDataCenter drawn from its spec as `vdc graph` draws the
same data center's Placemat file, its machines coloured by the phases its status reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.operator.test_auto_groups import racks, reported
from vdc_operator import builders, plugin
from vdc_runtime.graph import model, render, topology
from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import load_files

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def quickstart_vdc() -> dict[str, Any]:
    docs = yaml.safe_load_all((EXAMPLES / "vdc-quickstart.yaml").read_text())
    return next(d for d in docs if d["kind"] == "VirtualDataCenter")


def test_a_vdc_is_drawn_as_its_placemat_file_with_its_states() -> None:
    vdc = quickstart_vdc()
    nodes = [{"name": "worker-1", "phase": "Ready", "power": "On"},
             {"name": "worker-2", "phase": "Booting", "power": "On"}]  # fmt: skip
    vdc["status"] = {"nodes": nodes}
    graph = plugin.vdc_graph("quickstart", vdc)
    same = topology.build(
        load_files([EXAMPLES / "quickstart.yml"]), "quickstart",
        {"worker-1": "ready", "worker-2": "booting"},
    )  # fmt: skip
    assert graph == same
    # Without a status (not reconciled yet): the spec alone.
    del vdc["status"]
    assert all(n.state is None for n in plugin.vdc_graph("quickstart", vdc).nodes)


def test_kubectl_vdc_graph_reads_the_vdc_through_kubectl(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECTL", "kubectl")
    asked: list[list[str]] = []

    def run(argv: list[str]) -> str:
        asked.append(argv)
        return json.dumps(quickstart_vdc())

    monkeypatch.setattr(plugin, "_run", run)
    out = tmp_path / "q.svg"
    assert plugin.main(["graph", "-n", "lab", "quickstart", "-o", str(out)]) == 0
    assert asked == [["kubectl", "--namespace=lab", "get", "virtualdatacenters.vdc.dev",
                      "quickstart", "-o", "json"]]  # fmt: skip
    assert out.read_text() == render(plugin.vdc_graph("quickstart", quickstart_vdc()), "svg")
    assert plugin.main(["graph", "quickstart", "--format", "json"]) == 0
    drawn = model.from_json(json.loads(capsys.readouterr().out))
    assert [n.name for n in drawn.of_kind("machine")] == ["worker-1", "worker-2"]


def test_a_vdc_whose_spec_is_wrong_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    vdc = quickstart_vdc()
    vdc["spec"]["nodes"][0]["interfaces"] = [{"network": "nowhere"}]
    monkeypatch.setenv("KUBECTL", "kubectl")
    monkeypatch.setattr(plugin, "_run", lambda argv: json.dumps(vdc))
    assert plugin.main(["graph", "quickstart"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kubectl vdc: quickstart's spec cannot be drawn: spec.nodes[0]")
    assert "nowhere" in err


def test_automatic_groups_are_drawn_where_the_status_reports_them() -> None:
    body = racks(podLimit={"memory": "32Gi"})
    body["status"] = reported(body)
    graph = plugin.vdc_graph("quickstart", body)
    # The operator's own packing: each rack's machines and its router in one pod.
    spec = builders.placed(cr.validate(body["spec"]), builders.Settings())
    members = {m.name: m.group for m in [*spec.nodes, *spec.network_namespaces]}
    assert [c.label for c in graph.clusters] == [f"group auto-{i}" for i in (1, 2, 3, 4)]
    for cluster in graph.clusters:
        for member in cluster.members:
            assert f"group {members[graph.node(member).name]}" == cluster.label
    assert {n.state for n in graph.of_kind("machine")} == {"ready"}
    # Before every agent reported: one picture, no groups guessed.
    body["status"] = {"nodes": [{"name": "a1", "group": "auto-1", "phase": "Ready"}]}
    assert plugin.vdc_graph("quickstart", body).clusters == ()
