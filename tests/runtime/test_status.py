"""The VDC status computed from what the agent observes: phases, conditions, events, size."""

from __future__ import annotations

import json
from pathlib import Path

from tests.spec.test_cr import quickstart
from vdc_runtime.agent.report import observe
from vdc_runtime.agent.status import NodeObservation, RunObservation, agent_status, transitions
from vdc_runtime.datacenter import DataCenterRun, RunOptions
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.status import STATUS_BUDGET, size
from vdc_runtime.runner import RunnerPhase

T0 = 1_790_000_000.0


def node(name: str, state: str = "running", power: str = "On", ready: bool = True,
         **kw: object) -> NodeObservation:  # fmt: skip
    return NodeObservation(name, state, power, ready, started_at=T0, **kw)  # type: ignore[arg-type]


def run_obs(*nodes: NodeObservation, phase: str = "running", **kw: object) -> RunObservation:
    base = {"generation": 2, "accel": "tcg", "accel_reason": "no vmx/svm flag",
            "fabric_ready": True, "pod": "vdc-q", "networks": 2, "namespaces": 1}  # fmt: skip
    base.update(kw)
    return RunObservation(phase=phase, nodes=nodes, **base)  # type: ignore[arg-type]


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_all_ready_is_running() -> None:
    status = agent_status(run_obs(node("a"), node("b", bmc_address="10.0.0.5")), now=T0)
    assert status["phase"] == "Running" and status["ready"] == "2/2"
    assert status["accel"] == "TCG" and status["observedGeneration"] == 2
    assert conditions(status) == {
        "NetworkReady": ("True", "FabricBuilt"),
        "NodesReady": ("True", "AllNodesReady"),
        "Accelerated": ("False", "TCG"),
        "Ready": ("True", "Running"),
    }
    assert status["nodes"][1] == {"name": "b", "power": "On", "phase": "Ready",
                                  "startTime": "2026-09-21T14:13:20Z", "restarts": 0,
                                  "bmcAddress": "10.0.0.5"}  # fmt: skip


def test_booting_failed_building_and_kvm() -> None:
    booting = agent_status(run_obs(node("a"), node("b", ready=False)))
    assert booting["phase"] == "Provisioning" and booting["ready"] == "1/2"
    assert conditions(booting)["NodesReady"] == ("False", "NodesBooting")
    assert "waiting for b" in booting["message"]
    broken = agent_status(run_obs(node("a"), node("b", state="failed", power="Unknown")))
    assert broken["phase"] == "Degraded"
    assert broken["nodes"][1]["phase"] == "Failed" and broken["nodes"][1]["power"] == "Unknown"
    building = agent_status(run_obs(node("a", state="pending", power="Unknown", ready=False),
                                    phase="building", fabric_ready=False, accel=None))  # fmt: skip
    assert building["phase"] == "Provisioning"
    assert conditions(building)["NetworkReady"] == ("False", "Building")
    assert conditions(building)["Accelerated"] == ("Unknown", "NotProbed")
    failed = agent_status(run_obs(phase="failed", failure="boom", fabric_ready=False))
    assert failed["phase"] == "Failed" and failed["message"] == "boom"
    kvm = agent_status(run_obs(node("a"), accel="kvm", accel_reason="vmx"))
    assert conditions(kvm)["Accelerated"] == ("True", "KVM") and kvm["accel"] == "KVM"
    off = agent_status(run_obs(node("a", power="Off", ready=False)))
    assert off["nodes"][0]["phase"] == "Off" and off["phase"] == "Provisioning"


def test_transition_time_moves_only_with_the_status() -> None:
    first = agent_status(run_obs(node("a", ready=False)), now=T0)
    later = agent_status(run_obs(node("a", ready=False)), first["conditions"], now=T0 + 60)
    assert later == first
    ready = agent_status(run_obs(node("a")), later["conditions"], now=T0 + 120)
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times["NodesReady"] == "2026-09-21T14:15:20Z"
    assert times["NetworkReady"] == "2026-09-21T14:13:20Z"


