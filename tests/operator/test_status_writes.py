"""The operator's status writes of one VDC: one at a time, the changes that wait meanwhile
written together, each computed from what the ones before it leave, against an API server
on loopback terms: merge patches that name the version they were computed from."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest
from kubernetes.client import ApiException

from vdc_operator.kube import Api, compose, merge_patch


class StatusServer(Api):
    """`Api` whose VDC lives here: reads return a copy, a status patch applies as the API
    server applies a merge patch, refused (409) when its resourceVersion is not the
    object's, and takes `latency` seconds."""

    def __init__(self, latency: float = 0.05, gather: float = 0.0) -> None:
        super().__init__(gather)
        self.latency = latency
        self.vdc: dict[str, Any] | None = {
            "metadata": {"name": "lab", "namespace": "ns", "resourceVersion": "1"},
            "status": {"phase": "Pending"},
        }
        self.patches: list[dict[str, Any]] = []
        self.reads = 0

    async def get_vdc(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return copy.deepcopy(self.vdc)

    async def _patch_status(self, namespace: str, name: str, body: dict[str, Any]) -> Any:
        await asyncio.sleep(self.latency)
        if self.vdc is None:
            raise ApiException(status=404)
        if body["metadata"]["resourceVersion"] != self.vdc["metadata"]["resourceVersion"]:
            raise ApiException(status=409)
        self.patches.append(body["status"])
        self.vdc["status"] = merge_patch(self.vdc.get("status") or {}, body["status"])
        version = int(self.vdc["metadata"]["resourceVersion"]) + 1
        self.vdc["metadata"]["resourceVersion"] = str(version)
        return copy.deepcopy(self.vdc)

    def other_writer(self, status: dict[str, Any]) -> None:
        """Another writer (the agent) changes the status now."""
        assert self.vdc is not None
        self.vdc["status"] = merge_patch(self.vdc["status"], status)
        version = int(self.vdc["metadata"]["resourceVersion"]) + 1
        self.vdc["metadata"]["resourceVersion"] = str(version)


def group(name: str, phase: str) -> Any:
    def compute(vdc: dict[str, Any]) -> dict[str, Any] | None:
        parts = (vdc.get("status") or {}).get("groups") or {}
        seen = sorted(g for g in parts if g != name)
        return {"groups": {name: {"phase": phase, "seen": seen}}}

    return compute


async def test_changes_that_wait_for_a_write_go_as_one_each_computed_after_the_last() -> None:
    api = StatusServer()
    watched = copy.deepcopy(api.vdc)  # as the pods' events find it in the index: older
    first = asyncio.create_task(api.update_vdc_status("ns", "lab", group("a", "Pending"), watched))
    await asyncio.sleep(0.01)  # the first write is under way
    rest = [
        asyncio.create_task(api.update_vdc_status("ns", "lab", group(g, "Unschedulable"), watched))
        for g in ("b", "c", "d")
    ]
    assert await first
    assert await asyncio.gather(*rest) == [True, True, True]
    assert len(api.patches) == 2
    assert api.patches[1] == {
        "groups": {
            "b": {"phase": "Unschedulable", "seen": ["a"]},
            "c": {"phase": "Unschedulable", "seen": ["a", "b"]},
            "d": {"phase": "Unschedulable", "seen": ["a", "b", "c"]},
        }
    }
    assert api.reads == 0  # the second write computes from what the first returned
    assert not api._writes and not api._waiting


async def test_changes_within_the_gathering_time_go_in_one_write() -> None:
    api = StatusServer(gather=0.1)
    watched = copy.deepcopy(api.vdc)
    first = asyncio.create_task(api.update_vdc_status("ns", "lab", group("a", "Pending"), watched))
    await asyncio.sleep(0.05)
    second = asyncio.create_task(api.update_vdc_status("ns", "lab", group("b", "U"), watched))
    assert await first and await second
    assert api.patches == [
        {"groups": {"a": {"phase": "Pending", "seen": []}, "b": {"phase": "U", "seen": ["a"]}}}
    ]


async def test_a_change_that_changes_nothing_is_false_and_not_written() -> None:
    api = StatusServer()
    same = {"phase": "Pending"}
    assert not await api.update_vdc_status("ns", "lab", lambda vdc: dict(same))
    assert not await api.update_vdc_status("ns", "lab", lambda vdc: None)
    assert api.patches == []
    together = await asyncio.gather(
        api.update_vdc_status("ns", "lab", lambda vdc: {"phase": "Running"}),
        api.update_vdc_status("ns", "lab", lambda vdc: {"phase": vdc["status"]["phase"]}),
    )
    assert together == [True, False]
    assert api.patches == [{"phase": "Running"}]


async def test_another_writers_change_meanwhile_is_kept() -> None:
    api = StatusServer(latency=0.02)
    stale = copy.deepcopy(api.vdc)
    api.other_writer({"conditions": [{"type": "Ready", "status": "True"}]})

    def phase(vdc: dict[str, Any]) -> dict[str, Any]:
        # As the handlers do: the list is written whole, from the VDC it is computed from.
        conditions = (vdc.get("status") or {}).get("conditions") or []
        return {"phase": "Running", "conditions": conditions}

    assert await api.update_vdc_status("ns", "lab", phase, stale)
    assert api.vdc is not None
    assert api.vdc["status"]["conditions"] == [{"type": "Ready", "status": "True"}]
    assert api.reads == 1  # the stale copy met a conflict, then one read


async def test_a_failed_write_fails_every_change_that_waited_for_it() -> None:
    api = StatusServer()

    def broken(vdc: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("no")

    first = asyncio.create_task(api.update_vdc_status("ns", "lab", group("a", "Pending")))
    await asyncio.sleep(0.01)
    both = [
        asyncio.create_task(api.update_vdc_status("ns", "lab", compute))
        for compute in (broken, group("b", "Pending"))
    ]
    assert await first
    for task in both:
        with pytest.raises(ValueError, match="no"):
            await task
    # The next change is written as usual.
    assert await api.update_vdc_status("ns", "lab", group("c", "Pending"))


async def test_a_cancelled_caller_does_not_cancel_the_write_of_the_others() -> None:
    api = StatusServer()
    first = asyncio.create_task(api.update_vdc_status("ns", "lab", group("a", "Pending")))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(api.update_vdc_status("ns", "lab", group("b", "Pending")))
    kept = asyncio.create_task(api.update_vdc_status("ns", "lab", group("c", "Pending")))
    await asyncio.sleep(0)
    gone.cancel()
    assert await first and await kept
    assert api.vdc is not None
    assert set(api.vdc["status"]["groups"]) == {"a", "b", "c"}


async def test_a_vdc_gone_is_nothing_written() -> None:
    api = StatusServer()
    api.vdc = None
    assert not await api.update_vdc_status("ns", "lab", group("a", "Pending"))


def test_merge_patches_compose_where_one_patch_can_say_both() -> None:
    target = {"groups": {"a": {"phase": "P", "pod": "x"}}, "phase": "P", "nodes": [1]}
    cases = [
        ({"groups": {"a": {"phase": "R"}}}, {"groups": {"b": {"phase": "U"}}}),
        ({"phase": "R", "nodes": [2]}, {"nodes": None}),
        ({"groups": {"a": {"pod": None}}}, {"groups": {"a": {"pod": "y"}}}),
        ({"nodes": [2]}, {"nodes": [3], "phase": None}),
    ]
    for first, then in cases:
        together = compose(first, then)
        assert together is not None
        assert merge_patch(target, together) == merge_patch(merge_patch(target, first), then)
    # Removed, then merged into: one patch would merge into what was removed.
    assert compose({"groups": {"a": None}}, {"groups": {"a": {"phase": "R"}}}) is None
    assert compose({"groups": None}, {"groups": {"a": {"phase": "R"}}}) is None
