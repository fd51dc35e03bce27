"""The VirtualDataCenterSnapshot custom resource: a running VDC's machines saved into a
volume claim, from which a new VDC starts (`spec.restoreFrom`).

Who writes what: the operator checks a new snapshot (its source VDC exists and mounts the
claim) and writes `storage`, `parts` expected and phase Pending; then each of the source's
agents (one per group) saves its machines into its own directory of the claim and writes
its own key of `parts` (a merge patch, so agents never write over each other); the
operator merges the parts into the phase, size and conditions (`merged`). A pure function of
the parts, so the summary cannot disagree with them.

Where the files are: the claim is mounted at SNAPSHOTS_DIR in every VDC pod of the
namespace, and the agent of VDC `v` (group `g`) keeps its snapshots under `v/g/` of it
(`part_dir`): one writer per directory, so a partial save is only ever cleaned up by the
agent that wrote it, in whose pid namespace its pid means something.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from pydantic import Field

from vdc_runtime.resource.base import ApiModel, ApiSpecModel
from vdc_runtime.resource.spec import GROUP, VERSION, ClaimCache, ObjectName
from vdc_runtime.resource.status import Condition, condition, conditions_update

KIND = "VirtualDataCenterSnapshot"
PLURAL = "virtualdatacentersnapshots"
SINGULAR = "virtualdatacentersnapshot"
SHORT_NAMES = ("vdcsnap",)
API_VERSION = f"{GROUP}/{VERSION}"

LABEL_SOURCE = f"{GROUP}/source"
"""On a snapshot, its source VDC's name: what the source's agents watch for."""
SNAPSHOTS_DIR = "/var/lib/vdc-snapshots"
"""Where a VDC's pod mounts its namespace's snapshot claim."""
WHOLE = "all"
"""The part name of a VDC run in one pod (no groups)."""


class Phase(StrEnum):
    PENDING = "Pending"
    SAVING = "Saving"
    READY = "Ready"
    FAILED = "Failed"


class SnapshotSource(ApiSpecModel):
    name: ObjectName = Field(description="The VirtualDataCenter to save, in this namespace.")


class SnapshotStorage(ApiSpecModel):
    persistent_volume_claim: ClaimCache


class VirtualDataCenterSnapshotSpec(ApiSpecModel):
    """What to save (a running VDC's machines) and where."""

    source: SnapshotSource
    storage: SnapshotStorage | None = Field(
        default=None,
        description="The claim to keep it in, which the source's pods must mount; default:"
        " the one the operator gives every VDC pod (the Helm chart's snapshots.claimName).",
    )


class PartStatus(ApiModel):
    """One pod's share of the snapshot (a group's machines), written by its agent."""

    phase: Phase
    message: str | None = None
    path: str | None = Field(default=None, description="Its directory in the claim.")
    size_bytes: int | None = None
    seconds: float | None = Field(default=None, description="How long the save took.")
    machines: int | None = None
    paused_at: str | None = Field(default=None, description="When its machines were paused.")


class VirtualDataCenterSnapshotStatus(ApiModel):
    phase: Phase | None = None
    message: str | None = None
    claim_name: str | None = Field(default=None, description="Where the files are.")
    source_uid: str | None = None
    expected_parts: list[str] = Field(default=[], description="One per pod of the source.")
    parts: dict[str, PartStatus] = Field(default={}, description="Per pod, by its agent.")
    size_bytes: int | None = None
    size: str | None = Field(default=None, description="sizeBytes, for people.")
    seconds: float | None = Field(default=None, description="The longest part's save.")
    machines: int | None = None
    conditions: list[Condition] = Field(default=[])


PRINTER_COLUMNS = [
    {"name": "Source", "type": "string", "jsonPath": ".spec.source.name"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Size", "type": "string", "jsonPath": ".status.size"},
    {"name": "Machines", "type": "integer", "jsonPath": ".status.machines"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]


def part_name(group: str | None) -> str:
    return WHOLE if group is None else group


def part_dir(vdc: str, part: str) -> PurePosixPath:
    """A source pod's snapshot store, relative to the claim."""
    return PurePosixPath(vdc) / part


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


def merged(
    expected: Sequence[str],
    parts: Mapping[str, Mapping[str, Any]],
    previous_conditions: Sequence[Mapping[str, Any]] = (),
    now: float | None = None,
) -> dict[str, Any]:
    """The snapshot's phase, size and Ready condition from its parts' (as the status
    stores them, camelCase): Failed as soon as one failed, Ready when every expected part
    is, Saving while any has begun, else Pending."""
    phases = {name: (parts.get(name) or {}).get("phase") for name in expected}
    failed = [n for n, p in phases.items() if p == Phase.FAILED]
    out: dict[str, Any] = {}
    if failed:
        phase = Phase.FAILED
        reason = "SaveFailed"
        message = "; ".join(f"{n}: {parts[n].get('message') or 'failed'}" for n in failed)
    elif expected and all(p == Phase.READY for p in phases.values()):
        phase = Phase.READY
        reason, message = "Saved", ""
        total = sum(int(parts[n].get("sizeBytes") or 0) for n in expected)
        out |= {
            "sizeBytes": total,
            "size": human_size(total),
            "seconds": max(float(parts[n].get("seconds") or 0) for n in expected),
            "machines": sum(int(parts[n].get("machines") or 0) for n in expected),
        }
    elif any(p is not None for p in phases.values()):
        phase, reason = Phase.SAVING, "Saving"
        waiting = [n for n, p in phases.items() if p != Phase.READY]
        message = f"waiting for {', '.join(waiting)}"
    else:
        phase, reason, message = Phase.PENDING, "Pending", "waiting for the source's agents"
    ready = condition("Ready", "True" if phase == Phase.READY else "False", reason, message)
    conditions = conditions_update([ready], previous_conditions, None, now)
    out |= {
        "phase": phase.value,
        "message": message or None,
        "conditions": [c.model_dump(exclude_none=True) for c in conditions],
    }
    return out


def refused(message: str) -> dict[str, Any]:
    """The status of a snapshot that cannot be taken."""
    ready = conditions_update([condition("Ready", "False", "Refused", message)], [], None)
    return {
        "phase": Phase.FAILED.value,
        "message": message,
        "conditions": [c.model_dump(exclude_none=True) for c in ready],
    }


__all__ = [
    "API_VERSION",
    "KIND",
    "LABEL_SOURCE",
    "PLURAL",
    "PRINTER_COLUMNS",
    "SHORT_NAMES",
    "SINGULAR",
    "SNAPSHOTS_DIR",
    "WHOLE",
    "PartStatus",
    "Phase",
    "SnapshotSource",
    "SnapshotStorage",
    "VirtualDataCenterSnapshotSpec",
    "VirtualDataCenterSnapshotStatus",
    "human_size",
    "merged",
    "part_dir",
    "part_name",
    "refused",
]
