"""Saving a running data center's machines into a snapshot, and giving a restored run their
files back (issue 2-6). The store (`snapshot.store`) keeps the files and the manifest;
`nodes.migration` moves each machine's state over QMP; this is the order between them.

A save pauses every machine at once, writes each one's RAM and device state (compressed
as QEMU writes it) and copies its writable disks and UEFI variables while they cannot
change, then lets the machines that ran run on. Whatever fails on the way, the machines
are resumed and no partial snapshot is left: the store renames a complete one into
place only once its manifest is written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vdc_runtime import runstate
from vdc_runtime.nodes import migration
from vdc_runtime.nodes.errors import NodeError
from vdc_runtime.nodes.layout import NodeLayout
from vdc_runtime.nodes.machine import Machine
from vdc_runtime.nodes.states import MachineState
from vdc_runtime.snapshot.manifest import (
    VERSION,
    FileEntry,
    MachineImage,
    Manifest,
    layout_differences,
)
from vdc_runtime.snapshot.store import Partial, SnapshotStore
from vdc_runtime.spec import DataCenter
from vdc_runtime.storage.images import ImageError, copy_image

log = logging.getLogger("vdc.snapshot")
CHUNK = 1 << 20


class CaptureError(RuntimeError):
    pass


def refusals(machines: Iterable[Machine]) -> list[str]:
    """Why these machines cannot be saved whole, before anything is paused. A hostPath
    volume is refused rather than left out: the host directory is not the snapshot's to
    keep, the guest's view of it would not match a restore's, and QEMU refuses to migrate a
    guest that has the 9p share mounted. (A raw volume's device-class is Placemat's LVM
    class, ignored here: the volume is a file like any other, and is captured.)"""
    found = []
    for machine in machines:
        if machine.state != MachineState.RUNNING or machine.control.qmp is None:
            found.append(f"node {machine.name} is {machine.state}")
        for share in machine.layout.shares:
            found.append(f"node {machine.name} shares host directory {share.path} (hostPath)")
    return found


def drive_files(layout: NodeLayout) -> dict[str, Path]:
    """A machine's disks that the guest can change, by the role the manifest gives them."""
    return {f"drive:{d.name}": d.path for d in layout.drives if not d.read_only}


def _pump(read_fd: int, partial: Partial, rel: str, result: dict[str, FileEntry]) -> None:
    """A thread: what QEMU writes into the pipe, compressed into the snapshot."""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe, partial.write_stream(rel) as out:
        while chunk := pipe.read(CHUNK):
            out.write(chunk)
    result[rel] = out.entry


async def _save_machine(machine: Machine, partial: Partial) -> dict[str, FileEntry]:
    rel = f"nodes/{machine.name}/state.zst"
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    result: dict[str, FileEntry] = {}
    pump = threading.Thread(target=_pump, args=(read_fd, partial, rel, result), daemon=True)
    pump.start()
    try:
        await migration.save_state(machine.control, write_fd)
    finally:
        os.close(write_fd)  # QEMU has its own copy, closed when it is done
        await asyncio.to_thread(pump.join)
    if rel not in result:
        raise CaptureError(f"node {machine.name}: its state could not be written")
    files = {"state": result[rel]}
    for role, path in drive_files(machine.layout).items():
        name = role.split(":", 1)[1]
        files[role] = await asyncio.to_thread(
            partial.add_file, f"nodes/{machine.name}/drives/{name}", path
        )
    if machine.layout.nvram is not None and machine.layout.nvram.exists():
        files["nvram"] = await asyncio.to_thread(
            partial.add_file, f"nodes/{machine.name}/nvram.fd", machine.layout.nvram
        )
    return files


