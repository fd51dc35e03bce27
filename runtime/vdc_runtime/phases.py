"""A data center run's lifecycle, spelled once for the run, its API, the agent's status
and metrics (a module of its own so that the operator's CRD generation can import it
without the runtime)."""

from __future__ import annotations

from enum import StrEnum


class RunPhase(StrEnum):
    PENDING = "pending"
    BUILDING = "building"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


__all__ = ["RunPhase"]