def test_events_for_transitions() -> None:
    before = agent_status(run_obs(node("a", ready=False), node("b", ready=False)))
    after = agent_status(run_obs(node("a"), node("b", state="restarting", restarts=1)))
    events = transitions(before, after)
    assert [(e.reason, e.type) for e in events] == [
        ("NodeReady", "Normal"),
        ("NodeRestarting", "Warning"),
        ("Degraded", "Warning"),
    ]
    assert events[1].message == "node b: restarting (restart 1)"
    assert transitions(after, after) == []
    first = transitions(None, before)
    assert [e.reason for e in first] == ["NodeBooting", "NodeBooting", "Provisioning"]


def test_a_node_started_again_between_two_reports_has_its_own_event() -> None:
    # An adopting agent starts a machine whose QEMU ended while no agent watched: the
    # status never shows it Restarting, only its restarts going up.
    before = agent_status(run_obs(node("a"), node("b")))
    same_phase = agent_status(run_obs(node("a"), node("b", restarts=1)))
    events = transitions(before, same_phase)
    assert [(e.reason, e.type, e.message) for e in events] == [
        ("NodeRestarted", "Warning", "node b: started again (restart 1)")
    ]
    booting = agent_status(run_obs(node("a"), node("b", ready=False, restarts=1)))
    (event, *_) = transitions(before, booting)
    assert (event.reason, event.message) == (
        "NodeBooting", "node b: booting (started again: restart 1)"
    )  # fmt: skip
    assert transitions(same_phase, same_phase) == []


def test_status_of_500_nodes_stays_small() -> None:
    long_name = "rack{:02d}-" + "x" * 50 + "-{:04d}"
    nodes = [
        node(long_name.format(i // 40, i), bmc_address=f"fd00:72:16::{i:x}", restarts=3)
        for i in range(500)
    ]
    assert all(len(n.name) == 62 for n in nodes)
    status = agent_status(run_obs(*nodes, failure="x" * 5000))
    assert size(status) < STATUS_BUDGET, size(status)
    assert len(status["message"]) <= 1024
    assert json.loads(json.dumps(status)) == status


def test_observe_a_run_before_its_machines_exist(tmp_path: Path) -> None:
    dc = cr.load(quickstart()["spec"])
    run = DataCenterRun(dc, RunOptions(run_dir=tmp_path / "run"))
    obs = observe(run, generation=4, pod="vdc-quickstart")
    assert obs.phase == "pending" and obs.generation == 4 and not obs.fabric_ready
    assert [(n.name, n.state) for n in obs.nodes] == [("worker-1", "pending"),
                                                       ("worker-2", "pending")]  # fmt: skip
    status = agent_status(obs)
    assert status["phase"] == "Provisioning" and status["ready"] == "0/2"
    assert {n["phase"] for n in status["nodes"]} == {"Pending"}
    bad = observe(None, generation=4, pod="p", failure="invalid spec: x")
    assert agent_status(bad)["phase"] == "Failed"


def test_runners_in_the_status_and_their_events() -> None:
    from vdc_runtime.agent.status import RunnerObservation

    waiting = RunnerObservation("runner-0", RunnerPhase.LISTENING)
    busy = RunnerObservation("runner-0", RunnerPhase.BUSY, job="reboot-test")
    done = RunnerObservation("runner-0", RunnerPhase.FINISHED, job="reboot-test", result="failed",
                             ended_at=T0 + 5)  # fmt: skip
    first = agent_status(run_obs(node("a"), runners=(waiting,)), now=T0)
    assert first["runners"] == [{"name": "runner-0", "phase": "Listening"}]
    assert "jobEndedAt" not in first
    second = agent_status(run_obs(node("a"), runners=(busy,)), first["conditions"], now=T0)
    third = agent_status(run_obs(node("a"), runners=(done,), keep_until=T0 + 7200),
                         second["conditions"], now=T0)  # fmt: skip
    ended = "2026-09-21T14:13:25Z"
    expected = {"name": "runner-0", "phase": "Finished", "job": "reboot-test"}
    assert third["runners"][0] == expected | {"result": "failed", "endedAt": ended}
    assert third["jobEndedAt"] == "2026-09-21T14:13:25Z"
    assert third["keepUntil"] == "2026-09-21T16:13:20Z"
    assert [(e.reason, e.type) for e in transitions(first, second)] == [("JobStarted", "Normal")]
    assert [(e.reason, e.type) for e in transitions(second, third)] == [
        ("RunnerFinished", "Warning")]  # fmt: skip
    assert "runners" not in agent_status(run_obs(node("a")))
