"""Automatic groups (`placement.groups: auto`): the operator packs the machines into pods
under a per-pod limit, each pod's agent builds the part the operator assigned it, and
`kubectl vdc` finds a node's pod. The packing itself is in tests/runtime/test_packing.py."""

from __future__ import annotations

import argparse
import copy
import json
from typing import Any

import pytest

from tests.operator.test_builders import NOW, assert_golden, vdc
from vdc_operator import admission, builders, plugin
from vdc_operator.specs import PlacedSpecs
from vdc_runtime import groups
from vdc_runtime.agent.main import with_groups
from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import SpecErrors

RACKS = {"a": ["8G", "12G", "8G"], "b": ["8G", "8G", "14G"], "c": ["10G", "10G", "8G"],
         "d": ["15G", "8G", "8G"]}  # fmt: skip
"""Each rack fits a 32 GiB pod with the default overheads; no two racks do."""


def racks(**placement: Any) -> dict[str, Any]:
    """Four racks of three machines (8-15 GiB), listed as specs often list them (a1, b1,
    c1, d1, a2, ...), each rack behind a top-of-rack router on the shared core."""
    body = vdc()
    networks = [{"name": "core", "type": "internal"}]
    networks += [{"name": f"rack-{r}", "type": "internal"} for r in RACKS]
    body["spec"] = {
        "networks": networks,
        "networkNamespaces": [
            {"name": f"tor-{r}", "interfaces": [
                {"network": "core", "addresses": [f"10.0.0.{i + 1}/24"]},
                {"network": f"rack-{r}", "addresses": [f"10.1.{i}.1/24"]}]}
            for i, r in enumerate(RACKS)
        ],
        "nodes": [
            {"name": f"{r}{i + 1}", "cpu": 2, "memory": sizes[i],
             "interfaces": [{"network": f"rack-{r}"}, {"network": "core"}]}
            for i in range(3) for r, sizes in RACKS.items()
        ],
        "placement": {"groups": "auto", **placement},
    }  # fmt: skip
    return body


def placed(body: dict[str, Any], settings: builders.Settings) -> cr.VirtualDataCenterSpec:
    return builders.placed(cr.validate(body["spec"]), settings)


def pods(body: dict[str, Any], settings: builders.Settings | None = None) -> list[dict[str, Any]]:
    settings = settings or builders.Settings()
    return builders.build_pods(body, placed(body, settings), settings)


def env(pod: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}


