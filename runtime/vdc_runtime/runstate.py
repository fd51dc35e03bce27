"""What a running data center is made of, kept in its run directory beside the ledger, so
that a later `vdc run` can adopt it after this one was killed (issue 2-5): the spec it was
built from, and the processes that run its machines and apps.

The ledger says what to remove; this says what runs and from which spec. A process is
named by its pid and its start time (in clock ticks since boot, from /proc), so a pid the
kernel gave to another process since is never taken for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vdc_runtime.spec import DataCenter

STATE_NAME = "vdc-state.json"
VERSION = 1
SHOWN_DIFFERENCES = 10


@dataclass(frozen=True)
class ProcessRef:
    pid: int
    start: int | None
    """Start time in clock ticks since boot (`procs.process_start_time`)."""


@dataclass(frozen=True)
class NodeRecord:
    qemu: ProcessRef | None = None
    swtpm: ProcessRef | None = None
    restarts: int = 0
    boots: int = 0
    ready_at: float | None = None
    bmc_address: str | None = None
    """The address the guest announced for its BMC (a static one is in the spec)."""
    secure_boot: bool | None = None
    """A UEFI node's firmware: OVMF's Secure Boot build or not (None: as the spec says)."""
    secure_boot_next: bool | None = None
    """Secure Boot as set through the BMC for its next boot (None: as the spec says)."""


@dataclass(frozen=True)
class AppRecord:
    process: ProcessRef | None = None
    restarts: int = 0


@dataclass(frozen=True)
class ForwardRecord:
    """A TCP forward added through the API (`vdc forward add`): served again on adoption."""

    local_port: int
    netns: str
    remote_host: str
    remote_port: int
    bind: str = "127.0.0.1"


@dataclass(frozen=True)
class RunState:
    spec: dict[str, Any]
    """The data center as built (`canonical`)."""
    group: str | None = None
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    apps: dict[str, AppRecord] = field(default_factory=dict)
    """By `netns/app`."""
    forwards: tuple[ForwardRecord, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, **asdict(self)}, sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> RunState:
        """ValueError, saying what is wrong, for anything `to_json` did not write."""
        try:
            data = json.loads(text)
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}, not {VERSION}")
            return cls(
                spec=dict(data["spec"]),
                group=data.get("group"),
                nodes={name: _node(n) for name, n in data.get("nodes", {}).items()},
                apps={name: _app(a) for name, a in data.get("apps", {}).items()},
                forwards=tuple(ForwardRecord(**f) for f in data.get("forwards", [])),
            )
        except (AttributeError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a run state: {exc}") from None


def _process(data: dict[str, Any] | None) -> ProcessRef | None:
    return None if data is None else ProcessRef(int(data["pid"]), data.get("start"))


def _node(data: dict[str, Any]) -> NodeRecord:
    return NodeRecord(
        qemu=_process(data.get("qemu")),
        swtpm=_process(data.get("swtpm")),
        restarts=int(data.get("restarts", 0)),
        boots=int(data.get("boots", 0)),
        ready_at=data.get("ready_at"),
        bmc_address=data.get("bmc_address"),
        secure_boot=data.get("secure_boot"),
        secure_boot_next=data.get("secure_boot_next"),
    )


def _app(data: dict[str, Any]) -> AppRecord:
    return AppRecord(process=_process(data.get("process")), restarts=int(data.get("restarts", 0)))


def canonical(dc: DataCenter) -> dict[str, Any]:
    """The spec as compared between runs: every field, defaults included, as JSON."""
    return dc.canonical()


def save(run_dir: Path, state: RunState) -> None:
    """Replace the state file at once: a run killed while writing leaves the old one."""
    path = run_dir / STATE_NAME
    partial = path.with_name(path.name + ".partial")
    partial.write_text(state.to_json(), encoding="utf-8")
    os.replace(partial, path)


def load(run_dir: Path) -> RunState | None:
    """The state an earlier run left, None when it left none; ValueError naming the file
    when it is not one."""
    path = run_dir / STATE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return RunState.from_json(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def remove(run_dir: Path) -> None:
    (run_dir / STATE_NAME).unlink(missing_ok=True)


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Where two specs (`canonical`) differ, each as `path: old -> new`; lists of named
    items are matched by name, so one node added reads as that, not as every later one
    changed."""
    if isinstance(old, dict) and isinstance(new, dict):
        return _keyed(old, new, lambda key: f"{path}.{key}" if path else str(key))
    if isinstance(old, list) and isinstance(new, list) and _named(old) and _named(new):
        found = _keyed({i["name"]: i for i in old}, {i["name"]: i for i in new},
                       lambda name: f"{path}[{name}]")  # fmt: skip
        if not found and [i["name"] for i in old] != [i["name"] for i in new]:
            found.append(f"{path}: reordered")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new, strict=True))
                for d in differences(a, b, f"{path}[{i}]")]  # fmt: skip
    if old != new:
        return [f"{path}: {_short(old)} -> {_short(new)}"]
    return []


def _keyed(old: dict[Any, Any], new: dict[Any, Any], where: Callable[[Any], str]) -> list[str]:
    found = []
    for key in [*old, *(k for k in new if k not in old)]:
        if key not in new:
            found.append(f"{where(key)}: removed")
        elif key not in old:
            found.append(f"{where(key)}: added")
        else:
            found += differences(old[key], new[key], where(key))
    return found


def _named(items: list[Any]) -> bool:
    names = [i.get("name") for i in items if isinstance(i, dict)]
    return len(names) == len(items) and None not in names and len(set(names)) == len(names)


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(found: list[str]) -> str:
    """The first differences, for a refusal's message."""
    shown = "; ".join(found[:SHOWN_DIFFERENCES])
    more = len(found) - SHOWN_DIFFERENCES
    return shown + (f"; and {more} more" if more > 0 else "")


__all__ = [
    "STATE_NAME",
    "AppRecord",
    "ForwardRecord",
    "NodeRecord",
    "ProcessRef",
    "RunState",
    "canonical",
    "describe",
    "differences",
    "load",
    "remove",
    "save",
]
