"""kopf's bookkeeping: nothing written to a VDC whose handler succeeds at once."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from vdc_operator import persistence


def _body(uid: str = "u1", **annotations: str) -> kopf.Body:
    raw: dict[str, Any] = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
                           "metadata": {"name": "lab", "namespace": "ns", "uid": uid,
                                        "annotations": annotations},
                           "spec": {"networks": [{"name": "n"}]}}  # fmt: skip
    return kopf.Body(raw)


def test_the_last_handled_spec_is_remembered_not_written() -> None:
    storage = persistence.RememberedDiffBase(kept=2)
    body, patch = _body(), kopf.Patch()
    assert storage.fetch(body=body) is None  # a restart: `reconcile` runs as for a new VDC
    essence = storage.build(body=body)
    storage.store(body=body, patch=patch, essence=essence)
    assert not patch
    assert storage.fetch(body=body) == essence == {"spec": {"networks": [{"name": "n"}]}}
    essence["spec"]["networks"].clear()  # kopf's, not the remembered one
    assert storage.fetch(body=body) == {"spec": {"networks": [{"name": "n"}]}}
    storage.forget("u1")
    assert storage.fetch(body=body) is None
    for uid in ("u1", "u2", "u3"):
        storage.store(body=_body(uid), patch=patch, essence=essence)
    assert len(storage) == 2 and storage.fetch(body=_body("u1")) is None


def test_a_handler_that_succeeds_at_once_leaves_no_patch() -> None:
    storage = persistence.UnmarkedAnnotationsProgress(prefix="vdc.dev")
    body, patch = _body(), kopf.Patch()
    storage.store(key=kopf.HandlerId("reconcile"), record={"success": True}, body=body,
                  patch=patch)  # fmt: skip
    assert dict(patch) == {"metadata": {"annotations": {"vdc.dev/reconcile": '{"success":true}'}}}
    storage.purge(key=kopf.HandlerId("reconcile"), body=body, patch=patch)
    assert not patch.get("metadata", {}).get("annotations")
    # Retries that outlive the process still go to the object, and leave the diffs alone.
    kept = _body(**{"vdc.dev/reconcile": '{"retries":1}', "team": "ci"})
    essence = persistence.RememberedDiffBase().build(body=kept)
    assert storage.clear(essence=essence)["metadata"] == {"annotations": {"team": "ci"}}


def test_a_finalizer_is_added_once() -> None:
    assert persistence.with_finalizer(["other"], "vdc.dev/cleanup") == ["other", "vdc.dev/cleanup"]
    assert persistence.with_finalizer(["vdc.dev/cleanup"], "vdc.dev/cleanup") is None


class StockDiffBase(kopf.DiffBaseStorage):
    """kopf's own essence (`build` as kopf defines it), to compare with."""

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        return None


def test_the_essence_is_kopfs_own_without_copying_the_status() -> None:
    big = {"nodes": [{"name": f"n{i}", "state": "Running"} for i in range(50)]}
    bodies = [
        {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter", "metadata": {}},
        {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualDataCenter",
            "metadata": {
                "name": "lab",
                "uid": "u",
                "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}],
                "labels": {"team": "a"},
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{}",
                    "other.example/kopf-managed": "yes",
                    "other.example/handler": "{}",
                    "vdc.dev/reconcile": "{}",
                    "note": "kept",
                },
                "finalizers": ["vdc.dev/cleanup"],
            },
            "spec": {"networks": [{"name": "lan"}], "nodes": []},
            "status": big,
        },
        {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": ""}},
         "spec": {}, "status": big},
    ]  # fmt: skip
    ours, stock = persistence.RememberedDiffBase(), StockDiffBase()
    for body in bodies:
        essence = ours.build(body=body)
        assert essence == stock.build(body=body)
        assert "status" not in essence
    # Followed status fields go kopf's own way, and the same.
    fields = [("status", "nodes")]
    assert ours.build(body=bodies[1], extra_fields=fields) == stock.build(
        body=bodies[1], extra_fields=fields
    )
    # A copy: changing the object later does not change the essence.
    essence = ours.build(body=bodies[1])
    bodies[1]["spec"]["networks"].append({"name": "wan"})
    bodies[1]["metadata"]["labels"]["team"] = "b"
    assert essence["spec"]["networks"] == [{"name": "lan"}]
    assert essence["metadata"]["labels"] == {"team": "a"}


def test_following_the_spec_keeps_the_essence_kopfs_own() -> None:
    body = {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "VirtualDataCenter",
        "metadata": {"name": "lab", "uid": "u", "labels": {"team": "a"}},
        "spec": {"networks": [{"name": "lan"}]},
        "status": {"phase": "Running"},
    }
    ours, stock = persistence.RememberedDiffBase(), StockDiffBase()
    for fields in ([("spec",)], ["spec"], [("spec", "networks")]):  # `reconcile`'s field
        assert ours.build(body=body, extra_fields=fields) == stock.build(
            body=body, extra_fields=fields
        )


def test_clearing_the_progress_is_kopfs_clear_and_changes_nothing_in_place() -> None:
    ours = persistence.UnmarkedAnnotationsProgress(prefix="vdc.dev")
    stock = kopf.AnnotationsProgressStorage(prefix="vdc.dev")
    essences: list[dict[str, Any]] = [
        {"spec": {"nodes": []}},
        {"spec": {}, "metadata": {"labels": {"a": "b"}}},
        {"spec": {}, "metadata": {"annotations": {"vdc.dev/reconcile": "{}"}}},
        {"spec": {}, "metadata": {"annotations": {"vdc.dev/reconcile": "{}", "note": "x"}}},
        {"spec": {}, "metadata": {"labels": {"a": "b"}, "annotations": {"vdc.dev/x": "{}"}}},
    ]
    for essence in essences:
        before = copy.deepcopy(essence)
        assert ours.clear(essence=essence) == stock.clear(essence=before)
        assert essence == before


def test_kopf_follows_no_pods() -> None:
    """The pods are the operator's own watch's (`podwatch`): kopf would build, diff and
    queue every event of every pod for nothing. If a handler of pods is ever added, this
    fails first."""
    from vdc_operator import handlers

    registry = kopf.get_default_registry()
    assert handlers.RESOURCE  # imported: every handler is registered
    pods = kopf.Resource(group="", version="v1", plural="pods", kind="Pod", namespaced=True,
                         verbs=["list", "watch"])  # fmt: skip
    for kind in (registry._changing, registry._spawning, registry._watching, registry._indexing):
        assert not kind.has_handlers(resource=pods)
    assert registry._watching.has_handlers(resource=kopf.Resource(
        group="vdc.dev", version="v1alpha1", plural="virtualdatacenters", namespaced=True,
        verbs=["list", "watch"]))  # fmt: skip
