"""The operator's pure builders: goldens of every child object, and the pod-status rules."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.spec.test_cr import quickstart
from vdc_operator import builders
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.status import VirtualDataCenterStatus

GOLDEN = Path(__file__).parent / "golden"
NOW = 1_790_000_000.0


def vdc(**spec_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(quickstart())
    body["metadata"].update(namespace="lab", uid="0b5d6a43-1111-2222-3333-444455556666",
                            generation=3, resourceVersion="812")  # fmt: skip
    body["spec"].update(spec_changes)
    return body


def assert_golden(name: str, manifest: Any) -> None:
    text = yaml.safe_dump(manifest, sort_keys=False, width=100)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


def pod_of(body: dict[str, Any], settings: builders.Settings | None = None) -> dict[str, Any]:
    return builders.build_pod(body, cr.parse(body["spec"]), settings or builders.Settings())


def test_quickstart_children() -> None:
    body = vdc()
    assert_golden("quickstart-pod", pod_of(body))
    assert_golden("quickstart-serviceaccount", builders.build_service_account(body))
    assert_golden("quickstart-role", builders.build_role(body))
    assert_golden("quickstart-rolebinding", builders.build_role_binding(body))


def test_pod_with_every_setting() -> None:
    body = vdc(
        pod={
            "image": "registry.example.com/vdc-runtime:1.2",
            "nodeSelector": {"kvm": "true"},
            "tolerations": [{"key": "lab", "operator": "Exists", "effect": "NoSchedule",
                             "tolerationSeconds": 30}],
            "priorityClassName": "ci-high",
            "imageCache": {"persistentVolumeClaim": {"claimName": "vdc-images"}},
            "resources": {"memory": "4Gi"},
        },
        bmc={"users": [{"name": "admin", "password": "x"}], "tls": {"secretName": "bmc-tls"}},
    )  # fmt: skip
    settings = builders.Settings(
        kvm_resource="devices.kubevirt.io/kvm", tun_resource="devices.kubevirt.io/tun"
    )
    assert_golden("every-setting-pod", pod_of(body, settings))


def test_requests_follow_the_nodes() -> None:
    spec = cr.parse(vdc()["spec"])
    settings = builders.Settings()
    # 2 vCPUs at ratio 10 + 100m; 2 x (256 + 64) MiB + 192 MiB.
    assert builders.requests(spec, settings) == {"cpu": "300m", "memory": "832Mi"}
    ratio_one = builders.Settings(cpu_allocation_ratio=1)
    assert builders.requests(spec, ratio_one)["cpu"] == "2100m"


def test_the_holder_runs_the_machines_and_the_agent_only_itself() -> None:
    settings = builders.Settings(kvm_resource="devices.kubevirt.io/kvm")
    pod = pod_of(vdc(), settings)
    agent, holder = pod["spec"]["containers"]
    assert holder["name"] == builders.HOLDER_CONTAINER
    assert holder["args"] == ["holder", "--socket", builders.HOLDER_SOCKET]
    assert {"name": "VDC_HOLDER_SOCKET", "value": builders.HOLDER_SOCKET} in agent["env"]
    # The agent stops and adopts the holder's processes by pid.
    assert pod["spec"]["shareProcessNamespace"] is True
    # QEMU's paths are the same in both, and so is the socket's directory.
    assert holder["volumeMounts"] == agent["volumeMounts"]
    assert builders.HOLDER_SOCKET.startswith(builders.RUN_DIR + "/")
    # The agent requests its own overhead, the holder its QEMUs' and their devices.
    assert agent["resources"] == {"requests": {"cpu": "100m", "memory": "192Mi"}}
    assert holder["resources"] == {
        "requests": {"cpu": "200m", "memory": "640Mi", "devices.kubevirt.io/kvm": "1"},
        "limits": {"devices.kubevirt.io/kvm": "1"},
    }
    assert builders.pod_requests(pod) == builders.requests(cr.parse(vdc()["spec"]), settings)
    # A restart of the holder would kill the machines: nothing may restart it on a whim.
    assert not {"livenessProbe", "startupProbe", "readinessProbe"} & holder.keys()


def test_requests_split_even_when_the_spec_asks_for_less_than_the_agent_needs() -> None:
    settings = builders.Settings()
    agent, holder = builders.split_requests({"cpu": "50m", "memory": "100Mi"}, settings)
    assert agent == {"cpu": "50m", "memory": "100Mi"}
    assert holder == {"cpu": "0m", "memory": "0Mi"}
    agent, holder = builders.split_requests({"cpu": "4", "memory": "8Gi"}, settings)
    assert agent == {"cpu": "100m", "memory": "192Mi"}
    assert holder == {"cpu": "3900m", "memory": f"{8 * 1024 - 192}Mi"}


def test_cache_volume_kinds() -> None:
    host = pod_of(vdc(pod={"imageCache": {"hostPath": {"path": "/var/lib/vdc-images"}}}))
    cache = next(v for v in host["spec"]["volumes"] if v["name"] == "image-cache")
    host_path = {"path": "/var/lib/vdc-images", "type": "DirectoryOrCreate"}
    assert cache == {"name": "image-cache", "hostPath": host_path}
    sized = pod_of(vdc(pod={"imageCache": {"emptyDir": {"sizeLimit": "20Gi"}}}))
    cache = next(v for v in sized["spec"]["volumes"] if v["name"] == "image-cache")
    assert cache == {"name": "image-cache", "emptyDir": {"sizeLimit": "20Gi"}}


def test_hash_follows_the_spec_and_the_image_only() -> None:
    body = vdc()
    settings = builders.Settings()
    first = builders.pod_hash(body, settings)
    body["metadata"]["generation"] = 9
    body["status"] = {"phase": "Running"}
    assert builders.pod_hash(body, settings) == first
    body["spec"]["nodes"][0]["memory"] = "512M"
    assert builders.pod_hash(body, settings) != first
    assert builders.pod_hash(vdc(), builders.Settings(runtime_image="other:1")) != first


def test_role_is_limited_to_its_own_vdc() -> None:
    rules = builders.build_role(vdc())["rules"]
    own = [r for r in rules if r["apiGroups"] == ["vdc.dev"]]
    vdcs = [r for r in own if r["resources"][0].split("/")[0] == "virtualdatacenters"]
    assert all(r["resourceNames"] == ["quickstart"] for r in vdcs)
    assert {v for r in own for v in r["verbs"]} == {"get", "list", "watch", "patch"}
    assert not any("update" in r["verbs"] or "delete" in r["verbs"] for r in rules)
    # Snapshots are read, and only their status written.
    snaps = {r["resources"][0]: r["verbs"] for r in own if r not in vdcs}
    assert snaps == {
        "virtualdatacentersnapshots": ["get", "list", "watch"],
        "virtualdatacentersnapshots/status": ["get", "patch"],
    }


def test_settings_from_env() -> None:
    settings = builders.Settings.from_env(
        {"VDC_RUNTIME_IMAGE": "x:1", "VDC_CPU_ALLOCATION_RATIO": "4", "VDC_KVM_RESOURCE": "r/kvm"}
    )
    assert (settings.runtime_image, settings.cpu_allocation_ratio, settings.kvm_resource) == (
        "x:1", 4.0, "r/kvm")  # fmt: skip
    with pytest.raises(ValueError, match="VDC_MEMORY_OVERHEAD_MIB='lots' is not a int"):
        builders.Settings.from_env({"VDC_MEMORY_OVERHEAD_MIB": "lots"})


# -- what the operator says about the pod --------------------------------------------------------


def pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "vdc-quickstart"}, "status": {"phase": phase, **status}}


def agent(state: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"name": "agent", "state": state, **more}


@pytest.mark.parametrize(
    ("the_pod", "phase", "reason"),
    [
        (None, "Pending", "PodCreating"),
        (pod("Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                     "reason": "Unschedulable", "message": "0/1 nodes"}]),
         "Pending", "Unschedulable"),
        (pod("Pending", containerStatuses=[agent({"waiting": {"reason": "ErrImagePull"}})]),
         "Pending", "ErrImagePull"),
        (pod("Pending"), "Pending", "PodStarting"),
        (pod("Failed", message="evicted"), "Failed", "PodFailed"),
        (pod("Running", containerStatuses=[agent(
            {"waiting": {"reason": "CrashLoopBackOff"}},
            lastState={"terminated": {"exitCode": 1, "message": "boom"}})]),
         "Failed", "CrashLoopBackOff"),
    ],
)  # fmt: skip
def test_pod_status(the_pod: dict[str, Any] | None, phase: str, reason: str) -> None:
    status = builders.pod_status(vdc(), the_pod, now=NOW)
    assert status is not None
    assert (status["phase"], status["observedGeneration"]) == (phase, 3)
    (ready,) = [c for c in status["conditions"] if c["type"] == "Ready"]
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert ready["lastTransitionTime"] == "2026-09-21T14:13:20Z"


def test_running_agent_owns_the_status() -> None:
    running = pod("Running", containerStatuses=[agent({"running": {}})])
    assert builders.pod_status(vdc(), running) is None
    # Once the agent has reported, a pod that says nothing of its agent yet is not the
    # operator's to tell (its agent restarting is: see below).
    body = vdc()
    body["status"] = {"phase": "Running"}
    assert builders.pod_status(body, pod("Pending")) is None


def test_deleted_vdc_is_terminating_and_transition_time_is_kept() -> None:
    body = vdc()
    body["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
    body["status"] = {"conditions": [{"type": "Ready", "status": "False", "reason": "X",
                                      "lastTransitionTime": "2026-01-01T00:00:00Z"}]}  # fmt: skip
    status = builders.pod_status(body, None, now=NOW)
    assert status is not None and status["phase"] == "Terminating"
    assert status["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"


# -- the agent's restarts ------------------------------------------------------------------------

OOM = {"terminated": {"reason": "OOMKilled", "exitCode": 137,
                      "finishedAt": "2026-09-21T14:10:00Z"}}  # fmt: skip


def restarted(state: dict[str, Any], count: int = 1, **more: Any) -> dict[str, Any]:
    """The pod as the kubelet shows it after its agent container restarted."""
    return pod("Running", containerStatuses=[agent(state, restartCount=count, **more)])


def running_vdc(**status: Any) -> dict[str, Any]:
    body = vdc()
    body["status"] = {"phase": "Running", "pod": "vdc-quickstart", **status}
    return body


@pytest.mark.parametrize(
    ("the_pod", "message"),
    [
        (restarted({"waiting": {"reason": "ContainerCreating"}}, lastState=OOM),
         "the agent is restarting (last exit: OOMKilled, exit code 137)"),
        # Killed and not started again yet: its current state says how it ended.
        (restarted({"terminated": {"reason": "Error", "exitCode": 137, "signal": 9}}, 0),
         "the agent is restarting (last exit: Error, exit code 137, signal 9)"),
        (restarted({"waiting": {"reason": "CreateContainerError", "message": "no space"}},
                   lastState=OOM),
         "the agent is restarting (last exit: OOMKilled, exit code 137; CreateContainerError:"
         " no space)"),
        (restarted({"waiting": {"reason": "PodInitializing"}}),
         "the agent is restarting"),
    ],
)  # fmt: skip
def test_a_running_vdc_is_degraded_while_its_agent_restarts(
    the_pod: dict[str, Any], message: str
) -> None:
    for reported in ("Running", "Degraded"):
        assert builders.pod_verdict(the_pod, reported) == ("Degraded", "AgentRestarting", message)


def test_the_agent_restarting_status_and_event() -> None:
    body = running_vdc(agentRestarts=1)
    the_pod = restarted({"waiting": {"reason": "ContainerCreating"}}, 2, lastState=OOM)
    change = builders.pod_change(body, the_pod, now=NOW)
    # As JSON: what the API server gets (the phase is an enum).
    assert_golden("agent-restarting-change", json.loads(json.dumps(dataclasses.asdict(change))))
    # What the operator writes is what the CRD's schema keeps (it prunes unknown keys).
    assert change.status is not None
    typed = VirtualDataCenterStatus.model_validate(change.status)
    assert typed.model_dump(exclude_unset=True) == change.status


def test_only_the_agent_reports_once_its_container_runs() -> None:
    # Running again but not ready yet (its probes): the new agent's report stands, even
    # when this event comes after it.
    back = restarted({"running": {}}, lastState=OOM, ready=False)
    assert builders.pod_verdict(back, "Running") is None
    assert builders.pod_verdict(back, "Degraded") is None
    # Still building: Provisioning says it, and the new agent will.
    gone = restarted({"waiting": {"reason": "ContainerCreating"}}, lastState=OOM)
    assert builders.pod_verdict(gone, "Provisioning") is None
    # A crash loop stays a failure, whatever ran before.
    looping = restarted({"waiting": {"reason": "CrashLoopBackOff"}}, 5, lastState=OOM)
    assert builders.pod_verdict(looping, "Running") == (
        "Failed", "CrashLoopBackOff", "the agent keeps exiting: exit code 137")  # fmt: skip


def test_each_restart_of_the_agent_is_announced_once() -> None:
    body = running_vdc()
    first = restarted({"running": {}}, 0)
    # The first count seen is recorded, announcing nothing.
    assert builders.pod_change(body, first) == builders.PodChange({"agentRestarts": 0})
    body["status"]["agentRestarts"] = 0
    assert builders.pod_change(body, first) == builders.PodChange(None)

    again = restarted({"running": {}}, 2, lastState=OOM)
    change = builders.pod_change(body, again)
    assert change.status == {"agentRestarts": 2}
    assert change.events == (builders.VdcEvent(
        "Warning", "AgentRestarted", "agent of pod vdc-quickstart restarted (restart 2); it had"
        " exited: OOMKilled, exit code 137, at 2026-09-21T14:10:00Z"),)  # fmt: skip
    # Written with its count: the same pod's next event (or after an operator restart)
    # announces nothing more.
    body["status"]["agentRestarts"] = 2
    assert builders.pod_change(body, again) == builders.PodChange(None)


def test_the_restart_count_follows_the_pod() -> None:
    body = running_vdc(agentRestarts=3)
    # The pod goes: its count with it.
    going = restarted({"running": {}}, 3)
    going["metadata"]["deletionTimestamp"] = "2026-09-21T14:00:00Z"
    change = builders.pod_change(body, going, now=NOW)
    assert change.status is not None and change.status["agentRestarts"] is None
    assert change.status["phase"] == "Pending" and not change.events
    gone = builders.pod_change(body, None, now=NOW)
    assert gone.status is not None and gone.status["agentRestarts"] is None
    # A new pod the operator did not see replace the old one starts from 0 again.
    new = builders.pod_change(body, restarted({"running": {}}, 0))
    assert new == builders.PodChange({"agentRestarts": 0})
    # A pod without its container's status yet keeps the count.
    assert builders.pod_change(body, pod("Running")) == builders.PodChange(None)


def test_the_status_of_a_created_pod_is_what_its_first_event_would_write() -> None:
    body = vdc()
    spec = cr.parse(body["spec"])
    made = pod_of(body)
    status = builders.created_status(body, spec, {None: made}, NOW)
    assert status == builders.pod_status(body, pod("Pending"), NOW)
    assert status is not None and status["phase"] == "Pending"
    body["status"] = status
    added = {**made, "status": {"phase": "Pending", "qosClass": "Burstable"}}
    first = builders.pod_change(body, added, NOW).status or {}
    assert all(status.get(k) == v for k, v in first.items())  # nothing new to write
    # What a pod's event wrote first (the scheduler's word) stays.
    unschedulable = pod("Pending", conditions=[{"type": "PodScheduled", "status": "False",
                                                "reason": "Unschedulable"}])  # fmt: skip
    body["status"] = builders.pod_status(body, unschedulable, NOW)
    assert builders.created_status(body, spec, {None: made}, NOW) is None
    # The operator's own word before the pod existed does not.
    body["status"] = builders.status_patch(body, "Pending", "PodReplacing", "replacing", NOW)  # type: ignore[arg-type]
    assert builders.created_status(body, spec, {None: made}, NOW) == status
