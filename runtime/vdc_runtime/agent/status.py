"""The status the agent writes, computed from what it observes of its run (pure), and the
events for what changed between two statuses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from vdc_runtime.nodes.states import MachineState, Power
from vdc_runtime.phases import RunPhase
from vdc_runtime.resource.status import (
    ACCELERATED,
    NETWORK_READY,
    NODES_READY,
    READY,
    ConditionStatus,
    DesiredCondition,
    FaultStatus,
    NodePhase,
    NodeStatus,
    Phase,
    PublishedBMCs,
    RunnerStatus,
    VirtualDataCenterStatus,
    _short,
    conditions_update,
    timestamp,
)
from vdc_runtime.runner import RunnerPhase


@dataclass(frozen=True)
class NodeObservation:
    name: str
    state: MachineState
    power: Power
    ready: bool
    """Whether the guest met its readiness rule since its latest boot."""
    started_at: float | None = None
    restarts: int = 0
    bmc_address: str | None = None


@dataclass(frozen=True)
class RunnerObservation:
    """A runner's state file (written by `vdc runner`)."""

    name: str
    phase: RunnerPhase
    job: str | None = None
    result: str | None = None
    ended_at: float | None = None


@dataclass(frozen=True)
class FaultObservation:
    id: int
    kind: str
    summary: str
    declared: bool
    expires_at: float | None = None


@dataclass(frozen=True)
class RunObservation:
    phase: RunPhase
    generation: int
    failure: str | None = None
    accel: str | None = None
    accel_reason: str | None = None
    fabric_ready: bool = False
    nodes: tuple[NodeObservation, ...] = ()
    pod: str | None = None
    networks: int = 0
    namespaces: int = 0
    bmc_published: tuple[str | None, int, int] | None = None
    """(host, first IPMI port, first Redfish port) when the BMCs are published."""
    bmc_secret: str | None = None
    """The Secret with the BMCs' generated account, when the spec names none."""
    runners: tuple[RunnerObservation, ...] = ()
    keep_until: float | None = None
    faults: tuple[FaultObservation, ...] = ()


def node_phase(node: NodeObservation) -> NodePhase:
    match node.state:
        case MachineState.PENDING:
            return NodePhase.PENDING
        case MachineState.STARTING:
            return NodePhase.STARTING
        case MachineState.RESTARTING:
            return NodePhase.RESTARTING
        case MachineState.FAILED:
            return NodePhase.FAILED
        case MachineState.STOPPED:
            return NodePhase.OFF
    if node.power == Power.OFF:
        return NodePhase.OFF
    if node.power != Power.ON:
        return NodePhase.FAILED
    return NodePhase.READY if node.ready else NodePhase.BOOTING


def node_status(node: NodeObservation) -> NodeStatus:
    return NodeStatus(
        name=node.name,
        power=node.power if node.power in (Power.ON, Power.OFF) else Power.UNKNOWN,
        phase=node_phase(node),
        start_time=timestamp(node.started_at) if node.started_at else None,
        restarts=node.restarts,
        bmc_address=node.bmc_address,
    )


