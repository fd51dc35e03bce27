"""How a run is asked for, and how its start-up fails: shared by the data center and its
parts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class StartupError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunOptions:
    run_dir: Path = Path("/run/vdc")
    data_dir: Path = Path("/var/lib/vdc")
    cache_dir: Path = Path("/var/cache/vdc")
    force: bool = False
    accel: str = "auto"  # auto / kvm / tcg
    # Where apps and init-scripts run, so relative paths in their commands work as in
    # Placemat, which ran everything from the first YAML file's folder.
    workdir: Path | None = None
    recreate_volumes: bool = False

    @property
    def log_dir(self) -> Path:
        """Console logs and apps' output, kept across runs like the volumes."""
        return self.data_dir / "logs"


__all__ = ["RunOptions", "StartupError"]
