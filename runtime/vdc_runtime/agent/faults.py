"""spec.faults, applied in place: as the agent follows its VDC (a watch, agent.main), it adds
the faults it does not have and clears those no longer listed whenever the list changes,
through the run's FaultManager as `vdc fault add|clear` does. The pod is not replaced (the
operator leaves `faults` out of the pod's hash).

A listed fault is applied once: one that ends by itself (`for`), or is cleared by hand,
is not applied again while it stays listed unchanged; listing it again (removed, then
added) applies it again. Each pod of a VDC of several applies the faults whose every
name (node, namespace) is among its own: a partition between groups is in no pod and is
refused by no one (the README says so).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from vdc_runtime.agent.kube import Kube, KubeError
from vdc_runtime.agent.status import Event
from vdc_runtime.faults import FaultApplyError, FaultError, describe
from vdc_runtime.spec.faults import named

if TYPE_CHECKING:
    from vdc_runtime.datacenter import DataCenterRun

log = logging.getLogger("vdc.agent")


def key(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def own(declared: Iterable[dict[str, Any]], names: set[str]) -> dict[str, dict[str, Any]]:
    """The listed faults this pod applies (every name they give is its own), by key."""
    return {key(body): body for body in declared if set(named(body)) <= names}


class DeclaredFaults:
    def __init__(self, kube: Kube, run: DataCenterRun) -> None:
        self.kube = kube
        self.run = run
        self.names = {n.name for n in run.dc.nodes} | {ns.name for ns in run.dc.netns}
        self.applied: dict[str, int | None] = {}
        """Per listed fault (its key), the id it was applied under; None if refused."""
        self._listed: list[dict[str, Any]] | None = None

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(i for i in self.applied.values() if i is not None)

    async def reconcile(self, declared: list[dict[str, Any]]) -> list[Event]:
        """Bring the active faults in line with `declared` (spec.faults); the events."""
        manager = self.run.faults
        assert manager is not None
        wanted = own(declared, self.names)
        events = []
        for k in [k for k in self.applied if k not in wanted]:
            fault_id = self.applied.pop(k)
            active = manager.active.get(fault_id) if fault_id is not None else None
            if active is not None and await manager.clear(active.id, "removed from spec.faults"):
                message = f"{describe(active.fault)}: removed from spec.faults"
                events.append(Event("FaultCleared", message, "Normal"))
        for k, body in wanted.items():
            if k in self.applied:
                continue
            try:
                active = await manager.add(body)
            except (FaultError, FaultApplyError) as exc:
                self.applied[k] = None
                log.warning("spec.faults: %s", exc)
                events.append(Event("FaultRefused", f"spec.faults: {exc}"[:1024], "Warning"))
                continue
            self.applied[k] = active.id
            message = f"{describe(active.fault)} (spec.faults)"
            events.append(Event("FaultApplied", message, "Normal"))
        return events

    async def changed(self, vdc: dict[str, Any]) -> None:
        """The VDC as it is now (read, or brought by the watch): its faults applied."""
        listed = list((vdc.get("spec") or {}).get("faults") or [])
        if listed == self._listed:
            return
        self._listed = listed
        for event in await self.reconcile(listed):
            with contextlib.suppress(KubeError):
                await self.kube.post_event(vdc, event)


__all__ = ["DeclaredFaults", "key", "own"]