def _names(nodes: Iterable[NodeStatus], limit: int = 5) -> str:
    names = [n.name for n in nodes]
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def agent_status(
    obs: RunObservation, previous: Sequence[Mapping[str, Any]] = (), now: float | None = None
) -> dict[str, Any]:
    """The status the agent writes for what it observes (a JSON merge patch body's
    `status`); `previous` is the conditions the object has now."""
    nodes = [node_status(n) for n in obs.nodes]
    ready = [n for n in nodes if n.phase == NodePhase.READY]
    broken = [n for n in nodes if n.phase in (NodePhase.FAILED, NodePhase.RESTARTING)]
    waiting = [n for n in nodes if n not in ready and n not in broken]
    total = len(nodes)

    phase: Phase
    if obs.phase == RunPhase.FAILED:
        phase, message = Phase.FAILED, obs.failure or "the data center failed"
    elif obs.phase in (RunPhase.STOPPING, RunPhase.STOPPED):
        phase, message = Phase.TERMINATING, "the data center is being removed"
    elif obs.phase in (RunPhase.PENDING, RunPhase.BUILDING):
        phase, message = Phase.PROVISIONING, "building the data center"
    elif broken:
        phase, message = Phase.DEGRADED, f"nodes not running: {_names(broken)}"
    elif waiting:
        phase, message = (
            Phase.PROVISIONING,
            f"{len(ready)}/{total} nodes ready; waiting for {_names(waiting)}",
        )
    else:
        phase, message = Phase.RUNNING, f"{total} nodes ready" if total else "running (no nodes)"

    desired = [
        _network_condition(obs),
        _nodes_condition(obs, nodes, ready, broken, waiting),
        _accel_condition(obs),
        DesiredCondition(
            READY, "True" if phase == Phase.RUNNING else "False", phase, _short(message)
        ),
    ]
    accel = {"kvm": "KVM", "tcg": "TCG"}.get(obs.accel or "")
    status = VirtualDataCenterStatus(
        phase=phase,
        message=_short(message),
        observed_generation=obs.generation,
        conditions=conditions_update(desired, previous, obs.generation, now),
        ready=f"{len(ready)}/{total}",
        ready_nodes=len(ready),
        total_nodes=total,
        accel=accel,  # type: ignore[arg-type]
        pod=obs.pod,
        bmc=_bmc_status(obs),
        runners=[
            RunnerStatus(
                name=r.name,
                phase=r.phase,
                job=r.job,
                result=r.result,
                ended_at=timestamp(r.ended_at) if r.ended_at else None,
            )
            for r in obs.runners
        ],
        job_ended_at=_jobs_ended(obs.runners),
        keep_until=timestamp(obs.keep_until) if obs.keep_until else None,
        nodes=nodes,
        faults=[_fault_status(f) for f in obs.faults],
    )
    return status.model_dump(exclude_none=True, exclude={"runners"} if not obs.runners else None)


def _fault_status(fault: FaultObservation) -> FaultStatus:
    expires = timestamp(fault.expires_at) if fault.expires_at else None
    return FaultStatus(id=fault.id, kind=fault.kind, summary=fault.summary,
                       declared=fault.declared, expires_at=expires)  # fmt: skip


GROUP_KEYS = (
    "phase", "message", "observedGeneration", "readyNodes", "totalNodes", "accel",
    "conditions", "nodes", "faults",
)  # fmt: skip
"""What a group's agent reports of its part (`GroupStatus`)."""
JOB_KEYS = ("runners", "jobEndedAt", "keepUntil")
"""Only the first group has runners: their fields stay where the operator reads them."""


def group_status(status: Mapping[str, Any], group: str) -> dict[str, Any]:
    """The merge patch body's `status` for a group's agent: its own key of `groups` (no
    other agent writes there, so no write undoes another), and the runners' fields."""
    out: dict[str, Any] = {"groups": {group: {k: status[k] for k in GROUP_KEYS if k in status}}}
    out.update({k: status[k] for k in JOB_KEYS if k in status})
    return out


def _bmc_status(obs: RunObservation) -> PublishedBMCs | None:
    if obs.bmc_published is None and obs.bmc_secret is None:
        return None
    host, ipmi, redfish = obs.bmc_published or (None, None, None)
    return PublishedBMCs(host=host, ipmi_port=ipmi, redfish_port=redfish,
                         secret_name=obs.bmc_secret)  # fmt: skip


def _jobs_ended(runners: Sequence[RunnerObservation]) -> str | None:
    """When the last runner ended, once every runner has."""
    if not runners or any(r.ended_at is None for r in runners):
        return None
    return timestamp(max(r.ended_at for r in runners if r.ended_at is not None))


def _network_condition(obs: RunObservation) -> DesiredCondition:
    if obs.fabric_ready:
        what = f"{obs.networks} networks, {obs.namespaces} namespaces"
        return DesiredCondition(NETWORK_READY, "True", "FabricBuilt", what)
    if obs.phase == RunPhase.FAILED:
        return DesiredCondition(NETWORK_READY, "False", "Failed", _short(obs.failure or ""))
    return DesiredCondition(
        NETWORK_READY, "False", "Building", "creating bridges, veths and namespaces"
    )


