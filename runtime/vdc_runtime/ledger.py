"""The record of everything a run created, kept in its run directory.

Each object is written down *before* it is created, one JSON line at a time, so the ledger
of a run that was killed at any point still names everything it may have left behind.
Teardown (normal exit, failed start-up, or `--force` after a SIGKILL) replays it.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any

LEDGER_NAME = "vdc-ledger.jsonl"
LOCK_NAME = "vdc.lock"


class RunDirBusy(RuntimeError):
    pass


class Ledger:
    def __init__(self, run_dir: Path, entries: list[dict[str, Any]] | None = None) -> None:
        """`entries`: an earlier run's (`load`), when this run adopts what it made; the
        file goes on from them."""
        self.path = run_dir / LEDGER_NAME
        self.entries: list[dict[str, Any]] = list(entries or [])
        self._lock = threading.Lock()  # fabric steps record from worker threads
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the run

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        entry = {"kind": kind, **fields}
        with self._lock:
            self.entries.append(entry)
            # A flush is enough: what reaches the kernel survives a SIGKILL of this process.
            self._file.write(json.dumps(entry, default=str) + "\n")
            self._file.flush()
        return entry

    def close(self, *, remove: bool) -> None:
        self._file.close()
        if remove:
            self.path.unlink(missing_ok=True)

    @staticmethod
    def load(run_dir: Path) -> list[dict[str, Any]]:
        path = run_dir / LEDGER_NAME
        entries = []
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill: the object it named was not made yet
        return entries


class RunLock:
    """Exclusive use of a run directory for the life of this process."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirBusy(
                f"run directory {self.path.parent} is in use by another vdc run (pid {holder}); "
                "give this run its own --run-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
