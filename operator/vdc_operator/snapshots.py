"""VirtualDataCenterSnapshots: admitting one (its source VDC, the claim its pods mount, the
parts that must save), merging what the source's agents report into its phase, and where a
VDC that starts from one finds it (`spec.restoreFrom`).

The decisions are pure functions of the objects read (`admit`, `restore_plan`,
`snapshot_storage`'s choice); the handlers below only read, call them and write. The saving
itself is the agents' (vdc_runtime.agent.snapshots): the operator never touches the files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import kopf

from vdc_operator import builders
from vdc_operator.kube import Api
from vdc_runtime.resource import snapshots as api
from vdc_runtime.resource import spec as cr

RESOURCE = (cr.GROUP, cr.VERSION, api.PLURAL)


class NotYet(Exception):
    """What a VDC starting from a snapshot waits for (the snapshot is not Ready yet)."""


class Unusable(Exception):
    """Why a VDC cannot start from its snapshot, ever (it failed, or does not fit)."""


def _mounted_claim(pod: Mapping[str, Any]) -> str | None:
    for volume in pod["spec"].get("volumes") or []:
        if volume.get("name") == "snapshots":
            return str(volume["persistentVolumeClaim"]["claimName"])
    return None


def _part_of(pod: Mapping[str, Any]) -> str:
    group = (pod["metadata"].get("labels") or {}).get(builders.LABEL_GROUP)
    return api.part_name(group)


def admit(
    snapshot: Mapping[str, Any],
    vdc: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> dict[str, Any] | None:
    """The status a new snapshot starts with: Pending with the claim and the parts to wait
    for, or Failed saying why it cannot be taken; None while the source has no pod yet."""
    source = snapshot["spec"]["source"]["name"]

    if vdc is None:
        return api.refused(f"no VirtualDataCenter {source} in this namespace")
    if not pods:
        return None
    claims = {_mounted_claim(p) for p in pods}
    wanted = ((snapshot["spec"].get("storage") or {}).get("persistentVolumeClaim") or {}).get(
        "claimName"
    )
    if claims == {None}:
        return api.refused(
            f"{source}'s pods mount no snapshot claim: give the VDC spec.pod.snapshotClaim,"
            " or install the operator with snapshots.claimName and create that claim in this"
            " namespace (pods made after that mount it)"
        )
    if len(claims) != 1:
        return None  # a pod being replaced: wait for the new one
    (claim,) = claims
    if wanted is not None and wanted != claim:
        return api.refused(
            f"{source}'s pods keep snapshots in claim {claim}, not {wanted}: give"
            f" spec.storage {claim} (or none), or set the VDC's spec.pod.snapshotClaim"
        )
    parts = sorted(_part_of(p) for p in pods)
    return api.merged(parts, {}) | {
        "claimName": claim,
        "sourceUid": vdc["metadata"]["uid"],
        "expectedParts": parts,
    }


def restore_plan(
    name: str, snapshot: Mapping[str, Any] | None, parts: Iterable[str]
) -> builders.Restore:
    """Where each of a VDC's pods (`parts`) finds its share of snapshot `name`."""
    if snapshot is None:
        raise NotYet(f"VirtualDataCenterSnapshot {name} does not exist")
    status = snapshot.get("status") or {}
    phase = status.get("phase")
    if phase == api.Phase.FAILED:
        raise Unusable(f"snapshot {name} failed: {status.get('message') or 'no reason given'}")
    if phase != api.Phase.READY:
        raise NotYet(f"snapshot {name} is {phase or 'new'}, not Ready")
    saved = {p: (part.get("path") or "") for p, part in (status.get("parts") or {}).items()}
    wanted = sorted(parts)
    if sorted(saved) != wanted:
        raise Unusable(
            f"snapshot {name} holds the machines of pods {', '.join(sorted(saved))}; this"
            f" VDC has pods {', '.join(wanted)}: give it the groups its source had"
        )
    return builders.Restore(claim=str(status["claimName"]), parts=saved)


