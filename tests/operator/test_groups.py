"""A VDC of several groups: a pod per group, each group's status, the whole one merged."""

from __future__ import annotations

import copy
from typing import Any

from tests.operator.test_builders import NOW, assert_golden, vdc
from vdc_operator import builders
from vdc_runtime.agent.main import peer_addresses
from vdc_runtime.agent.status import group_status
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.status import VirtualDataCenterStatus


def grouped() -> dict[str, Any]:
    """The quick start in two groups: the boot server and worker-1 in rack-a, worker-2
    (which PXE-boots from rack-a's boot server) in rack-b, on nodes of its own."""
    body = vdc(groups=[{"name": "rack-a"},
                       {"name": "rack-b", "pod": {"nodeSelector": {"rack": "b"}}}])  # fmt: skip
    body["spec"]["networkNamespaces"][0]["group"] = "rack-a"
    body["spec"]["nodes"][0]["group"] = "rack-a"
    body["spec"]["nodes"][1]["group"] = "rack-b"
    return body


def pods(body: dict[str, Any]) -> list[dict[str, Any]]:
    return builders.build_pods(body, cr.parse(body["spec"]), builders.Settings())


def test_one_pod_per_group() -> None:
    a, b = pods(grouped())
    assert [a["metadata"]["name"], b["metadata"]["name"]] == [
        "vdc-quickstart-rack-a", "vdc-quickstart-rack-b"]  # fmt: skip
    assert a["metadata"]["labels"]["vdc.dev/group"] == "rack-a"
    agent = b["spec"]["containers"][0]
    assert agent["args"] == ["agent", "--group", "rack-b"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in agent[
        "env"
    ]
    # Each pod asks for its own machines; rack-b's settings replace the VDC's.
    one = builders.requests(cr.parse(grouped()["spec"]), builders.Settings(), "rack-b")
    assert builders.pod_requests(b) == one
    assert b["spec"]["nodeSelector"] == {"rack": "b"} and "nodeSelector" not in a["spec"]
    assert b["spec"]["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert_golden("groups-pod-rack-b", b)


def test_a_vdc_in_one_group_keeps_its_one_pod() -> None:
    body = vdc()
    (pod,) = pods(body)
    assert pod == builders.build_pod(body, cr.parse(body["spec"]), builders.Settings())
    assert (
        pod["metadata"]["name"] == "vdc-quickstart"
        and "vdc.dev/group" not in pod["metadata"]["labels"]
    )
    # Everything in one declared group is still one pod: nothing to stretch.
    alone = vdc(groups=[{"name": "solo"}])
    for member in [*alone["spec"]["nodes"], *alone["spec"]["networkNamespaces"]]:
        member["group"] = "solo"
    assert [p["metadata"]["name"] for p in pods(alone)] == ["vdc-quickstart"]


def _pod(name: str, ip: str | None = None, agent_running: bool = True) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if agent_running else "Pending"}
    if ip:
        status["podIP"] = ip
    if agent_running:
        status["containerStatuses"] = [{"name": "agent", "state": {"running": {}}}]
    return {"metadata": {"name": name}, "status": status}


def test_a_groups_pod_and_address_go_under_its_own_key() -> None:
    body = grouped()
    starting = builders.group_pod_status(body, "rack-b", _pod("vdc-quickstart-rack-b",
                                                               agent_running=False))  # fmt: skip
    assert starting == {"groups": {"rack-b": {
        "pod": "vdc-quickstart-rack-b", "podIP": None, "phase": "Pending",
        "message": "the pod is starting"}}}  # fmt: skip
    body["status"] = {"groups": {"rack-b": {"pod": "vdc-quickstart-rack-b", "phase": "Running"}}}
    running = builders.group_pod_status(body, "rack-b", _pod("vdc-quickstart-rack-b", "10.244.0.9"))
    # (With the first restart count of its agent seen: see test_builders.)
    assert running == {"groups": {"rack-b": {
        "pod": "vdc-quickstart-rack-b", "podIP": "10.244.0.9", "agentRestarts": 0}}}  # fmt: skip
    # What the operator writes is what the CRD's schema keeps (it prunes unknown keys).
    typed = VirtualDataCenterStatus.model_validate(running)
    assert typed.model_dump(exclude_unset=True) == running
    body["status"]["groups"]["rack-b"].update(podIP="10.244.0.9", agentRestarts=0)
    assert builders.group_pod_status(body, "rack-b", _pod("vdc-quickstart-rack-b",
                                                          "10.244.0.9")) is None  # fmt: skip
    gone = builders.group_pod_status(body, "rack-b", None)
    assert gone == {"groups": {"rack-b": {
        "pod": None, "podIP": None, "agentRestarts": None, "phase": "Pending",
        "message": "creating the pod"}}}  # fmt: skip


def _reported(phase: str, ready: int, total: int, node: str) -> dict[str, Any]:
    return {"phase": phase, "message": f"{ready} nodes ready", "readyNodes": ready,
            "totalNodes": total, "accel": "TCG",
            "nodes": [{"name": node, "power": "On", "phase": "Ready" if ready else "Booting",
                       "restarts": 0}]}  # fmt: skip


def _merged(body: dict[str, Any]) -> dict[str, Any]:
    merged = builders.merged_status(body, cr.parse(body["spec"]), NOW)
    assert merged is not None
    return merged


def test_the_whole_status_follows_its_groups() -> None:
    body = grouped()
    body["status"] = {"groups": {"rack-a": _reported("Running", 1, 1, "worker-1")}}
    waiting = _merged(body)
    assert waiting["phase"] == "Provisioning" and waiting["readyGroups"] == "1/2"
    assert "group rack-b: no pod yet" in waiting["message"]
    body["status"]["groups"]["rack-b"] = _reported("Running", 1, 1, "worker-2")
    running = _merged(body)
    assert (running["phase"], running["ready"], running["readyGroups"]) == ("Running", "2/2", "2/2")
    assert [(n["name"], n["group"]) for n in running["nodes"]] == [
        ("worker-1", "rack-a"), ("worker-2", "rack-b")]  # fmt: skip
    ready = next(c for c in running["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and running["accel"] == "TCG"

    # rack-b's pod is lost: the VDC is Degraded until its new pod runs.
    body["status"].update(phase="Running")
    body["status"]["groups"]["rack-b"] = {"phase": "Pending", "message": "creating the pod"}
    degraded = _merged(body)
    assert degraded["phase"] == "Degraded"
    assert degraded["message"] == "group rack-b: creating the pod"
    assert degraded["ready"] == "1/2" and degraded["readyGroups"] == "1/2"

    broken = copy.deepcopy(body)
    broken["status"]["groups"]["rack-a"] = {"phase": "Failed", "message": "start-up failed: x"}
    assert _merged(broken)["phase"] == "Failed"
    # A VDC in one pod has nothing to merge.
    assert builders.merged_status(vdc(), cr.parse(vdc()["spec"]), NOW) is None


def test_an_agent_of_a_group_writes_its_own_key_and_finds_its_peers() -> None:
    status = {"phase": "Running", "message": "1 nodes ready", "ready": "1/1", "readyNodes": 1,
              "totalNodes": 1, "pod": "vdc-quickstart-rack-a", "nodes": [], "conditions": [],
              "runners": [{"name": "runner-0", "phase": "Listening"}]}  # fmt: skip
    body = group_status(status, "rack-a")
    assert body == {
        "groups": {"rack-a": {"phase": "Running", "message": "1 nodes ready", "readyNodes": 1,
                              "totalNodes": 1, "conditions": [], "nodes": []}},
        "runners": [{"name": "runner-0", "phase": "Listening"}],
    }  # fmt: skip
    assert VirtualDataCenterStatus.model_validate(body).model_dump(exclude_unset=True) == body
    vdc_ = {"status": {"groups": {"rack-a": {"podIP": "10.244.0.5"},
                                  "rack-b": {"podIP": "10.244.0.9"}, "rack-c": {}}}}  # fmt: skip
    assert peer_addresses(vdc_, "rack-a") == {"rack-b": "10.244.0.9"}


def test_a_groups_pod_event_writes_its_part_and_the_whole_at_once() -> None:
    body = grouped()
    body["status"] = {"phase": "Running",
                      "groups": {"rack-a": _reported("Running", 1, 1, "worker-1"),
                                 "rack-b": _reported("Running", 1, 1, "worker-2")}}  # fmt: skip
    spec = cr.parse(body["spec"])
    lost = builders.group_pod_and_merged_status(body, spec, "rack-b", None, NOW)
    assert lost is not None
    assert lost["groups"] == builders.group_pod_status(body, "rack-b", None)["groups"]  # type: ignore[index]
    # The whole as merged_status makes it once the group's part is written: Degraded.
    after = copy.deepcopy(body)
    after["status"]["groups"]["rack-b"].update(lost["groups"]["rack-b"])
    whole = builders.merged_status(after, spec, NOW)
    assert whole is not None and whole["phase"] == "Degraded"
    assert {k: v for k, v in lost.items() if k != "groups"} == whole
    # Nothing of the group changed: nothing to write, whatever the whole shows.
    after["status"].update(whole)
    assert builders.group_pod_and_merged_status(after, spec, "rack-b", None, NOW) is None


def test_a_groups_agent_restart_degrades_the_vdc_and_is_announced_once() -> None:
    body = grouped()
    body["status"] = {"phase": "Running",
                      "groups": {"rack-a": _reported("Running", 1, 1, "worker-1"),
                                 "rack-b": {**_reported("Running", 1, 1, "worker-2"),
                                            "pod": "vdc-quickstart-rack-b",
                                            "podIP": "10.244.0.9",
                                            "agentRestarts": 0}}}  # fmt: skip
    spec = cr.parse(body["spec"])
    the_pod = _pod("vdc-quickstart-rack-b", "10.244.0.9")
    the_pod["status"]["containerStatuses"] = [{
        "name": "agent", "state": {"waiting": {"reason": "ContainerCreating"}},
        "restartCount": 1,
        "lastState": {"terminated": {"reason": "Error", "exitCode": 137, "signal": 9}},
    }]  # fmt: skip
    change = builders.group_pod_change(body, spec, "rack-b", the_pod, NOW)
    assert change.status is not None
    message = "the agent is restarting (last exit: Error, exit code 137, signal 9)"
    assert change.status["groups"] == {"rack-b": {
        "pod": "vdc-quickstart-rack-b", "podIP": "10.244.0.9", "agentRestarts": 1,
        "phase": "Degraded", "message": message}}  # fmt: skip
    # The whole is Degraded through the group's part.
    assert change.status["phase"] == "Degraded"
    assert change.status["message"] == f"group rack-b: {message}"
    assert change.status["readyGroups"] == "1/2"
    assert change.events == (builders.VdcEvent(
        "Warning", "AgentRestarted", "agent of pod vdc-quickstart-rack-b restarted (restart 1);"
        " it had exited: Error, exit code 137, signal 9"),)  # fmt: skip
    typed = VirtualDataCenterStatus.model_validate(change.status)
    assert typed.model_dump(exclude_unset=True) == change.status

    # Written: the same pod's next event changes nothing and announces nothing more.
    after = copy.deepcopy(body)
    after["status"].update({k: v for k, v in change.status.items() if k != "groups"})
    after["status"]["groups"]["rack-b"].update(change.status["groups"]["rack-b"])
    nothing = builders.PodChange(None)
    assert builders.group_pod_change(after, spec, "rack-b", the_pod, NOW) == nothing
    # Its container runs again: the group's agent reports, not the operator.
    the_pod["status"]["containerStatuses"][0]["state"] = {"running": {}}
    assert builders.group_pod_change(after, spec, "rack-b", the_pod, NOW) == nothing
    # Its pod lost: the count goes with it.
    lost = builders.group_pod_change(after, spec, "rack-b", None, NOW)
    assert lost.status is not None and lost.status["groups"]["rack-b"]["agentRestarts"] is None
    assert not lost.events


def test_the_pods_status_is_written_with_them_and_their_first_events_write_nothing() -> None:
    body = grouped()
    spec = cr.parse(body["spec"])
    a, b = pods(body)
    status = builders.created_status(body, spec, {"rack-a": a, "rack-b": b}, NOW)
    assert status is not None
    starting = {"podIP": None, "phase": "Pending", "message": "the pod is starting"}
    assert status["groups"] == {"rack-a": {"pod": "vdc-quickstart-rack-a", **starting},
                                "rack-b": {"pod": "vdc-quickstart-rack-b", **starting}}  # fmt: skip
    assert (status["phase"], status["readyGroups"]) == ("Pending", "0/2")
    assert VirtualDataCenterStatus.model_validate(status).model_dump(exclude_unset=True) == status
    body["status"] = status
    # Each pod's first event, as the API server shows it: said already.
    for group, made in (("rack-a", a), ("rack-b", b)):
        added = {**made, "status": {"phase": "Pending", "qosClass": "Burstable"}}
        assert builders.group_pod_change(body, spec, group, added, NOW).status is None
    assert builders.created_status(body, spec, {"rack-a": a, "rack-b": b}, NOW) is None


def test_a_pods_event_that_came_first_is_not_undone_by_the_status_of_its_creation() -> None:
    body = grouped()
    spec = cr.parse(body["spec"])
    a, b = pods(body)
    unschedulable = {**b, "status": {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/1 nodes"}]}}  # fmt: skip
    body["status"] = builders.group_pod_change(body, spec, "rack-b", unschedulable, NOW).status
    status = builders.created_status(body, spec, {"rack-a": a, "rack-b": b}, NOW)
    assert status is not None and list(status["groups"]) == ["rack-a"]
    assert "0/1 nodes" in status["message"]
