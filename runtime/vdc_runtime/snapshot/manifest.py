"""What a snapshot holds, written last into its directory as `manifest.json`: the spec the
data center was built from, each machine's state and files (with their checksums), and what
could not be captured.

Pure: reading and writing the manifest, and whether a spec can take a snapshot back
(`layout_differences`), need no file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar, get_args

from vdc_runtime import groups, runstate
from vdc_runtime.spec import DataCenter

VERSION = 2
"""2: every machine has a CD drive (virtual media), so a QEMU reads no state saved by one
of version 1 (whose machines had none): refused by the version, not by QEMU's own error."""
MANIFEST_NAME = "manifest.json"

Runstate = Literal["running", "paused", "shutdown"]
RUNSTATES: tuple[str, ...] = get_args(Runstate)

NAME_RULE = "1 to 63 lowercase letters, digits, '-', '.' and '_', starting with a letter or a digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

NOT_LAYOUT = frozenset({"restart", "readiness", "bmc", "group"})
"""Fields of a node that a restored machine does not depend on: its restart policy and
readiness rule are the runtime's, its BMC is a process of the runtime built afresh (the
address a guest announced is kept in the snapshot), and its group only says which host runs
it (a snapshot holds one group's nodes: one moved to another group reads as removed)."""
NOT_VOLUME_LAYOUT = frozenset({"vg", "device-class"})
"""Fields of a volume that the guest never sees: `vg` is ignored, and the device class only
says in which host directory the volume's file lives; its content comes from the
snapshot."""


def check_name(name: str) -> str:
    """`name` if it can name a snapshot (its directory, and a DNS label once published),
    else ValueError naming the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"snapshot name {name!r}: use {NAME_RULE}")
    return name


def check_relative(path: str) -> str:
    """`path` if it names a file inside a snapshot's directory (relative, posix, no `..`,
    `.` or empty component), else ValueError saying why: a manifest or an archive must
    never reach outside it."""
    if not isinstance(path, str) or not path:
        raise ValueError(f"file path {path!r}: empty")
    if "\\" in path or "\0" in path:
        raise ValueError(f"file path {path!r}: backslash or NUL")
    if path.startswith("/"):
        raise ValueError(f"file path {path!r}: absolute; paths are relative to the snapshot")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"file path {path!r}: has an empty, '.' or '..' component")
    return path


@dataclass(frozen=True)
class FileEntry:
    path: str
    """Relative to the snapshot's directory, posix."""
    sha256: str
    """Of the file as it lies in the snapshot (compressed, when it is)."""
    size: int

    def __post_init__(self) -> None:
        check_relative(self.path)
        if self.path == MANIFEST_NAME:
            raise ValueError(f"file path {self.path!r}: the manifest's own name")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise ValueError(f"{self.path}: sha256 {self.sha256!r} is not 64 lowercase hex digits")
        if _not_int(self.size) or self.size < 0:
            raise ValueError(f"{self.path}: size {self.size!r} is not a byte count")


@dataclass(frozen=True)
class MachineImage:
    """One machine as it was captured."""

    name: str
    runstate: Runstate
    """QEMU's run state when saved: a restored machine is left the same."""
    files: dict[str, FileEntry]
    """Role -> file: "state" (RAM and devices), "volume:NAME", "nvram", "tpm"."""
    power: str
    """The power state the API and the BMC reported."""
    boot_override: dict[str, Any] | None = None
    """A boot override set through the BMC and not yet used."""
    bmc_address: str | None = None
    """The BMC address the guest announced: a restored guest does not announce it again."""
    ready_at: float | None = None
    boots: int = 0
    restarts: int = 0
    secure_boot: bool | None = None
    """Whether its firmware was OVMF's Secure Boot build (None: as its spec says): the
    restored machine runs the same one, which its saved state needs."""
    secure_boot_next: bool | None = None
    """Secure Boot as set through the BMC for its next boot (None: as its spec says)."""


