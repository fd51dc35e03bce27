"""The agent's share of VirtualDataCenterSnapshots: save this pod's machines when one of its
VDC appears, report it in the snapshot's status, and delete the files of snapshots that are
deleted.

The operator labels each snapshot with its source and says which pods (parts) must save
(`resource.snapshots`); this agent watches its VDC's, and answers for its own part only:
`status.parts.<part>`, a merge patch of its own key. A part left Saving by an agent that was
restarted halfway is reported Failed: the save died with that agent (its partial files are
removed by the next save, `SnapshotStore.clean_partials`).

Files are kept under the snapshot's uid, not its name: a snapshot deleted and made again
under the same name is another snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdc_runtime.agent.kube import Gone, Kube, KubeError, keep_watching
from vdc_runtime.agent.status import Event
from vdc_runtime.resource import snapshots as api
from vdc_runtime.resource.status import timestamp

if TYPE_CHECKING:
    from vdc_runtime.datacenter import DataCenterRun

log = logging.getLogger("vdc.agent")


def wanted(snapshot: dict[str, Any], part: str, claim: str | None) -> bool:
    """Whether this part of `snapshot` is this agent's to save now."""
    status = snapshot.get("status") or {}
    return (
        status.get("phase") in (api.Phase.PENDING, api.Phase.SAVING)
        and claim is not None
        and status.get("claimName") == claim
        and part in (status.get("expectedParts") or [])
        and part not in (status.get("parts") or {})
    )


def left_saving(snapshot: dict[str, Any], part: str) -> bool:
    """This part was being saved by an earlier agent of this pod."""
    mine = ((snapshot.get("status") or {}).get("parts") or {}).get(part) or {}
    return mine.get("phase") == api.Phase.SAVING


def store_name(snapshot: dict[str, Any]) -> str:
    return str(snapshot["metadata"]["uid"])


def tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


class SnapshotTaker:
    def __init__(
        self, kube: Kube, run: DataCenterRun, vdc: str, part: str, claim: str | None
    ) -> None:
        self.kube = kube
        self.run = run
        self.vdc = vdc
        self.part = part
        self.claim = claim
        self.handled: set[str] = set()
        """Snapshots this agent has saved its part of (or is saving): the watch still
        brings the versions it wrote before, which must not look like work."""

    async def follow(self) -> None:
        """List, then watch, for as long as the agent runs."""

        async def read() -> str:
            listing = await self.kube.list_snapshots()
            items = listing.get("items") or []
            await asyncio.to_thread(self._prune, {store_name(s) for s in items})
            for snapshot in items:
                await self._consider(snapshot)
            return str(listing["metadata"]["resourceVersion"])

        async def handle(kind: str, snapshot: dict[str, Any]) -> None:
            if kind == "DELETED":
                await asyncio.to_thread(self._delete, store_name(snapshot))
            else:
                await self._consider(snapshot)

        await keep_watching(read, self.kube.watch_snapshots, handle, "snapshots")

    async def _consider(self, snapshot: dict[str, Any]) -> None:
        name = snapshot["metadata"]["name"]
        if store_name(snapshot) in self.handled:
            return
        if left_saving(snapshot, self.part):
            await self._report(snapshot, {
                "phase": api.Phase.FAILED,
                "message": "the agent was restarted during the save",
            })  # fmt: skip
            return
        if wanted(snapshot, self.part, self.claim):
            self.handled.add(store_name(snapshot))
            await self._save(snapshot)
        elif not (snapshot.get("status") or {}).get("claimName"):
            log.debug("snapshot %s: not admitted by the operator yet", name)

    async def _save(self, snapshot: dict[str, Any]) -> None:
        from vdc_runtime.capture import CaptureError

        name = snapshot["metadata"]["name"]
        stored = store_name(snapshot)
        path = str(api.part_dir(self.vdc, self.part) / stored)
        started = time.time()
        log.info("snapshot %s: saving this pod's machines (%s)", name, path)
        if not await self._report(snapshot, {
            "phase": api.Phase.SAVING, "path": path, "pausedAt": timestamp(started),
        }):  # fmt: skip
            return
        try:
            manifest = await self.run.snapshot(stored)
        except (CaptureError, OSError, ValueError) as exc:
            log.error("snapshot %s: %s", name, exc)
            await self._report(snapshot, {"phase": api.Phase.FAILED, "message": str(exc)[:1024]})
            await self._event(snapshot, Event("SaveFailed", str(exc)[:1024], "Warning"))
            return
        size = await asyncio.to_thread(tree_size, self.run.snapshots.root / stored)
        seconds = round(manifest.duration_s or (time.time() - started), 2)
        done = {
            "phase": api.Phase.READY, "path": path, "sizeBytes": size, "seconds": seconds,
            "machines": len(manifest.machines), "pausedAt": timestamp(manifest.created_at),
        }  # fmt: skip
        log.info("snapshot %s: saved %d machines, %s in %.1f s", name,
                 len(manifest.machines), api.human_size(size), seconds)  # fmt: skip
        await self._report(snapshot, done)
        message = (f"{self.part}: {len(manifest.machines)} machines, {api.human_size(size)},"
                   f" in {seconds} s")  # fmt: skip
        await self._event(snapshot, Event("PartSaved", message, "Normal"))

    async def _report(self, snapshot: dict[str, Any], part: dict[str, Any]) -> bool:
        """Write this part's status; False if the snapshot is gone."""
        name = snapshot["metadata"]["name"]
        try:
            await self.kube.patch_snapshot_status(name, {"parts": {self.part: part}})
        except Gone:
            log.info("snapshot %s was deleted", name)
            return False
        except KubeError as exc:
            log.warning("snapshot %s: %s", name, exc)
        return True

    async def _event(self, snapshot: dict[str, Any], event: Event) -> None:
        with contextlib.suppress(KubeError):
            await self.kube.post_event(snapshot, event)

    def _delete(self, stored: str) -> None:
        store = self.run.snapshots
        if (store.root / stored).is_dir():
            log.info("snapshot %s deleted: removing its files", stored)
            store.delete(stored)

    def _prune(self, alive: set[str]) -> None:
        """The files of snapshots deleted while no agent of this VDC watched."""
        store = self.run.snapshots
        for manifest in store.list():
            if manifest.name not in alive:
                self._delete(manifest.name)


__all__ = ["SnapshotTaker", "left_saving", "store_name", "wanted"]
