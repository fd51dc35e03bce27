"""A VirtualDataCenter's status: its models (which give the CRD its status schema), its
phases and conditions, and how a condition is updated.

The agent in the VDC's pod owns the status while it runs (vdc_runtime.agent.status computes
it); the operator writes it only around the pod's life (Pending before the agent starts,
Failed when the pod cannot run, Terminating on deletion). Both go through
`conditions_update`, so a condition's lastTransitionTime moves only when its status does.

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

from pydantic import Field

from vdc_runtime.nodes.states import Power
from vdc_runtime.resource.base import ApiModel
from vdc_runtime.runner import RunnerPhase


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


class Condition(ApiModel):
    """As Kubernetes' metav1.Condition."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class NodeStatus(ApiModel):
    """One machine, compact: a VDC may have hundreds."""

    name: str
    power: Power
    phase: NodePhase
    start_time: str | None = Field(default=None, description="When its QEMU last started.")
    restarts: int = Field(default=0, description="Restarts of its QEMU (restart: on-failure).")
    bmc_address: str | None = None
    group: str | None = Field(default=None, description="Its group, in a VDC of several.")


class RunnerStatus(ApiModel):
    """A runner container of the pod, as its `vdc runner` wrapper recorded it."""

    name: str
    phase: RunnerPhase
    job: str | None = None
    result: str | None = Field(default=None, description="succeeded, failed or cancelled.")
    ended_at: str | None = None


class FaultStatus(ApiModel):
    """An active fault (`vdc fault list`), declared in spec.faults or added by hand."""

    id: int
    kind: str
    summary: str
    declared: bool = Field(default=False, description="Applied for spec.faults.")
    expires_at: str | None = None
    group: str | None = Field(default=None, description="Its pod's group, in a VDC of several.")


class PublishedBMCs(ApiModel):
    """Where the BMCs answer on the pod's address, when published: the i-th node of the
    spec (from 0) on UDP ipmiPort + i and HTTPS redfishPort + i; and the Secret with their
    account, when the operator generated it."""

    host: str | None = None
    ipmi_port: int | None = None
    redfish_port: int | None = None
    secret_name: str | None = Field(
        default=None,
        description="The Secret (keys username, password) with the BMCs' account, generated"
        " because the spec names no BMC users.",
    )


class GroupStatus(ApiModel):
    """One group of a VDC with several: its pod and its agent's restarts (written by the
    operator) and what the group's agent reports (written by that agent alone: a merge
    patch of its own key of `groups`, so agents never write over each other)."""

    pod: str | None = None
    pod_ip: str | None = Field(
        default=None,
        alias="podIP",  # as Kubernetes spells it in a pod's status
        description="Where the other groups tunnel to.",
    )
    agent_restarts: int | None = Field(
        default=None,
        description="Restarts of the group's agent container the operator has announced.",
    )
    phase: Phase | None = None
    message: str | None = None
    observed_generation: int | None = None
    ready_nodes: int | None = None
    total_nodes: int | None = None
    accel: Literal["KVM", "TCG"] | None = None
    conditions: list[Condition] = []
    nodes: list[NodeStatus] = []
    faults: list[FaultStatus] = []


class VirtualDataCenterStatus(ApiModel):
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
    agent_restarts: int | None = Field(
        default=None,
        description="Restarts of the pod's agent container the operator has announced"
        " (an AgentRestarted event each).",
    )
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
    faults: list[FaultStatus] = Field(default=[], description="Active faults.")
    groups: dict[str, GroupStatus] = Field(
        default={},
        description="Per group, in a VDC of several; the operator merges them into the rest.",
    )
    ready_groups: str | None = Field(
        default=None, description="Groups running / all groups, as 1/2, in a VDC of several."
    )


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC to the second, as Kubernetes writes times."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."


@dataclass
class DesiredCondition:
    """A condition before its transition time is known."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""


def conditions_update(
    desired: Iterable[DesiredCondition],
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


def condition(
    type_: str, status: ConditionStatus, reason: str, message: str = ""
) -> DesiredCondition:
    """A condition to pass to `conditions_update`."""
    return DesiredCondition(type_, status, reason, _short(message))


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
    "ConditionStatus",
    "DesiredCondition",
    "FaultStatus",
    "GroupStatus",
    "NodePhase",
    "NodeStatus",
    "Phase",
    "PublishedBMCs",
    "RunnerStatus",
    "VirtualDataCenterStatus",
    "condition",
    "conditions_update",
    "size",
    "timestamp",
]