@dataclass(frozen=True)
class Manifest:
    version: int
    name: str
    created_at: float
    """Seconds since the epoch, when the machines were paused."""
    spec: dict[str, Any]
    """The whole data center as built (`runstate.canonical`)."""
    group: str | None
    """The group the snapshot holds the machines of; None for a run of every group."""
    qemu_version: str
    """A QEMU's migration stream is read by the same or a newer one only."""
    machines: dict[str, MachineImage]
    not_captured: tuple[str, ...] = ()
    """What a restore does not bring back, each said in a line (a hostPath share, ...)."""
    pause_skew_ms: float | None = None
    """How far apart the first and the last machine were paused."""
    duration_s: float | None = None
    """How long the save took, the machines paused to the manifest written."""

    def __post_init__(self) -> None:
        check_name(self.name)
        seen: dict[str, str] = {}
        for machine_name, machine in self.machines.items():
            if machine.name != machine_name:
                raise ValueError(f"machine {machine_name!r} is named {machine.name!r}")
            for role, entry in machine.files.items():
                where = f"{machine_name} {role}"
                if entry.path in seen:
                    raise ValueError(f"{entry.path}: file of both {seen[entry.path]} and {where}")
                seen[entry.path] = where

    def all_files(self) -> list[FileEntry]:
        """Every file of the snapshot but the manifest, machine by machine."""
        return [entry for m in self.machines.values() for entry in m.files.values()]

    @property
    def size(self) -> int:
        """The bytes its files take (as stored: compressed, sparse files at full size)."""
        return sum(entry.size for entry in self.all_files())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """ValueError, saying what is wrong and where, for anything `to_json` did not
        write; a manifest of another version is refused (not guessed at)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"not a snapshot manifest: {exc}") from None
        top = _Reader(data, "manifest")
        version = top.get("version", int)
        if version != VERSION:
            raise ValueError(
                f"manifest version {version} is not supported (this vdc reads version {VERSION})"
            )
        machines = {
            name: _machine(_Reader(m, f"manifest.machines[{name}]"))
            for name, m in top.get("machines", dict).items()
        }
        not_captured = tuple(
            _Reader(line, f"manifest.not_captured[{i}]").value(str)
            for i, line in enumerate(top.get("not_captured", list))
        )
        return top.build(
            cls,
            version=version,
            name=top.get("name", str),
            created_at=top.get("created_at", float),
            spec=top.get("spec", dict),
            group=top.get("group", str, optional=True),
            qemu_version=top.get("qemu_version", str),
            machines=machines,
            not_captured=not_captured,
            pause_skew_ms=top.get("pause_skew_ms", float, optional=True),
            duration_s=top.get("duration_s", float, optional=True),
        )


def _machine(reader: _Reader) -> MachineImage:
    runstate_ = reader.get("runstate", str)
    if runstate_ not in RUNSTATES:
        raise ValueError(f"{reader.where}.runstate: {runstate_!r} is not one of {RUNSTATES}")
    files = {
        role: _file(_Reader(f, f"{reader.where}.files[{role}]"))
        for role, f in reader.get("files", dict).items()
    }
    return reader.build(
        MachineImage,
        name=reader.get("name", str),
        runstate=runstate_,
        files=files,
        power=reader.get("power", str),
        boot_override=reader.get("boot_override", dict, optional=True),
        bmc_address=reader.get("bmc_address", str, optional=True),
        ready_at=reader.get("ready_at", float, optional=True),
        boots=reader.get("boots", int),
        restarts=reader.get("restarts", int),
        # Absent from manifests written before vdc had Secure Boot.
        **{
            key: reader.get(key, bool, optional=True)
            for key in ("secure_boot", "secure_boot_next")
            if key in reader.data
        },
    )


def _file(reader: _Reader) -> FileEntry:
    return reader.build(
        FileEntry,
        path=reader.get("path", str),
        sha256=reader.get("sha256", str),
        size=reader.get("size", int),
    )


_T = TypeVar("_T")


class _Reader:
    """One JSON object of a manifest, read field by field so an error names the field."""

    def __init__(self, data: Any, where: str) -> None:
        self.data = data
        self.where = where

    def value(self, kind: type[_T]) -> _T:
        return _typed(self.data, kind, self.where)

    def get(self, key: str, kind: type[_T], *, optional: bool = False) -> _T:
        if not isinstance(self.data, dict):
            raise ValueError(f"{self.where}: expected an object, got {_kind(self.data)}")
        if key not in self.data:
            raise ValueError(f"{self.where}.{key}: missing")
        value = self.data[key]
        if value is None and optional:
            return None  # type: ignore[return-value]
        return _typed(value, kind, f"{self.where}.{key}")

    def build(self, make: Callable[..., _T], **fields: Any) -> _T:
        """What the dataclasses' own checks refuse (a bad path, a checksum) said where."""
        try:
            return make(**fields)
        except ValueError as exc:
            raise ValueError(f"{self.where}: {exc}") from None


