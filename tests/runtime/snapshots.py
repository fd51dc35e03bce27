"""Snapshots made for tests through the store's own API, without any machine."""

from __future__ import annotations

import os
from pathlib import Path

from vdc_runtime.snapshot import MachineImage, Manifest
from vdc_runtime.snapshot.manifest import VERSION
from vdc_runtime.snapshot.store import SnapshotStore

STATE = b"RAM and devices " * 4096


def make_snapshot(
    store: SnapshotStore, name: str, created_at: float = 1_700_000_000.0, disk: Path | None = None
) -> Manifest:
    """Machine w1 with a compressed state and a sparse disk (made at `disk` when given
    none), machine w2 with an NVRAM file."""
    if disk is None:
        disk = store.root.parent / f"{name}-disk.raw"
        disk.parent.mkdir(parents=True, exist_ok=True)
        with open(disk, "wb") as file:
            file.write(b"boot sector")
            file.seek(8 << 20)
            file.write(b"end")
    with store.begin(name) as partial:
        with partial.write_stream("w1/state.zst") as out:
            out.write(STATE)
        root = partial.add_file("w1/root.raw", disk)
        partial.path("w2/nvram.fd").write_bytes(os.urandom(4096))
        nvram = partial.adopt_file("w2/nvram.fd")
        manifest = Manifest(
            version=VERSION,
            name=name,
            created_at=created_at,
            spec={"nodes": []},
            group=None,
            qemu_version="8.2.2",
            machines={
                "w1": MachineImage(
                    "w1", "running", {"state": out.entry, "volume:root": root}, "On", boots=1
                ),
                "w2": MachineImage("w2", "shutdown", {"nvram": nvram}, "Off"),
            },
            not_captured=("node w1 volume share: hostPath share",),
        )
        partial.commit(manifest)
    return manifest