def _nodes_condition(
    obs: RunObservation,
    nodes: list[NodeStatus],
    ready: list[NodeStatus],
    broken: list[NodeStatus],
    waiting: list[NodeStatus],
) -> DesiredCondition:
    counts = f"{len(ready)}/{len(nodes)} ready"
    if nodes and len(ready) == len(nodes):
        return DesiredCondition(NODES_READY, "True", "AllNodesReady", counts)
    if not nodes:
        status: ConditionStatus = "True" if obs.phase == RunPhase.RUNNING else "False"
        return DesiredCondition(NODES_READY, status, "NoNodes", "the data center has no nodes")
    if broken:
        return DesiredCondition(
            NODES_READY, "False", "NodesFailed", f"{counts}; not running: {_names(broken)}"
        )
    return DesiredCondition(
        NODES_READY, "False", "NodesBooting", f"{counts}; waiting for {_names(waiting)}"
    )


def _accel_condition(obs: RunObservation) -> DesiredCondition:
    reason = _short(obs.accel_reason or "")
    if obs.accel == "kvm":
        return DesiredCondition(ACCELERATED, "True", "KVM", reason)
    if obs.accel == "tcg":
        return DesiredCondition(ACCELERATED, "False", "TCG", reason)
    return DesiredCondition(
        ACCELERATED, "Unknown", "NotProbed", "acceleration is probed when machines start"
    )


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


_NODE_EVENTS: dict[str, tuple[str, Literal["Normal", "Warning"]]] = {
    NodePhase.BOOTING: ("NodeBooting", "Normal"),
    NodePhase.READY: ("NodeReady", "Normal"),
    NodePhase.OFF: ("NodePoweredOff", "Normal"),
    NodePhase.RESTARTING: ("NodeRestarting", "Warning"),
    NodePhase.FAILED: ("NodeFailed", "Warning"),
}

_RUNNER_EVENTS: dict[str, str] = {
    RunnerPhase.LISTENING: "RunnerListening",
    RunnerPhase.BUSY: "JobStarted",
    RunnerPhase.FINISHED: "RunnerFinished",
    RunnerPhase.FAILED: "RunnerFailed",
}

_PHASE_EVENTS: dict[str, Literal["Normal", "Warning"]] = {
    Phase.PROVISIONING: "Normal",
    Phase.RUNNING: "Normal",
    Phase.DEGRADED: "Warning",
    Phase.FAILED: "Warning",
    Phase.TERMINATING: "Normal",
}


def transitions(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Event]:
    """Events for what changed between two statuses: the VDC's phase and each node's."""
    before = before or {}
    events = []
    old_nodes = {n["name"]: n for n in before.get("nodes", [])}
    for node in after.get("nodes", []):
        old = old_nodes.get(node["name"], {})
        restarted = bool(old) and node.get("restarts", 0) > old.get("restarts", 0)
        if old.get("phase") == node["phase"] or node["phase"] not in _NODE_EVENTS:
            if restarted:
                # Started again between two reports (as an adopting agent does with a
                # machine whose QEMU ended while no agent watched): never seen Restarting.
                events.append(Event("NodeRestarted", f"node {node['name']}: started again"
                                    f" (restart {node['restarts']})", "Warning"))  # fmt: skip
            continue
        reason, kind = _NODE_EVENTS[node["phase"]]
        detail = f" (restart {node['restarts']})" if node["phase"] == NodePhase.RESTARTING else ""
        if restarted and node["phase"] != NodePhase.RESTARTING:
            detail = f" (started again: restart {node['restarts']})"
        events.append(Event(reason, f"node {node['name']}: {node['phase'].lower()}{detail}", kind))
    old_runners = {r["name"]: r for r in before.get("runners", [])}
    for runner in after.get("runners", []):
        old = old_runners.get(runner["name"], {})
        phase = runner["phase"]
        if old.get("phase") == phase or phase not in _RUNNER_EVENTS:
            continue
        detail = f" {runner['job']}" if runner.get("job") else ""
        if runner.get("result"):
            detail += f": {runner['result']}"
        failed = phase == RunnerPhase.FAILED or runner.get("result") == "failed"
        events.append(Event(_RUNNER_EVENTS[phase], f"runner {runner['name']}{detail}",
                            "Warning" if failed else "Normal"))  # fmt: skip
    phase = after.get("phase")
    if phase and phase != before.get("phase") and phase in _PHASE_EVENTS:
        events.append(Event(phase, after.get("message") or phase, _PHASE_EVENTS[phase]))
    return events


__all__ = [
    "Event",
    "NodeObservation",
    "RunObservation",
    "RunnerObservation",
    "agent_status",
    "node_phase",
    "node_status",
    "transitions",
]
