"""The states of a machine, spelled once: the API, the status, metrics and the BMCs import
them from here."""

from __future__ import annotations

from enum import StrEnum


class MachineState(StrEnum):
    """The lifecycle of a node's QEMU process."""

    PENDING = "pending"
    """Not created yet (how the agent sees a node before the data center made it)."""
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    """Its QEMU died and `restart: on-failure` is bringing it back."""
    FAILED = "failed"
    STOPPED = "stopped"


class Power(StrEnum):
    """The machine's power as its BMC reports it (Redfish's PowerState spelling)."""

    ON = "On"
    OFF = "Off"
    UNKNOWN = "Unknown"


__all__ = ["MachineState", "Power"]
