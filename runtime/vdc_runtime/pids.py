"""Processes named by pid and start time, read from /proc (standard library only: the
holder's process uses it too, and must import nothing of the runtime's machinery)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses; fields follow the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot: with the pid, it names one process for good."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields is not None else None


def process_started_at(start: int | None) -> float | None:
    """Wall-clock time of a start time in clock ticks since boot (`process_start_time`)."""
    if start is None:
        return None
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) + start / os.sysconf("SC_CLK_TCK")
    return None


def running(pid: int, start: int | None) -> bool:
    """The process runs (not a zombie) and, when `start` is given, is the one started then."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return False
    return start is None or int(fields[19]) == start


__all__ = ["process_start_time", "process_started_at", "running"]
