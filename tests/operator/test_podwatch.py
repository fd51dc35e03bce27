"""The pods' watch's hand-off to its handler, and what it keeps of a pod (the watch itself
runs against the real API server in tests/e2e/test_podwatch.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf

from vdc_operator import builders
from vdc_operator.events import Source, build_event
from vdc_operator.podwatch import _Newest, slim

KOPFS = Source.of(kopf.OperatorSettings().posting)
"""Who posts kopf's own events, by default."""


def _pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": version}}


async def test_events_that_come_during_a_call_are_folded_into_the_next() -> None:
    calls: list[tuple[str, str]] = []
    release = asyncio.Event()

    async def handle(kind: str, pod: dict[str, Any]) -> None:
        calls.append((kind, pod["metadata"]["resourceVersion"]))
        await release.wait()

    newest = _Newest(handle, retry_first=0.01, retry_most=0.01)
    key = ("ns", "p")
    newest.put(key, "ADDED", _pod("p", "1"))
    await asyncio.sleep(0)
    for version in ("2", "3", "4"):
        newest.put(key, "MODIFIED", _pod("p", version))
    newest.put(("ns", "q"), "ADDED", _pod("q", "9"))  # another pod: not held up by p's
    await asyncio.sleep(0.01)
    assert calls == [("ADDED", "1"), ("ADDED", "9")]
    release.set()
    await asyncio.sleep(0.01)
    assert calls == [("ADDED", "1"), ("ADDED", "9"), ("MODIFIED", "4")]
    assert not newest._running
    await newest.close()


async def test_a_failed_call_is_retried_unless_a_newer_event_came() -> None:
    calls: list[str] = []
    failures = 2

    async def handle(kind: str, pod: dict[str, Any]) -> None:
        nonlocal failures
        calls.append(pod["metadata"]["resourceVersion"])
        if failures:
            failures -= 1
            raise RuntimeError("the API server refused")

    newest = _Newest(handle, retry_first=0.05, retry_most=0.05)
    key = ("ns", "p")
    newest.put(key, "ADDED", _pod("p", "1"))
    await asyncio.sleep(0.01)
    assert calls == ["1"]
    newest.put(key, "MODIFIED", _pod("p", "2"))  # during the wait before the retry
    await asyncio.sleep(0.2)
    assert calls == ["1", "2", "2"]  # "2" instead of a retry of "1"; then "2" retried
    assert not newest._running
    await newest.close()


async def test_close_stops_the_calls_under_way() -> None:
    started = asyncio.Event()

    async def handle(kind: str, pod: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(3600)

    newest = _Newest(handle, retry_first=1, retry_most=1)
    newest.put(("ns", "p"), "ADDED", _pod("p", "1"))
    await started.wait()
    await newest.close()
    assert not newest._running


def test_a_pod_is_kept_as_the_handlers_read_it() -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "vdc-lab-a",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {builders.LABEL_NAME: "lab", builders.LABEL_GROUP: "a", "other": "x"},
            "annotations": {builders.ANNOTATION_HASH: "h", "big": "y" * 1000},
            "ownerReferences": [
                {
                    "apiVersion": "vdc.dev/v1alpha1",
                    "kind": "VirtualDataCenter",
                    "name": "lab",
                    "uid": "v-1",
                    "controller": True,
                }
            ],
            "managedFields": [{"manager": "kopf", "fieldsV1": {"f:spec": {}}}],
            "deletionTimestamp": "2026-12-06T00:00:00Z",
        },
        "spec": {"containers": [{"name": "agent", "image": "vdc-runtime"}]},
        "status": {"phase": "Pending", "podIP": "10.0.0.5"},
    }
    kept = slim(pod, (builders.LABEL_NAME, builders.LABEL_GROUP), (builders.ANNOTATION_HASH,))
    assert kept == {
        "metadata": {
            "name": "vdc-lab-a",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
            "labels": {builders.LABEL_NAME: "lab", builders.LABEL_GROUP: "a"},
            "annotations": {builders.ANNOTATION_HASH: "h"},
            "ownerReferences": [{"kind": "VirtualDataCenter", "uid": "v-1"}],
            "deletionTimestamp": "2026-12-06T00:00:00Z",
        },
        "status": {"phase": "Pending", "podIP": "10.0.0.5"},
    }
    # What the handlers compute from it is what they computed from the whole pod.
    vdc = {"metadata": {"name": "lab", "namespace": "ns"}, "status": {"phase": "Running"}}
    assert builders.pod_change(vdc, kept, now=0) == builders.pod_change(vdc, pod, now=0)


def test_an_event_names_its_object_and_its_poster() -> None:
    vdc = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
           "metadata": {"name": "lab", "namespace": "ns", "uid": "v-1"}}  # fmt: skip
    event = build_event(vdc, "Warning", "PodRecreated", "x" * 2000, KOPFS, now=0)
    assert event["involvedObject"] == {
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
        "name": "lab", "namespace": "ns", "uid": "v-1",
    }  # fmt: skip
    assert event["metadata"] == {"namespace": "ns", "generateName": "kopf-event-"}
    assert event["source"] == {"component": "kopf"}
    assert len(event["message"]) == 1024 and event["message"].endswith("...")
    assert event["firstTimestamp"] == event["lastTimestamp"] == "1970-01-01T00:00:00Z"