def _typed(value: Any, kind: type[_T], where: str) -> _T:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if kind is int and _not_int(value):
        raise ValueError(f"{where}: expected an integer, got {_kind(value)}")
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {_KINDS[kind]}, got {_kind(value)}")
    return value


_KINDS: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    dict: "an object",
    list: "a list",
}


def _not_int(value: object) -> bool:
    return not isinstance(value, int) or isinstance(value, bool)


def _kind(value: object) -> str:
    return "null" if value is None else json.dumps(value)[:40]


# -- can this spec take the snapshot back? ----------------------------------------------


def layout_differences(manifest: Manifest, dc: DataCenter) -> list[str]:
    """What keeps the snapshot's machines from being restored into `dc`, each as `path:
    old -> new` (`nodes[worker-1].memory: "1G" -> "2G"`); empty when it fits.

    A machine's RAM and device state can only be loaded into the same machine: the same
    devices (NICs with their MACs and networks, disks, TPM, firmware), memory, vCPUs and
    boot. What is built afresh (networks, namespaces, BMCs) may change, and so may what
    the runtime alone uses (restart policy, readiness); nodes are compared by name, in the
    snapshot's group.
    """
    old, new = manifest.spec, runstate.canonical(dc)
    old_nodes = _group_nodes(old, manifest.group)
    new_nodes = _group_nodes(new, manifest.group)
    found = runstate.differences(
        [_layout(n) for n in _by_name(old_nodes)],
        [_layout(n) for n in _by_name(new_nodes)],
        "nodes",
    )
    # A copy-on-write volume is an overlay of its image: that image must stay the same.
    used = {name for nodes in (old_nodes, new_nodes) for name in _overlay_images(nodes)}
    old_images = [i for i in _by_name(_list(old, "images")) if i.get("name") in used]
    new_images = [i for i in _by_name(_list(new, "images")) if i.get("name") in used]
    return found + runstate.differences(old_images, new_images, "images")


def _group_nodes(spec: Mapping[str, Any], group: str | None) -> list[dict[str, Any]]:
    nodes = _list(spec, "nodes")
    if group is None:
        return nodes
    return [n for n in nodes if groups.group_of(n.get("group")) == group]


def _list(spec: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    items = spec.get(key) or []
    return [i for i in items if isinstance(i, dict)]


def _by_name(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted by name, so that nodes listed in another order are not a difference (a
    node's interfaces and volumes keep their order: it is the guest's)."""
    return sorted(items, key=lambda i: str(i.get("name")))


def _layout(node: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in node.items() if k not in NOT_LAYOUT}
    volumes = kept.get("volumes")
    if isinstance(volumes, list):
        kept["volumes"] = [
            {k: v for k, v in vol.items() if k not in NOT_VOLUME_LAYOUT}
            if isinstance(vol, dict)
            else vol
            for vol in volumes
        ]
    return kept


def _overlay_images(nodes: list[dict[str, Any]]) -> set[str]:
    return {
        vol["image"]
        for node in nodes
        for vol in node.get("volumes") or []
        if isinstance(vol, dict) and vol.get("kind") == "image" and vol.get("copy-on-write")
    }


__all__ = [
    "MANIFEST_NAME",
    "NAME_RULE",
    "NOT_LAYOUT",
    "NOT_VOLUME_LAYOUT",
    "RUNSTATES",
    "VERSION",
    "FileEntry",
    "MachineImage",
    "Manifest",
    "Runstate",
    "check_name",
    "check_relative",
    "layout_differences",
]
