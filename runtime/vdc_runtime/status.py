"""A VirtualDataCenter's status: its models (which give the CRD its status schema) and the
pure functions that compute it from what the agent observes of its run.

The agent in the VDC's pod owns the status while it runs; the operator writes it only
around the pod's life (Pending before the agent starts, Failed when the pod cannot run,
Terminating on deletion). Both go through `conditions_update`, so a condition's
lastTransitionTime moves only when its status does.

Kept small on purpose: etcd refuses objects over 1.5 MiB and every watcher of VDCs gets
the whole object on each change, so a node is one short entry (see STATUS_BUDGET).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vdc_runtime.nodes.states import MachineState, Power
from vdc_runtime.phases import RunPhase
from vdc_runtime.runner import RunnerPhase
from vdc_runtime.spec.cr import camel


class Phase(StrEnum):
    """A VirtualDataCenter's phase, as `kubectl get vdc` shows it."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    TERMINATING = "Terminating"


class NodePhase(StrEnum):
    """A node's phase in the status."""

    PENDING = "Pending"
    STARTING = "Starting"
    BOOTING = "Booting"
    READY = "Ready"
    OFF = "Off"
    RESTARTING = "Restarting"
    FAILED = "Failed"


ConditionStatus = Literal["True", "False", "Unknown"]

READY, NETWORK_READY, NODES_READY, ACCELERATED = (
    "Ready",
    "NetworkReady",
    "NodesReady",
    "Accelerated",
)
CONDITION_TYPES = (READY, NETWORK_READY, NODES_READY, ACCELERATED)
"""The conditions the agent writes; others (RunnersRegistered) are the operator's."""
RUNNERS_REGISTERED = "RunnersRegistered"

STATUS_BUDGET = 100 * 1024
"""Bytes of status JSON a VDC of 500 nodes with long names must stay under."""
MESSAGE_MAX = 1024


class StatusModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=camel, validate_by_name=True, serialize_by_alias=True, extra="forbid"
    )


class Condition(StatusModel):
    """As Kubernetes' metav1.Condition."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class NodeStatus(StatusModel):
    """One machine, compact: a VDC may have hundreds."""

    name: str
    power: Power
    phase: NodePhase
    start_time: str | None = Field(default=None, description="When its QEMU last started.")
    restarts: int = Field(default=0, description="Restarts of its QEMU (restart: on-failure).")
    bmc_address: str | None = None


class RunnerStatus(StatusModel):
    """A runner container of the pod, as its `vdc runner` wrapper recorded it."""

    name: str
    phase: RunnerPhase
    job: str | None = None
    result: str | None = Field(default=None, description="succeeded, failed or cancelled.")
    ended_at: str | None = None


class PublishedBMCs(StatusModel):
    """Where the BMCs answer on the pod's address: the i-th node of the spec (from 0) on
    UDP ipmiPort + i and HTTPS redfishPort + i."""

    host: str | None = None
    ipmi_port: int
    redfish_port: int


class VirtualDataCenterStatus(StatusModel):
    """What the VDC's agent and the operator observe."""

    phase: Phase | None = None
    message: str | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = []
    ready: str | None = Field(default=None, description="Ready nodes / all nodes, as 2/3.")
    ready_nodes: int | None = None
    total_nodes: int | None = None
    accel: Literal["KVM", "TCG"] | None = Field(
        default=None, description="How the machines run: KVM, or TCG (software emulation)."
    )
    pod: str | None = Field(default=None, description="The pod that runs the data center.")
    bmc: PublishedBMCs | None = None
    runner_label: str | None = Field(
        default=None, description="The label only this VDC's runners have (runs-on)."
    )
    runners_registered: int | None = None
    runners: list[RunnerStatus] = []
    job_ended_at: str | None = Field(default=None, description="When the last runner's job ended.")
    keep_until: str | None = Field(
        default=None, description="Asked by a job (`vdc keep`): not deleted before then."
    )
    delete_at: str | None = Field(
        default=None, description="When the operator deletes this VDC, its jobs done."
    )
    nodes: list[NodeStatus] = []


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# -- what the agent observes ---------------------------------------------------------------


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
    runners: tuple[RunnerObservation, ...] = ()
    keep_until: float | None = None


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


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


