"""What the agent sees of its run, and the loop that writes it into the VDC's status.

`observe` reads a run's state into plain values; `vdc_runtime.agent.status` turns them into the
status (pure, golden-tested); `Reporter` writes it when it changed, on top of the version
of the object it last saw, so an agent whose spec has been replaced (the operator is
about to replace its pod) stops writing instead of overwriting the newer state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdc_runtime.agent.kube import Conflict, Gone, Kube, KubeError
from vdc_runtime.agent.status import (
    FaultObservation,
    NodeObservation,
    RunnerObservation,
    RunObservation,
    agent_status,
    group_status,
    transitions,
)
from vdc_runtime.faults.manager import describe
from vdc_runtime.nodes.states import MachineState, Power
from vdc_runtime.phases import RunPhase
from vdc_runtime.resource.spec import rebuilt_from
from vdc_runtime.resource.status import CONDITION_TYPES
from vdc_runtime.runner import RunnerPhase

if TYPE_CHECKING:
    from vdc_runtime.datacenter import DataCenterRun

log = logging.getLogger("vdc.agent")

REFRESH_EVERY = 30.0
"""How often the agent re-reads its VDC even when nothing it writes conflicts."""


def observe(
    run: DataCenterRun | None,
    *,
    generation: int,
    pod: str | None,
    failure: str | None = None,
    pod_ip: str | None = None,
    runners: tuple[RunnerObservation, ...] = (),
    keep_until: float | None = None,
    bmc_secret: str | None = None,
    declared: frozenset[int] = frozenset(),
) -> RunObservation:
    """The run's state as plain values (nodes in spec order; ones without a machine yet are
    pending). `failure` is a failure found before the run existed (a bad spec); `pod_ip`
    is where published BMCs answer; `declared`, the faults applied for spec.faults."""
    if run is None:
        return RunObservation(
            phase=RunPhase.FAILED if failure else RunPhase.PENDING, generation=generation,
            failure=failure, pod=pod, runners=runners, keep_until=keep_until,
        )  # fmt: skip
    nodes = []
    for node in run.dc.nodes:
        machine = run.machines.get(node.name)
        if machine is None:
            nodes.append(NodeObservation(node.name, MachineState.PENDING, Power.UNKNOWN, False))
            continue
        endpoint = run.bmc.endpoints.get(node.name) if run.bmc is not None else None
        nodes.append(
            NodeObservation(
                name=node.name,
                state=machine.state,
                power=machine.power,
                ready=machine.ready,
                started_at=machine.started_at,
                restarts=machine.restarts,
                bmc_address=endpoint.address if endpoint is not None else machine.bmc_address,
            )
        )
    phase = run.phase
    if run.failed.is_set() and phase == RunPhase.RUNNING:
        phase = RunPhase.FAILED
    publish = run.dc.bmc.publish if run.dc.bmc is not None else None
    faults = tuple(
        FaultObservation(f.id, f.fault.kind, describe(f.fault), f.id in declared, f.expires_at)
        for f in (run.faults.active.values() if run.faults is not None else ())
    )
    return RunObservation(
        faults=faults,
        bmc_published=(pod_ip, publish.ipmi_port, publish.redfish_port) if publish else None,
        bmc_secret=bmc_secret if run.dc.nodes else None,
        runners=runners,
        keep_until=keep_until,
        phase=phase,
        generation=generation,
        failure=failure or run.failure,
        accel=run.accel,
        accel_reason=run.accel_reason,
        fabric_ready="fabric" in run.timings,
        nodes=tuple(nodes),
        pod=pod,
        networks=len(run.dc.networks),
        namespaces=len(run.dc.netns),
    )


def read_runners(state_dir: Path) -> tuple[RunnerObservation, ...]:
    """The runners' state files (`vdc runner`), by name; unreadable ones are skipped (a
    file is replaced atomically, so a read sees a whole one or none)."""
    found = []
    for path in sorted(state_dir.glob("*.json")):
        try:
            state = json.loads(path.read_text())
            found.append(
                RunnerObservation(
                    name=str(state["name"]),
                    phase=RunnerPhase.read(state["phase"]),
                    job=state.get("job"),
                    result=state.get("result"),
                    ended_at=state.get("ended_at"),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return tuple(found)


class Reporter:
    """Writes the agent's status into its VDC and posts an Event per transition."""

    def __init__(self, kube: Kube, vdc: dict[str, Any], group: str | None = None) -> None:
        self.kube = kube
        self.vdc = vdc
        self.group = group
        """In a VDC of several groups, this agent's: it reports into its own key of
        `status.groups`, and the operator merges the groups into the rest."""
        self.generation: int = vdc["metadata"].get("generation", 0)
        """The spec's generation this agent reports on: it follows changes the agent applies
        in place (spec.faults), not those that replace its pod."""
        self._built_from = rebuilt_from(vdc.get("spec"))
        self.written: dict[str, Any] | None = self._part(vdc)
        self.superseded = False
        self._refreshed = time.monotonic()
        self._failing = False

    def _part(self, vdc: dict[str, Any]) -> dict[str, Any] | None:
        """This agent's part of the VDC's status: the whole, or its group's."""
        status = vdc.get("status") or {}
        if self.group is not None:
            status = (status.get("groups") or {}).get(self.group) or {}
        return status or None

    async def resync(self) -> None:
        """Read the VDC again before the first report, and take its status as the last one
        written: start-up (building, or adopting the machines after a restart) takes a
        while, during which the operator may have written this agent's part (Degraded
        while it restarted), and a report equal to the status read before start-up would
        otherwise never be written over that."""
        try:
            await self._refresh()
        except Gone as exc:
            log.warning("%s; no more status reports", exc)
            self.superseded = True
            return
        except KubeError as exc:
            log.warning("cannot read the VDC again (reporting from the first read): %s", exc)
            return
        if not self.superseded:
            self.written = self._part(self.vdc)

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list((self.written or {}).get("conditions", []))

    def status_of(self, obs: RunObservation) -> dict[str, Any]:
        return agent_status(obs, self.conditions)

    async def report(self, obs: RunObservation) -> None:
        """Write the status for `obs` if it differs from the last one written."""
        if self.superseded:
            return
        try:
            if time.monotonic() - self._refreshed > REFRESH_EVERY:
                await self._refresh()
                if self.superseded:
                    return
            status = self.status_of(obs)
            if status == self.written:
                return
            await self._write(status)
            if self._failing:
                log.info("writing the status works again")
                self._failing = False
        except Gone as exc:
            log.warning("%s; no more status reports", exc)
            self.superseded = True
        except KubeError as exc:
            if not self._failing:
                log.warning("cannot report the status (will retry): %s", exc)
                self._failing = True

    async def _refresh(self) -> None:
        self.vdc = await self.kube.get()
        self._refreshed = time.monotonic()
        generation = self.vdc["metadata"].get("generation", 0)
        if generation != self.generation and rebuilt_from(self.vdc.get("spec")) == self._built_from:
            self.generation = generation  # applied in place: this pod carries on
        if generation != self.generation:
            log.info(
                "the spec changed (generation %s, this pod runs %s): the operator replaces"
                " this pod; no more status reports", generation, self.generation,
            )  # fmt: skip
            self.superseded = True
            return
        # Another writer changed this agent's phase since it last wrote (the operator's
        # AgentRestarting, written after this agent read the VDC): what this agent would
        # report is no longer what the status says, so its next report must be written
        # even if it equals its last one. Not while the VDC is being deleted: the
        # operator's Terminating holds until this agent says it too.
        theirs = self._part(self.vdc)
        deleting = self.vdc["metadata"].get("deletionTimestamp")
        if not deleting and (theirs or {}).get("phase") != (self.written or {}).get("phase"):
            self.written = theirs

    async def _write(self, status: dict[str, Any]) -> None:
        if self.group is not None:
            # Its own key only: nobody else writes there, so no version is needed.
            self.vdc = await self.kube.patch_status(group_status(status, self.group))
            await self._written(status)
            return
        for _ in range(3):
            version = self.vdc["metadata"].get("resourceVersion")
            # A merge patch replaces the whole list: the operator's conditions go along.
            theirs = [
                c
                for c in (self.vdc.get("status") or {}).get("conditions", [])
                if c.get("type") not in CONDITION_TYPES
            ]
            body = {**status, "conditions": [*status.get("conditions", []), *theirs]}
            try:
                self.vdc = await self.kube.patch_status(body, version)
                break
            except Conflict:
                await self._refresh()
                if self.superseded:
                    return
        else:
            raise KubeError("the VDC keeps changing under the status write")
        await self._written(status)

    async def _written(self, status: dict[str, Any]) -> None:
        events = transitions(self.written, status)
        self.written = status
        for event in events:
            try:
                await self.kube.post_event(self.vdc, event)
            except KubeError as exc:
                log.warning("%s", exc)

    async def loop(self, observe_now: Any, every: float = 1.0) -> None:
        """Report what `observe_now()` returns, every `every` seconds, until cancelled."""
        while True:
            await self.report(observe_now())
            await asyncio.sleep(every)
