"""Automatic groups: a data center's machines packed into as few pods as fit under a
per-pod limit (`spec.placement.groups: auto`).

What a pod costs is what its requests say: each machine's guest RAM plus QEMU's overhead,
its vCPUs over the CPU allocation ratio, and once per pod the agent's own overhead
(`cost`, which the operator's requests use too, so a packed pod asks for exactly what
the packing counted).

The algorithm, first fit over a stable order:

1. Machines are ordered by the first network of their interfaces, in the spec's order of
   networks; machines on the same first network (rack mates: a leaf's servers, a boot
   server's clients) keep their spec order and end up next to each other, so they land in
   the same pod and fewer networks are stretched between pods. Machines without
   interfaces come last.
2. Each machine goes into the first pod opened so far that it still fits in, else a new
   pod is opened. A machine that does not fit even in a pod of its own can never be
   scheduled: that is an error naming it and the limit.
3. Each network namespace (a router, a boot server's netns; it costs nothing of its own)
   goes to the pod holding most of the machines on its networks, counted per network (a
   machine on two of them counts twice), ties to the lowest-numbered pod, and to the
   first pod when no machine shares a network with it.

Pods are the groups `auto-1`, `auto-2`, ... in the order they were opened. Nothing here
depends on anything but the arguments (no set or dict iteration order of unordered
input), so the operator and anyone repeating the computation get the same answer.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vdc_runtime.spec import DataCenter, Group

MIB = 1 << 20
AUTO_PREFIX = "auto-"
_AUTO_NAME = re.compile(rf"{AUTO_PREFIX}([1-9][0-9]*)")


@dataclass(frozen=True)
class Overheads:
    """What a pod requests besides its guests (the operator's settings, Helm `runtime.*`)."""

    pod_memory: int
    """Bytes for the agent, once per pod."""
    pod_milli: int
    """Millicores for the agent, once per pod."""
    node_memory: int
    """Bytes per QEMU beyond its guest's RAM."""
    cpu_allocation_ratio: float
    """vCPUs per requested CPU."""


@dataclass(frozen=True)
class Load:
    """What some machines add up to."""

    machines: int = 0
    memory: int = 0
    """Guest RAM, bytes."""
    vcpus: int = 0

    def __add__(self, other: Load) -> Load:
        return Load(
            self.machines + other.machines, self.memory + other.memory, self.vcpus + other.vcpus
        )


@dataclass(frozen=True)
class Cost:
    """A pod's requests."""

    memory: int
    """Bytes, a whole number of MiB (as the request is written)."""
    milli: int


def cost(load: Load, overheads: Overheads) -> Cost:
    """The requests of a pod running these machines."""
    memory = overheads.pod_memory + load.memory + load.machines * overheads.node_memory
    milli = overheads.pod_milli + math.ceil(load.vcpus * 1000 / overheads.cpu_allocation_ratio)
    return Cost(memory=-(-memory // MIB) * MIB, milli=milli)


def memory_text(n_bytes: int) -> str:
    """Bytes as a Kubernetes quantity, in the largest binary unit that is exact."""
    for unit, suffix in ((1 << 40, "Ti"), (1 << 30, "Gi"), (MIB, "Mi"), (1 << 10, "Ki")):
        if n_bytes % unit == 0 and n_bytes:
            return f"{n_bytes // unit}{suffix}"
    return str(n_bytes)


def cpu_text(milli: int) -> str:
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


@dataclass(frozen=True)
class Limit:
    """The most one pod may request; None: no limit on that resource."""

    memory: int | None = None
    """Bytes."""
    milli: int | None = None

    def admits(self, found: Cost) -> bool:
        return (self.memory is None or found.memory <= self.memory) and (
            self.milli is None or found.milli <= self.milli
        )

    def __str__(self) -> str:
        parts = []
        if self.memory is not None:
            parts.append(f"memory {memory_text(self.memory)}")
        if self.milli is not None:
            parts.append(f"cpu {cpu_text(self.milli)}")
        return ", ".join(parts) or "none"


@dataclass(frozen=True)
class Machine:
    name: str
    memory: int
    """Guest RAM, bytes."""
    vcpus: int
    networks: tuple[str, ...]
    """The networks of its interfaces, in their order."""

    @property
    def load(self) -> Load:
        return Load(1, self.memory, self.vcpus)


@dataclass(frozen=True)
class Namespace:
    name: str
    networks: tuple[str, ...]


class TooBig(ValueError):
    """Machines that do not fit under the limit even alone in a pod."""

    def __init__(self, machines: Sequence[tuple[str, Cost]], limit: Limit) -> None:
        self.machines = tuple(machines)
        self.limit = limit
        super().__init__("; ".join(self.message(name) for name, _ in self.machines))

    def message(self, name: str) -> str:
        found = dict(self.machines)[name]
        return (
            f"node '{name}' needs memory {memory_text(found.memory)}, cpu"
            f" {cpu_text(found.milli)} in a pod of its own, more than the per-pod limit"
            f" ({self.limit}): it can never be scheduled"
        )


@dataclass(frozen=True)
class Assignment:
    """Each node's and network namespace's group."""

    groups: tuple[str, ...]
    nodes: Mapping[str, str]
    netns: Mapping[str, str]

    def to_json(self) -> str:
        """`{"auto-1": {"nodes": [...], "networkNamespaces": [...]}, ...}`: compact, and
        readable in `kubectl describe pod`."""
        return json.dumps(
            {
                group: {
                    "nodes": [n for n, g in self.nodes.items() if g == group],
                    "networkNamespaces": [n for n, g in self.netns.items() if g == group],
                }
                for group in self.groups
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Assignment:
        """What `to_json` wrote; ValueError for anything else."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or not data:
            raise ValueError("expected an object of groups")
        nodes: dict[str, str] = {}
        netns: dict[str, str] = {}
        for group, members in data.items():
            if not isinstance(members, dict) or set(members) - {"nodes", "networkNamespaces"}:
                raise ValueError(f"group {group}: expected nodes and networkNamespaces")
            for key, found in (("nodes", nodes), ("networkNamespaces", netns)):
                names = members.get(key, [])
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError(f"group {group}: {key} must be a list of names")
                for name in names:
                    if name in found:
                        raise ValueError(f"{name} is in groups {found[name]} and {group}")
                    found[name] = group
        return cls(tuple(data), nodes, netns)


def auto_name(index: int) -> str:
    """The group of the `index`th pod opened (from 0)."""
    return f"{AUTO_PREFIX}{index + 1}"


def auto_number(group: str) -> int | None:
    """`auto-3` -> 3; None for a name that is not an automatic group's."""
    match = _AUTO_NAME.fullmatch(group)
    return int(match.group(1)) if match else None


def pack(
    machines: Sequence[Machine],
    namespaces: Sequence[Namespace],
    limit: Limit,
    overheads: Overheads,
    network_order: Sequence[str],
) -> Assignment:
    """Every machine and namespace in a group (see the module's docstring); TooBig for the
    machines no pod can hold. A data center that fits one pod is one group, `auto-1`."""
    too_big = [
        (m.name, alone)
        for m in machines
        if not limit.admits(alone := cost(m.load, overheads))
    ]  # fmt: skip
    if too_big:
        raise TooBig(too_big, limit)
    rank = {name: i for i, name in enumerate(network_order)}
    last = len(rank)

    def first_network(machine: Machine) -> int:
        return rank.get(machine.networks[0], last) if machine.networks else last + 1

    pods: list[Load] = []
    where: dict[str, int] = {}
    for machine in sorted(machines, key=first_network):  # sorted() is stable
        for index, pod in enumerate(pods):
            if limit.admits(cost(pod + machine.load, overheads)):
                pods[index] = pod + machine.load
                where[machine.name] = index
                break
        else:
            pods.append(machine.load)
            where[machine.name] = len(pods) - 1
    netns = {ns.name: auto_name(_namespace_pod(ns, machines, where)) for ns in namespaces}
    return Assignment(
        groups=tuple(auto_name(i) for i in range(max(len(pods), 1))),
        nodes={m.name: auto_name(where[m.name]) for m in machines},
        netns=netns,
    )


def _namespace_pod(ns: Namespace, machines: Iterable[Machine], where: Mapping[str, int]) -> int:
    """The pod with most machines on the namespace's networks, counted per network (a
    router between a shared core and a rack goes with the rack's machines, not with
    whichever pod comes first on the core); ties to the lowest."""
    counts: dict[int, int] = {}
    for machine in machines:
        shared = len(set(ns.networks).intersection(machine.networks))
        if shared:
            counts[where[machine.name]] = counts.get(where[machine.name], 0) + shared
    if not counts:
        return 0
    return min(counts, key=lambda pod: (-counts[pod], pod))


def reported(dc: DataCenter, nodes: Mapping[str, str]) -> Assignment:
    """The automatic groups of a data center whose machines are in the groups `nodes`
    says (as its agents report them), its namespaces placed by the packing's own rule
    (step 3): what can be known of a packing without its per-pod limit (`kubectl vdc`).
    ValueError when a node is not reported, or in a group that is not an automatic one."""
    missing = [n.name for n in dc.nodes if n.name not in nodes]
    if missing:
        raise ValueError(f"no group reported for node(s) {', '.join(missing)}")
    groups = {nodes[n.name] for n in dc.nodes}
    stray = sorted(g for g in groups if auto_number(g) is None)
    if stray:
        raise ValueError(f"not automatic group(s): {', '.join(stray)}")
    order = sorted(groups, key=lambda g: auto_number(g) or 0)
    machines = [Machine(n.name, 0, n.cpus, tuple(i.network for i in n.interfaces))
                for n in dc.nodes]  # fmt: skip
    where = {n.name: order.index(nodes[n.name]) for n in dc.nodes}
    netns = {
        ns.name: order[_namespace_pod(Namespace(ns.name, tuple(i.network for i in ns.interfaces)),
                                      machines, where)]
        for ns in dc.netns
    }  # fmt: skip
    return Assignment(tuple(order), {n.name: nodes[n.name] for n in dc.nodes}, netns)


def apply(dc: DataCenter, assignment: Assignment) -> DataCenter:
    """The data center with the assignment's groups declared and each member in its own:
    what `groups.layout` then splits. ValueError when the two do not name the same nodes
    and namespaces (the assignment was made for another spec)."""
    problems = []
    for kind, members, assigned in (
        ("node", [n.name for n in dc.nodes], assignment.nodes),
        ("network namespace", [ns.name for ns in dc.netns], assignment.netns),
    ):
        missing = [name for name in members if name not in assigned]
        known = set(members)
        unknown = [name for name in assigned if name not in known]
        if missing:
            problems.append(f"no group for {kind}(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"no {kind}(s) {', '.join(unknown)} in the spec")
    stray = sorted(
        {*assignment.nodes.values(), *assignment.netns.values()} - set(assignment.groups)
    )
    if stray:
        problems.append(f"undeclared group(s) {', '.join(stray)}")
    if problems:
        raise ValueError("; ".join(problems))
    return dc.model_copy(
        update={
            "nodes": [n.model_copy(update={"group": assignment.nodes[n.name]}) for n in dc.nodes],
            "netns": [
                ns.model_copy(update={"group": assignment.netns[ns.name]}) for ns in dc.netns
            ],
            "groups": [Group(name=g) for g in assignment.groups],
        }
    )


__all__ = [
    "AUTO_PREFIX",
    "Assignment",
    "Cost",
    "Limit",
    "Load",
    "Machine",
    "Namespace",
    "Overheads",
    "TooBig",
    "apply",
    "auto_name",
    "auto_number",
    "cost",
    "cpu_text",
    "memory_text",
    "pack",
    "reported",
]