@dataclass
class _Desired:
    """A condition before its transition time is known."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


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
        _Desired(READY, "True" if phase == Phase.RUNNING else "False", phase, _short(message)),
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
        bmc=PublishedBMCs(
            host=obs.bmc_published[0],
            ipmi_port=obs.bmc_published[1],
            redfish_port=obs.bmc_published[2],
        )
        if obs.bmc_published
        else None,
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
    )
    return status.model_dump(exclude_none=True, exclude={"runners"} if not obs.runners else None)


def _jobs_ended(runners: Sequence[RunnerObservation]) -> str | None:
    """When the last runner ended, once every runner has."""
    if not runners or any(r.ended_at is None for r in runners):
        return None
    return timestamp(max(r.ended_at for r in runners if r.ended_at is not None))


def _network_condition(obs: RunObservation) -> _Desired:
    if obs.fabric_ready:
        what = f"{obs.networks} networks, {obs.namespaces} namespaces"
        return _Desired(NETWORK_READY, "True", "FabricBuilt", what)
    if obs.phase == RunPhase.FAILED:
        return _Desired(NETWORK_READY, "False", "Failed", _short(obs.failure or ""))
    return _Desired(NETWORK_READY, "False", "Building", "creating bridges, veths and namespaces")


def _nodes_condition(
    obs: RunObservation,
    nodes: list[NodeStatus],
    ready: list[NodeStatus],
    broken: list[NodeStatus],
    waiting: list[NodeStatus],
) -> _Desired:
    counts = f"{len(ready)}/{len(nodes)} ready"
    if nodes and len(ready) == len(nodes):
        return _Desired(NODES_READY, "True", "AllNodesReady", counts)
    if not nodes:
        status: ConditionStatus = "True" if obs.phase == RunPhase.RUNNING else "False"
        return _Desired(NODES_READY, status, "NoNodes", "the data center has no nodes")
    if broken:
        return _Desired(
            NODES_READY, "False", "NodesFailed", f"{counts}; not running: {_names(broken)}"
        )
    return _Desired(
        NODES_READY, "False", "NodesBooting", f"{counts}; waiting for {_names(waiting)}"
    )


def _accel_condition(obs: RunObservation) -> _Desired:
    reason = _short(obs.accel_reason or "")
    if obs.accel == "kvm":
        return _Desired(ACCELERATED, "True", "KVM", reason)
    if obs.accel == "tcg":
        return _Desired(ACCELERATED, "False", "TCG", reason)
    return _Desired(
        ACCELERATED, "Unknown", "NotProbed", "acceleration is probed when machines start"
    )


def conditions_update(
    desired: Iterable[_Desired],
    previous: Sequence[Mapping[str, Any]],
    generation: int | None,
    now: float | None = None,
) -> list[Condition]:
    """Conditions with lastTransitionTime kept from `previous` unless the status changed."""
    before = {c.get("type"): c for c in previous}
    out = []
    for want in desired:
        old = before.get(want.type)
        changed = old is None or old.get("status") != want.status
        since = (
            timestamp(now) if changed or not old else old.get("lastTransitionTime", timestamp(now))
        )
        out.append(
            Condition(
                type=want.type,
                status=want.status,
                reason=want.reason,
                message=want.message,
                last_transition_time=since,
                observed_generation=generation,
            )
        )
    return out


def condition(type_: str, status: ConditionStatus, reason: str, message: str = "") -> _Desired:
    """A condition to pass to `conditions_update`."""
    return _Desired(type_, status, reason, _short(message))


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
        if old.get("phase") == node["phase"] or node["phase"] not in _NODE_EVENTS:
            continue
        reason, kind = _NODE_EVENTS[node["phase"]]
        detail = f" (restart {node['restarts']})" if node["phase"] == NodePhase.RESTARTING else ""
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


def size(status: Mapping[str, Any]) -> int:
    """Bytes of the status as the API server stores it (compact JSON)."""
    return len(json.dumps(status, separators=(",", ":")).encode())


__all__ = [
    "ACCELERATED",
    "CONDITION_TYPES",
    "NETWORK_READY",
    "NODES_READY",
    "READY",
    "RUNNERS_REGISTERED",
    "STATUS_BUDGET",
    "Condition",
    "Event",
    "NodeObservation",
    "NodeStatus",
    "RunObservation",
    "RunnerObservation",
    "RunnerStatus",
    "VirtualDataCenterStatus",
    "agent_status",
    "condition",
    "conditions_update",
    "node_status",
    "size",
    "timestamp",
    "transitions",
]
