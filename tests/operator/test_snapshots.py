"""VirtualDataCenterSnapshots, the operator's part: admitting a snapshot, merging its parts,
and the mounts of a VDC that keeps snapshots or starts from one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.operator.test_builders import assert_golden, vdc
from vdc_operator import builders
from vdc_operator import snapshots as ops
from vdc_runtime.resource import snapshots as api
from vdc_runtime.resource import spec as cr

NOW = 1_790_000_000.0


def snapshot(storage: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"name": "quickstart"}}
    if storage:
        spec["storage"] = {"persistentVolumeClaim": {"claimName": storage}}
    return {"metadata": {"name": "s1", "namespace": "lab", "uid": "u-1"}, "spec": spec}


def pods(body: dict[str, Any], storage: builders.Storage) -> list[dict[str, Any]]:
    return builders.build_pods(body, cr.parse(body["spec"]), builders.Settings(), storage)


def grouped() -> dict[str, Any]:
    body = vdc(groups=[{"name": "a"}, {"name": "b"}])
    for i, node in enumerate(body["spec"]["nodes"]):
        node["group"] = "a" if i == 0 else "b"
    for ns in body["spec"]["networkNamespaces"]:
        ns["group"] = "a"
    return body


def test_admitted_with_the_claim_its_source_mounts_and_a_part_per_pod() -> None:
    body = grouped()
    found = pods(body, builders.Storage(claim="snaps"))
    status = ops.admit(snapshot(), body, found)
    assert status is not None
    assert status["phase"] == "Pending"
    assert status["claimName"] == "snaps"
    assert status["expectedParts"] == ["a", "b"]
    assert status["sourceUid"] == body["metadata"]["uid"]
    assert ops.admit(snapshot("snaps"), body, found)["phase"] == "Pending"  # type: ignore[index]


@pytest.mark.parametrize(
    ("source", "claim", "storage", "says"),
    [
        (None, "snaps", None, "no VirtualDataCenter quickstart in this namespace"),
        ("pods", None, None, "quickstart's pods mount no snapshot claim"),
        ("pods", "snaps", "other", "keep snapshots in claim snaps, not other"),
    ],
)
def test_refused_with_the_reason(
    source: str | None, claim: str | None, storage: str | None, says: str
) -> None:
    body = vdc()
    found = pods(body, builders.Storage(claim=claim))
    status = ops.admit(snapshot(storage), body if source else None, found)
    assert status is not None and status["phase"] == "Failed"
    assert says in status["message"]
    ready = status["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "Refused")


def test_waits_for_the_sources_pods() -> None:
    assert ops.admit(snapshot(), vdc(), []) is None


def part(phase: str, **more: Any) -> dict[str, Any]:
    return {"phase": phase, **more}


def test_parts_merged_into_the_phase() -> None:
    expected = ["a", "b"]
    assert api.merged(expected, {}, now=NOW)["phase"] == "Pending"
    saving = api.merged(expected, {"a": part("Ready", sizeBytes=10)}, now=NOW)
    assert (saving["phase"], saving["message"]) == ("Saving", "waiting for b")
    done = api.merged(expected, {
        "a": part("Ready", sizeBytes=3 << 20, seconds=1.5, machines=1),
        "b": part("Ready", sizeBytes=1 << 20, seconds=2.5, machines=2),
    }, now=NOW)  # fmt: skip
    assert done["phase"] == "Ready"
    assert (done["sizeBytes"], done["size"], done["seconds"], done["machines"]) == (
        4 << 20, "4.0MiB", 2.5, 3,
    )  # fmt: skip
    assert done["conditions"][0]["status"] == "True"
    failed = api.merged(expected, {"a": part("Ready"), "b": part("Failed", message="disk full")})
    assert (failed["phase"], failed["message"]) == ("Failed", "b: disk full")
    # The condition's transition time stays while its status does.
    again = api.merged(expected, {"a": part("Ready")}, saving["conditions"], now=NOW + 60)
    assert again["conditions"] == saving["conditions"]


def ready_snapshot(parts: dict[str, str]) -> dict[str, Any]:
    body = snapshot()
    body["status"] = {
        "phase": "Ready", "claimName": "snaps",
        "parts": {p: {"phase": "Ready", "path": path} for p, path in parts.items()},
    }  # fmt: skip
    return body


def test_restore_plan() -> None:
    plan = ops.restore_plan("s1", ready_snapshot({"all": "quickstart/all/u-1"}), ["all"])
    assert plan == builders.Restore(claim="snaps", parts={"all": "quickstart/all/u-1"})
    with pytest.raises(ops.NotYet, match="does not exist"):
        ops.restore_plan("s1", None, ["all"])
    saving = ready_snapshot({})
    saving["status"]["phase"] = "Saving"
    with pytest.raises(ops.NotYet, match="is Saving, not Ready"):
        ops.restore_plan("s1", saving, ["all"])
    failed = copy.deepcopy(saving)
    failed["status"] |= {"phase": "Failed", "message": "disk full"}
    with pytest.raises(ops.Unusable, match="failed: disk full"):
        ops.restore_plan("s1", failed, ["all"])
    with pytest.raises(
        ops.Unusable, match="holds the machines of pods all; this VDC has pods a, b"
    ):
        ops.restore_plan("s1", ready_snapshot({"all": "x/all/u"}), ["a", "b"])


def test_own_claim() -> None:
    spec = cr.parse(vdc()["spec"])
    default = builders.Settings(snapshot_claim="vdc-snapshots")
    assert ops.own_claim(spec, default, {"vdc-snapshots": True}) == "vdc-snapshots"
    assert ops.own_claim(spec, default, {"vdc-snapshots": False}) is None
    assert ops.own_claim(spec, builders.Settings(), {}) is None
    named = cr.parse(vdc(pod={"snapshotClaim": "mine"})["spec"])
    assert ops.own_claim(named, default, {"mine": True, "vdc-snapshots": True}) == "mine"
    with pytest.raises(ops.NotYet, match="PersistentVolumeClaim mine does not exist"):
        ops.own_claim(named, default, {"mine": False, "vdc-snapshots": True})


def test_pod_mounts_its_claim_and_the_snapshot_it_starts_from() -> None:
    body = vdc(restoreFrom={"snapshot": "s1"})
    restore = builders.Restore(claim="old-snaps", parts={"all": "quickstart/all/u-1"})
    (pod,) = pods(body, builders.Storage(claim="snaps", restore=restore))
    assert_golden("snapshot-pod", pod)
    agent = pod["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in agent["env"]}
    assert env["VDC_SNAPSHOTS_DIR"] == api.SNAPSHOTS_DIR
    assert env["VDC_SNAPSHOTS_CLAIM"] == "snaps"
    assert (env["VDC_RESTORE"], env["VDC_RESTORE_DIR"]) == (
        "u-1", f"{builders.RESTORE_DIR}/quickstart/all",
    )  # fmt: skip
    # The same claim is mounted once.
    (same,) = pods(body, builders.Storage(claim="old-snaps", restore=restore))
    env = {e["name"]: e.get("value") for e in same["spec"]["containers"][0]["env"]}
    assert env["VDC_RESTORE_DIR"] == f"{api.SNAPSHOTS_DIR}/quickstart/all"
    assert [v["name"] for v in same["spec"]["volumes"]].count("restore") == 0
    # Without claims, the pod is as before.
    assert pods(vdc(), builders.Storage()) == [
        builders.build_pod(vdc(), cr.parse(vdc()["spec"]), builders.Settings())
    ]