def groups_of(built: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Each pod's group and nodes, from what the operator put into the pods."""
    assignment = json.loads(env(built[0])[builders.ENV_ASSIGNMENT])
    return {group: members["nodes"] for group, members in assignment.items()}


def test_an_auto_vdc_gets_as_few_pods_as_fit_its_limit() -> None:
    built = pods(racks(podLimit={"memory": "32Gi"}))
    assert [p["metadata"]["name"] for p in built] == [
        f"vdc-quickstart-auto-{i}" for i in range(1, 5)]  # fmt: skip
    # Rack mates together: only the core is stretched between the pods.
    assert groups_of(built) == {
        "auto-1": ["a1", "a2", "a3"], "auto-2": ["b1", "b2", "b3"],
        "auto-3": ["c1", "c2", "c3"], "auto-4": ["d1", "d2", "d3"]}  # fmt: skip
    for i, pod in enumerate(built, 1):
        agent = pod["spec"]["containers"][0]
        assert agent["args"] == ["agent", "--group", f"auto-{i}"]
        assert pod["metadata"]["labels"]["vdc.dev/group"] == f"auto-{i}"
        requested = builders.pod_requests(pod)
        assert cr.quantity(requested["memory"]) <= 32 << 30, requested
        # Every pod has the whole assignment: its agent derives its peers from it.
        assert env(pod)[builders.ENV_ASSIGNMENT] == env(built[0])[builders.ENV_ASSIGNMENT]
    # The pod of rack b: 8 + 8 + 14 GiB, 3 x 64 MiB of QEMU, 192 MiB of agent.
    assert builders.pod_requests(built[1]) == {
        "cpu": "700m", "memory": f"{30 * 1024 + 3 * 64 + 192}Mi"}  # fmt: skip
    assert_golden("auto-pod-auto-2", built[1])


def test_an_auto_vdc_that_fits_one_pod_keeps_its_one_pod() -> None:
    body = vdc(placement={"groups": "auto", "podLimit": {"memory": "8Gi", "cpu": "2"}})
    settings = builders.Settings()
    spec = placed(body, settings)
    assert builders.pod_groups(spec) == (None,)
    (pod,) = builders.build_pods(body, spec, settings)
    manual = builders.build_pod(vdc(), cr.parse(vdc()["spec"]), settings)
    assert pod["metadata"]["name"] == "vdc-quickstart"
    assert builders.ENV_ASSIGNMENT not in env(pod)
    # The same pod as without placement but for the spec's hash.
    for p in (pod, manual):
        del p["metadata"]["annotations"][builders.ANNOTATION_HASH]
    assert pod == manual


def test_the_limit_is_the_helm_values_unless_the_spec_gives_it() -> None:
    helm = builders.Settings.from_env({"VDC_POD_LIMIT_MEMORY": "32Gi", "VDC_POD_LIMIT_CPU": "8"})
    assert (helm.pod_limit_memory, helm.pod_limit_cpu) == ("32Gi", "8")
    assert len(pods(racks(), helm)) == 4
    # The spec's key replaces the operator's; the other key still holds.
    assert len(pods(racks(podLimit={"memory": "64Gi"}), helm)) == 2
    tight_cpu = builders.Settings(pod_limit_cpu="1", pod_limit_memory="64Gi")
    # 100m + 2 vCPUs / 10 = 300m per machine alone: at most 4 machines under 1 CPU.
    assert len(pods(racks(), tight_cpu)) == 3
    limit = builders.pod_limit(cr.parse(racks(podLimit={"cpu": "1500m"})["spec"]), helm)
    assert (limit.memory, limit.milli) == (32 << 30, 1500)
    with pytest.raises(ValueError, match="VDC_POD_LIMIT_MEMORY='32GB' is not a resource"):
        builders.Settings.from_env({"VDC_POD_LIMIT_MEMORY": "32GB"})


def _refusal(body: dict[str, Any], settings: builders.Settings) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        placed(body, settings)
    return [str(e) for e in info.value.errors]


def test_what_cannot_be_placed_is_refused_where_to_change_it() -> None:
    assert _refusal(racks(), builders.Settings()) == [
        "spec.placement.podLimit: groups: auto needs a per-pod limit: give it here, or the"
        " operator a default (Helm value runtime.podLimit)"
    ]
    huge = racks(podLimit={"memory": "32Gi"})
    huge["spec"]["nodes"].insert(5, {"name": "huge", "cpu": 4, "memory": "40G"})
    assert _refusal(huge, builders.Settings()) == [
        "spec.nodes[5]: node 'huge' needs memory 41216Mi, cpu 500m in a pod of its own, more"
        " than the per-pod limit (memory 32Gi): it can never be scheduled"
    ]
    # The admission webhook says it at `kubectl apply`, with the operator's settings.
    created = {"operation": "CREATE", "object": racks()}
    refused = admission.refusal(created, PlacedSpecs(builders.Settings()))
    assert refused is not None and refused.startswith("spec.placement.podLimit: groups: auto")
    helm = PlacedSpecs(builders.Settings(pod_limit_memory="32Gi"))
    assert admission.refusal(created, helm) is None


def test_the_pod_hash_follows_the_assignment() -> None:
    body = racks()

    def hashes(memory: str) -> set[str]:
        built = pods(body, builders.Settings(pod_limit_memory=memory))
        return {p["metadata"]["annotations"][builders.ANNOTATION_HASH] for p in built}

    (at_32,) = hashes("32Gi")
    # A limit that packs the same way leaves the pods alone; one that moves machines
    # replaces them, though the pods keep their names.
    assert hashes("33Gi") == {at_32}
    assert at_32 not in hashes("40Gi")
    assert len(pods(body, builders.Settings(pod_limit_memory="40Gi"))) == 4


def test_each_agent_builds_the_part_the_operator_assigned() -> None:
    body = racks(podLimit={"memory": "32Gi"})
    for pod in pods(body):
        group = pod["spec"]["containers"][0]["args"][-1]
        # What `vdc agent` does with its pod's args and env and the VDC's spec.
        dc = with_groups(cr.load(body["spec"]), env(pod)[builders.ENV_ASSIGNMENT], group)
        part = groups.part(dc, group)
        rack = "abcd"[int(group.removeprefix("auto-")) - 1]
        assert [n.name for n in part.nodes] == [f"{rack}1", f"{rack}2", f"{rack}3"]
        assert [ns.name for ns in part.netns] == [f"tor-{rack}"]
        assert [n.name for n in part.networks] == ["core", f"rack-{rack}"]
        layout = groups.layout(dc)
        assert [s.network for s in layout.stretched] == ["core"]
        assert len(layout.peers(group)) == 3
    # A pod made for an earlier spec says so instead of building something else.
    assignment = env(pods(body)[0])[builders.ENV_ASSIGNMENT]
    smaller = copy.deepcopy(body)
    del smaller["spec"]["nodes"][0]
    with pytest.raises(ValueError, match=r"does not fit the spec: no node\(s\) a1 in the spec"):
        with_groups(cr.load(smaller["spec"]), assignment, "auto-1")
    with pytest.raises(ValueError, match="the spec has no group auto-2"):
        with_groups(cr.load(body["spec"]), None, "auto-2")


def reported(body: dict[str, Any]) -> dict[str, Any]:
    """The status the operator merges once every group's agent reported its rack."""
    body = {**body, "status": {"groups": {
        f"auto-{i}": {"phase": "Running", "readyNodes": 3, "totalNodes": 3,
                      "nodes": [{"name": f"{r}{j}", "power": "On", "phase": "Ready",
                                 "restarts": 0} for j in (1, 2, 3)]}
        for i, r in enumerate("abcd", 1)}}}  # fmt: skip
    merged = builders.merged_status(body, placed(body, builders.Settings()), NOW)
    assert merged is not None
    return merged


def test_the_whole_status_follows_the_auto_groups() -> None:
    merged = reported(racks(podLimit={"memory": "32Gi"}))
    assert (merged["phase"], merged["ready"], merged["readyGroups"]) == ("Running", "12/12", "4/4")
    assert {n["name"]: n["group"] for n in merged["nodes"]}["c2"] == "auto-3"


def _plugin_args(monkeypatch: pytest.MonkeyPatch, body: dict[str, Any]) -> argparse.Namespace:
    monkeypatch.setenv("KUBECTL", "kubectl")
    asked: list[list[str]] = []

    def run(argv: list[str]) -> str:
        asked.append(argv)
        return json.dumps(body)

    monkeypatch.setattr(plugin, "_run", run)
    return argparse.Namespace(vdc="quickstart", namespace="lab", context=None, kubeconfig=None)


def test_kubectl_vdc_finds_a_nodes_pod_by_the_group_its_status_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = racks(podLimit={"memory": "32Gi"})
    body["status"] = reported(body)
    args = _plugin_args(monkeypatch, body)
    assert plugin.pod_for(args, "c2") == "vdc-quickstart-auto-3"
    assert plugin.pod_for(args) == "vdc-quickstart-auto-1"  # exec: where the runners are
    pods_, _ = plugin.layout(args)
    assert list(pods_.values()) == [f"vdc-quickstart-auto-{i}" for i in range(1, 5)]
    with pytest.raises(plugin.PluginError, match="has no node nowhere"):
        plugin.pod_for(args, "nowhere")

    # Its pods exist but no agent reported yet: say so rather than guess.
    body["status"] = {"groups": {"auto-1": {"pod": "vdc-quickstart-auto-1"}}}
    with pytest.raises(plugin.PluginError, match="automatic groups are not known yet"):
        plugin.pod_for(_plugin_args(monkeypatch, body), "c2")
    # An auto VDC in one pod: its agent reports nodes without a group.
    one = vdc(placement={"groups": "auto", "podLimit": {"memory": "8Gi"}})
    one["status"] = {"nodes": [{"name": "worker-1"}, {"name": "worker-2"}]}
    assert plugin.pod_for(_plugin_args(monkeypatch, one), "worker-2") == "vdc-quickstart"
