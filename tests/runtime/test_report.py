"""The agent's Reporter against a VDC held in memory: what it writes, and when it writes
again over another writer (the operator's AgentRestarting while the agent restarted)."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest

from tests.runtime.test_status import node, run_obs
from vdc_runtime.agent import report
from vdc_runtime.agent.kube import Conflict
from vdc_runtime.agent.report import Reporter
from vdc_runtime.agent.status import Event

RESTARTING = {"phase": "Degraded", "message": "the agent is restarting (last exit: Error)"}


def merge(into: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386), as the API server applies it."""
    out = dict(into)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


class FakeKube:
    """The agent's calls on its one VDC, kept in memory; every write moves the
    resourceVersion, as the API server's do."""

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.vdc: dict[str, Any] = {
            "metadata": {"name": "q", "namespace": "lab", "uid": "u-1", "generation": 2,
                         "resourceVersion": "1"},
            "status": status or {},
        }  # fmt: skip
        self.events: list[str] = []
        self.writes = 0

    def read(self) -> dict[str, Any]:
        return copy.deepcopy(self.vdc)

    async def get(self) -> dict[str, Any]:
        return self.read()

    async def patch_status(
        self, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        if resource_version not in (None, self.vdc["metadata"]["resourceVersion"]):
            raise Conflict("writing the status")
        self.writes += 1
        return self.operator_writes(status)

    def operator_writes(self, status: dict[str, Any]) -> dict[str, Any]:
        """Another writer's merge patch of the status (the agent's goes through here too)."""
        self.vdc["status"] = merge(self.vdc["status"], status)
        meta = self.vdc["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        return self.read()

    async def post_event(self, vdc: dict[str, Any], event: Event) -> None:
        self.events.append(event.reason)


def reporter(kube: FakeKube, group: str | None = None) -> Reporter:
    return Reporter(kube, kube.read(), group)  # type: ignore[arg-type]


def refresh_due(reporter: Reporter) -> None:
    reporter._refreshed = time.monotonic() - report.REFRESH_EVERY - 1


RUNNING = run_obs(node("a"))


async def test_a_stale_phase_of_another_writer_is_written_over_at_the_next_refresh() -> None:
    kube = FakeKube()
    agent = reporter(kube)
    await agent.report(RUNNING)
    await agent.report(RUNNING)
    assert (kube.writes, kube.vdc["status"]["phase"]) == (1, "Running")
    assert kube.events == ["NodeReady", "Running"]
    # The operator says the agent restarts, after this (new) agent had read the VDC.
    kube.operator_writes(RESTARTING)
    kube.events.clear()
    await agent.report(RUNNING)
    assert kube.writes == 1  # nothing changed as far as the agent knew
    refresh_due(agent)
    await agent.report(RUNNING)
    assert (kube.writes, kube.events) == (2, ["Running"])  # the transition, announced
    assert kube.vdc["status"]["phase"] == "Running"
    assert kube.vdc["status"]["message"] == "1 nodes ready"
    # Written: the next refresh finds what it wrote, and writes nothing.
    refresh_due(agent)
    await agent.report(RUNNING)
    assert kube.writes == 2


async def test_resync_takes_the_status_as_start_up_left_it() -> None:
    kube = FakeKube()
    await reporter(kube).report(RUNNING)  # the agent before its restart
    before_start = kube.read()  # what the new agent reads before it starts (adopts)
    kube.operator_writes(RESTARTING)  # meanwhile
    kube.events.clear()

    # From the read before start-up, its first report equals the status it knows: unwritten.
    stale = Reporter(kube, before_start)  # type: ignore[arg-type]
    await stale.report(RUNNING)
    assert (kube.writes, kube.vdc["status"]["phase"]) == (1, "Degraded")

    agent = Reporter(kube, before_start)  # type: ignore[arg-type]
    await agent.resync()
    await agent.report(RUNNING)
    assert (kube.writes, kube.vdc["status"]["phase"]) == (2, "Running")
    assert kube.events == ["Running"]


async def test_a_groups_agent_writes_over_a_stale_phase_of_its_own_group() -> None:
    kube = FakeKube({"groups": {"rack-b": {"pod": "vdc-q-rack-b", "podIP": "10.244.0.9",
                                           "agentRestarts": 0}}})  # fmt: skip
    agent = reporter(kube, "rack-b")
    await agent.report(RUNNING)
    kube.operator_writes({"groups": {"rack-b": {**RESTARTING, "agentRestarts": 1}}})
    kube.events.clear()
    # Another group's part, or the whole (the operator's merge), changes nothing here.
    kube.operator_writes({"phase": "Degraded", "groups": {"rack-a": {"phase": "Running"}}})
    refresh_due(agent)
    await agent.report(RUNNING)
    part = kube.vdc["status"]["groups"]["rack-b"]
    assert (part["phase"], part["message"]) == ("Running", "1 nodes ready")
    # The operator's fields of the group stay as the operator wrote them.
    assert (part["pod"], part["podIP"], part["agentRestarts"]) == ("vdc-q-rack-b", "10.244.0.9", 1)
    assert kube.events == ["Running"]
    refresh_due(agent)
    await agent.report(RUNNING)
    assert kube.writes == 2


@pytest.mark.parametrize("change", ["deleting", "new generation"])
async def test_no_write_over_a_deletion_or_a_newer_spec(change: str) -> None:
    kube = FakeKube()
    agent = reporter(kube)
    await agent.report(RUNNING)
    if change == "deleting":
        kube.vdc["metadata"]["deletionTimestamp"] = "2026-09-21T14:13:20Z"
        kube.operator_writes({"phase": "Terminating", "message": "removing the pod"})
    else:
        kube.vdc["metadata"]["generation"] = 3
        kube.vdc.setdefault("spec", {})["accel"] = "tcg"
        kube.operator_writes({"phase": "Pending", "message": "the pod is being replaced"})
    refresh_due(agent)
    await agent.report(RUNNING)
    assert kube.writes == 1 and kube.vdc["status"]["phase"] != "Running"
    assert agent.superseded == (change == "new generation")


async def test_a_spec_change_applied_in_place_is_reported_on() -> None:
    """spec.faults changed: the pod carries on, and its status says it saw the change."""
    kube = FakeKube()
    agent = reporter(kube)
    await agent.report(RUNNING)
    kube.vdc["metadata"]["generation"] = 3
    kube.vdc.setdefault("spec", {})["faults"] = [
        {"kind": "machine", "target": "w", "effect": "hang"}
    ]
    refresh_due(agent)
    await agent.report(RUNNING)
    assert not agent.superseded and agent.generation == 3