def own_claim(
    spec: cr.VirtualDataCenterSpec, settings: builders.Settings, present: Mapping[str, bool]
) -> str | None:
    """The claim a VDC's pods keep snapshots in: its own (which must exist: the pod cannot
    start without it), else the operator's where the namespace has one."""
    if spec.pod.snapshot_claim is not None:
        if not present[spec.pod.snapshot_claim]:
            raise NotYet(f"PersistentVolumeClaim {spec.pod.snapshot_claim} does not exist")
        return spec.pod.snapshot_claim
    if settings.snapshot_claim and present[settings.snapshot_claim]:
        return settings.snapshot_claim
    return None


async def snapshot_storage(
    client: Api, namespace: str, spec: cr.VirtualDataCenterSpec, settings: builders.Settings
) -> builders.Storage:
    """What a VDC's pods mount for snapshots (NotYet / Unusable when they cannot start)."""
    names = {n for n in (spec.pod.snapshot_claim, settings.snapshot_claim) if n}
    present = {n: await client.claim_exists(namespace, n) for n in names}
    claim = own_claim(spec, settings, present)
    restore = None
    if spec.restore_from is not None:
        name = spec.restore_from.snapshot
        snapshot = await client.get_snapshot(namespace, name)
        parts = [api.part_name(g) for g in builders.pod_groups(spec)]
        restore = restore_plan(name, snapshot, parts)
    return builders.Storage(claim=claim, restore=restore)


# -- handlers ---------------------------------------------------------------------------------


@kopf.on.create(*RESOURCE)
@kopf.on.resume(*RESOURCE)
async def snapshot_created(
    body: Any, patch: kopf.Patch, logger: logging.Logger, memo: kopf.Memo, **_: Any
) -> None:
    """Label a new snapshot with its source (whose agents watch for it) and say what it
    waits for."""
    if (body.get("status") or {}).get("phase"):
        return
    client: Api = memo.api
    meta = body["metadata"]
    namespace, source = meta["namespace"], body["spec"]["source"]["name"]
    vdc = await client.get_vdc(namespace, source)
    pods = []
    if vdc is not None:
        pods = [
            p for p in await client.list_pods(namespace, f"{builders.LABEL_NAME}={source}")
            if any(o.get("uid") == vdc["metadata"]["uid"]
                   for o in p["metadata"].get("ownerReferences") or [])
            and not p["metadata"].get("deletionTimestamp")
        ]  # fmt: skip
    status = admit(body, vdc, pods)
    if status is None:
        raise kopf.TemporaryError(f"waiting for {source}'s pods", delay=5)
    await client.patch_snapshot_status(namespace, meta["name"], status)
    # The label last: the agents start on it, and find the status above.
    patch.metadata.labels[api.LABEL_SOURCE] = source
    if status["phase"] == api.Phase.FAILED:
        kopf.event(body, type="Warning", reason="SaveFailed", message=status["message"][:1024])
    else:
        logger.info("snapshot of %s: waiting for parts %s", source, status["expectedParts"])


def _saving(status: Mapping[str, Any], **_: Any) -> bool:
    return bool(status.get("parts")) and status.get("phase") in (
        api.Phase.PENDING,
        api.Phase.SAVING,
    )


@kopf.on.event(*RESOURCE, when=_saving)
async def snapshot_parts(body: Any, memo: kopf.Memo, **_: Any) -> None:
    """The parts the agents reported, merged into the snapshot's phase."""
    status = body.get("status") or {}
    want = api.merged(
        status.get("expectedParts") or [], status.get("parts") or {}, status.get("conditions") or []
    )
    if all(status.get(k) == v for k, v in want.items()):
        return
    meta = body["metadata"]
    await memo.api.patch_snapshot_status(meta["namespace"], meta["name"], want)
    if want["phase"] == api.Phase.READY:
        message = (f"{want['machines']} machines, {want['size']}, saved in {want['seconds']} s"
                   f" from {body['spec']['source']['name']}")  # fmt: skip
        kopf.event(body, type="Normal", reason="Saved", message=message)
    elif want["phase"] == api.Phase.FAILED:
        kopf.event(body, type="Warning", reason="SaveFailed", message=want["message"][:1024])


__all__ = [
    "NotYet",
    "Unusable",
    "admit",
    "own_claim",
    "restore_plan",
    "snapshot_created",
    "snapshot_parts",
    "snapshot_storage",
]
