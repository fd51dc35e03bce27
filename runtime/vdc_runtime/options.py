"""How a run is asked for, and how its start-up fails: shared by the data center and its
parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from vdc_runtime.groups import VXLAN_PORT


class StartupError(RuntimeError):
    pass


@dataclass(frozen=True)
class GroupOptions:
    """Build one group of a data center split in groups (`vdc run --group`), its stretched
    networks tunnelled to the other groups."""

    name: str
    peers: Mapping[str, str] = field(default_factory=dict)
    """Group → its tunnel address."""
    local: str | None = None
    """This group's tunnel address; default: the source address toward its peers."""
    port: int = VXLAN_PORT


@dataclass(frozen=True)
class RunOptions:
    run_dir: Path = Path("/run/vdc")
    data_dir: Path = Path("/var/lib/vdc")
    cache_dir: Path = Path("/var/cache/vdc")
    force: bool = False
    adopt: bool = False
    """Take over what a killed earlier run with this run dir left running (`runstate`)."""
    accel: str = "auto"  # auto / kvm / tcg
    # Where apps and init-scripts run, so relative paths in their commands work as in
    # Placemat, which ran everything from the first YAML file's folder.
    workdir: Path | None = None
    recreate_volumes: bool = False
    group: GroupOptions | None = None
    restore: str | None = None
    """Start the machines from this snapshot instead of booting them."""
    snapshot_dir: Path | None = None
    """Where this run's snapshots are saved (and restored from); default: the data dir's
    `snapshots`. An agent's is its directory of the namespace's snapshot claim."""
    restore_dir: Path | None = None
    """Where the snapshot to restore is, when another run saved it (an agent restoring a
    snapshot of another VDC): read only, its partial saves are that run's to clean."""
    holder: Path | None = None
    """The holder's socket (`vdc_runtime.holder`): it starts the machines and apps, and
    holds the namespaces, so that they outlive this process (an agent in a pod)."""

    @property
    def snapshots(self) -> Path:
        return self.snapshot_dir or self.data_dir / "snapshots"

    @property
    def log_dir(self) -> Path:
        """Console logs and apps' output, kept across runs like the volumes."""
        return self.data_dir / "logs"


__all__ = ["GroupOptions", "RunOptions", "StartupError"]