async def save(
    store: SnapshotStore,
    name: str,
    machines: Mapping[str, Machine],
    spec: dict[str, Any],
    group: str | None,
    keep_paused: bool = False,
    boot_overrides: Mapping[str, dict[str, str]] | None = None,
) -> Manifest:
    """Snapshot NAME of `machines` (the data center built from `spec`, canonical), with
    the boot overrides their BMCs hold, by machine."""
    problems = refusals(machines.values())
    if problems:
        raise CaptureError("cannot snapshot this data center: " + "; ".join(problems))
    t0 = time.monotonic()
    partial = await asyncio.to_thread(store.begin, name)
    before: dict[str, migration.RunState] = {}
    try:
        version = ""
        if machines:
            qemu = (await next(iter(machines.values())).control.execute("query-version"))["qemu"]
            version = f"{qemu['major']}.{qemu['minor']}.{qemu['micro']}"
        paused_at: list[float] = []

        async def pause(machine: Machine) -> None:
            before[machine.name] = await migration.pause(machine.control)
            paused_at.append(time.monotonic())

        await asyncio.gather(*(pause(m) for m in machines.values()))
        skew = (max(paused_at) - min(paused_at)) * 1000 if paused_at else None
        saved = await asyncio.gather(*(_save_machine(m, partial) for m in machines.values()))
        images = {
            m.name: MachineImage(
                name=m.name,
                runstate=before[m.name],
                files=files,
                power=str(m.power),
                boot_override=(boot_overrides or {}).get(m.name),
                bmc_address=m.bmc_address,
                ready_at=m.ready_at,
                boots=m.boots,
                restarts=m.restarts,
                secure_boot=m.secure_boot if m.layout.nvram is not None else None,
                secure_boot_next=m.secure_boot_next if m.layout.nvram is not None else None,
            )
            for m, files in zip(machines.values(), saved, strict=True)
        }
        manifest = Manifest(
            version=VERSION,
            name=name,
            created_at=time.time(),
            spec=spec,
            group=group,
            qemu_version=version,
            machines=images,
            not_captured=(),
            pause_skew_ms=skew,
            duration_s=round(time.monotonic() - t0, 3),
        )
        await asyncio.to_thread(partial.commit, manifest)
    except BaseException:
        await asyncio.to_thread(partial.abort)
        raise
    finally:
        if not keep_paused:
            await _resume(machines, before)
    log.info(
        "snapshot %s: %d machines in %.1f s (paused within %.0f ms of each other)",
        name, len(machines), time.monotonic() - t0, manifest.pause_skew_ms or 0,
    )  # fmt: skip
    return manifest


async def _resume(machines: Mapping[str, Machine], before: Mapping[str, Any]) -> None:
    async def one(machine: Machine) -> None:
        try:
            await migration.resume(machine.control, before[machine.name])
        except NodeError as exc:
            log.error("snapshot: %s", exc)

    await asyncio.gather(*(one(m) for m in machines.values() if m.name in before))


async def put_back(
    store: SnapshotStore, manifest: Manifest, image: MachineImage, layout: NodeLayout
) -> None:
    """A restored machine's disks and UEFI variables, as saved, where its QEMU opens them
    (as the volumes' own copies are made: each replaced at once, sparse, reflinked where
    the file system can)."""
    drives = drive_files(layout)
    for role, entry in image.files.items():
        if role.startswith("drive:"):
            target = drives.get(role)
            if target is None:
                raise CaptureError(f"node {image.name}: the spec has no writable drive {role[6:]}")
        elif role == "nvram" and layout.nvram is not None:
            target = layout.nvram
        else:
            continue
        try:
            await copy_image(store.path(manifest.name, entry.path), target)
        except ImageError as exc:
            raise CaptureError(f"node {image.name}: {exc}") from exc


def restorable(store: SnapshotStore, name: str, dc: DataCenter, clean: bool = True) -> Manifest:
    """Snapshot NAME, checked whole and against the spec `dc` (the part a run builds);
    CaptureError saying what is wrong, before any machine starts. With `clean`, what a save
    killed halfway left is removed on the way (only in a store this run saves into: a pid
    means nothing in another pod's)."""
    for left in store.clean_partials() if clean else ():
        log.info("removed %s, left by a save that was killed", left)
    try:
        manifest = store.show(name)
    except (OSError, ValueError) as exc:
        raise CaptureError(f"cannot restore snapshot {name}: {exc}") from None
    problems = store.verify(name)
    if problems:
        raise CaptureError(f"snapshot {name} is damaged: " + "; ".join(problems[:10]))
    found = layout_differences(manifest, dc)
    if found:
        raise CaptureError(
            f"snapshot {name} does not fit this spec's machines: {runstate.describe(found)}"
        )
    return manifest


def feed(store: SnapshotStore, name: str, rel: str, fd: int) -> None:
    """A thread: a machine's saved state, decompressed, into the pipe its QEMU reads
    (`fd`, closed at the end: the end of the stream). A QEMU that stops reading (it died,
    or refused the state) ends the feed; its own error says why."""
    with os.fdopen(fd, "wb", buffering=0) as pipe, store.open_stream(name, rel) as state:
        try:
            while chunk := state.read(CHUNK):
                pipe.write(chunk)
        except BrokenPipeError:
            log.debug("snapshot %s: %s: QEMU stopped reading", name, rel)


__all__ = ["CaptureError", "drive_files", "feed", "put_back", "refusals", "restorable", "save"]
