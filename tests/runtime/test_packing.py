"""Automatic groups: machines packed into as few pods as fit under a per-pod limit. Pure;
what the operator and the agent make of it is in tests/operator/test_auto_groups.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vdc_runtime import groups, packing
from vdc_runtime.packing import Assignment, Limit, Machine, Namespace
from vdc_runtime.spec import load_text

GIB, MIB = 1 << 30, 1 << 20
# The operator's defaults (Helm runtime.*): 192 MiB and 100m per pod, 64 MiB per QEMU.
OVERHEADS = packing.Overheads(
    pod_memory=192 * MIB, pod_milli=100, node_memory=64 * MIB, cpu_allocation_ratio=10.0
)
LIMIT = Limit(memory=32 * GIB)
RACKS = {"a": [8, 12, 8], "b": [8, 8, 14], "c": [10, 10, 8], "d": [15, 8, 8]}
"""GiB per machine of each rack: each rack fits one 32 GiB pod (overheads included), no two
racks do."""
NETWORKS = ["core", "rack-a", "rack-b", "rack-c", "rack-d"]


def interleaved() -> list[Machine]:
    """12 machines of 8-16 GiB listed as a spec often lists them, by position in the rack
    (a1, b1, c1, d1, a2, ...): on its rack's network first, then the shared core."""
    return [
        Machine(f"{rack}{i + 1}", sizes[i] * GIB, 2, (f"rack-{rack}", "core"))
        for i in range(3)
        for rack, sizes in RACKS.items()
    ]


def pack(
    machines: list[Machine],
    namespaces: list[Namespace] | None = None,
    limit: Limit = LIMIT,
    networks: list[str] = NETWORKS,
) -> Assignment:
    return packing.pack(machines, namespaces or [], limit, OVERHEADS, networks)


def members(found: Assignment) -> dict[str, list[str]]:
    return {g: sorted(n for n, group in found.nodes.items() if group == g) for g in found.groups}


def test_what_a_pod_costs_is_what_its_requests_say() -> None:
    two = packing.Load(1, 256 * MIB, 1) + packing.Load(1, 256 * MIB, 1)
    # As test_builders' requests of the quick start: 2 x (256 + 64) + 192 MiB, 100m + 2/10.
    assert packing.cost(two, OVERHEADS) == packing.Cost(memory=832 * MIB, milli=300)
    # Rounded up as the request is written (whole MiB, whole millicores).
    odd = packing.cost(packing.Load(1, 1000, 3), packing.Overheads(0, 0, 0, 7.0))
    assert odd == packing.Cost(memory=MIB, milli=429)


def test_everything_that_fits_one_pod_is_one_group() -> None:
    found = pack(interleaved()[:3], [Namespace("router", ("core",))])
    assert found.groups == ("auto-1",)
    assert set(found.nodes.values()) == set(found.netns.values()) == {"auto-1"}
    # Nothing at all is one group too (an empty data center still has its pod).
    assert pack([]).groups == ("auto-1",)


def test_rack_mates_stay_together_in_as_few_pods_as_fit() -> None:
    found = pack(interleaved())
    assert members(found) == {
        "auto-1": ["a1", "a2", "a3"],
        "auto-2": ["b1", "b2", "b3"],
        "auto-3": ["c1", "c2", "c3"],
        "auto-4": ["d1", "d2", "d3"],
    }
    # 117 GiB of guests cannot be fewer than 4 pods of 32 GiB.
    assert sum(sum(s) for s in RACKS.values()) == 117
    # Only the core is stretched: each rack's network stays in its pod.
    dc = _dc_of(found)
    assert [s.network for s in groups.layout(dc).stretched] == ["core"]
    # Each pod is under the limit, as counted by what its requests will be.
    for group in found.groups:
        load = sum((m.load for m in interleaved() if found.nodes[m.name] == group), packing.Load())
        assert packing.cost(load, OVERHEADS).memory <= 32 * GIB


def test_first_fit_fills_earlier_pods_and_keeps_input_order_within_a_network() -> None:
    machines = [
        Machine("big-a", 20 * GIB, 1, ("rack-a",)),
        Machine("big-b", 20 * GIB, 1, ("rack-b",)),
        Machine("small-c", 8 * GIB, 1, ("rack-c",)),
        Machine("loner", 4 * GIB, 1, ()),
    ]
    found = pack(machines)
    # small-c goes back into the first pod with room; a machine without interfaces comes
    # last and fills a gap too.
    assert members(found) == {"auto-1": ["big-a", "small-c"], "auto-2": ["big-b", "loner"]}
    # Groups are numbered in the order their pods were opened, names kept in input order.
    assert list(found.nodes) == ["big-a", "big-b", "small-c", "loner"]


def test_cpu_limits_too_and_both_must_hold() -> None:
    machines = [Machine(f"m{i}", 1 * GIB, 8, ("rack-a",)) for i in range(4)]
    # 100m + 8 vCPUs at ratio 10 = 900m per machine alone; two are 1700m.
    assert len(pack(machines, limit=Limit(milli=1000)).groups) == 4
    assert len(pack(machines, limit=Limit(milli=2000)).groups) == 2
    assert len(pack(machines, limit=Limit(memory=3 * GIB, milli=10_000)).groups) == 2


def test_a_machine_over_the_limit_alone_is_named_with_the_limit() -> None:
    machines = [*interleaved(), Machine("huge", 40 * GIB, 4, ("rack-a",))]
    with pytest.raises(packing.TooBig) as info:
        pack(machines)
    assert [name for name, _ in info.value.machines] == ["huge"]
    assert str(info.value) == (
        "node 'huge' needs memory 41216Mi, cpu 500m in a pod of its own, more than the"
        " per-pod limit (memory 32Gi): it can never be scheduled"
    )
    # Exactly the limit fits: 31.5 GiB of guest, 64 MiB of QEMU and 192 MiB of agent.
    exact = Machine("exact", 32 * GIB - 256 * MIB, 1, ())
    assert pack([exact]).groups == ("auto-1",)
    with pytest.raises(packing.TooBig):
        pack([Machine("over", 32 * GIB - 255 * MIB, 1, ())])


def test_namespaces_join_most_of_their_machines() -> None:
    namespaces = [
        Namespace("tor-b", ("core", "rack-b")),  # core's machines are everywhere, b's in 2
        Namespace("spine", ("core",)),  # 3 machines in each pod: the lowest wins
        Namespace("island", ("nowhere",)),  # no machine: the first pod
        Namespace("edge", ("rack-d", "rack-c")),  # 3 and 3: the lowest of their pods
    ]
    found = pack(interleaved(), namespaces)
    assert found.netns == {"tor-b": "auto-2", "spine": "auto-1", "island": "auto-1",
                           "edge": "auto-3"}  # fmt: skip


def test_the_same_input_gives_the_same_answer_in_every_process() -> None:
    namespaces = [Namespace("spine", ("core",)), Namespace("tor-c", ("rack-c",))]
    first = pack(interleaved(), namespaces)
    assert pack(interleaved(), namespaces) == first
    # String hashing differs between processes: nothing may depend on set order.
    code = (
        "from tests.runtime.test_packing import *;"
        "print(pack(interleaved(), [Namespace('spine', ('core',)),"
        " Namespace('tor-c', ('rack-c',))]).to_json())"
    )
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, cwd=root, check=True)  # fmt: skip
        outputs.add(done.stdout.strip())
    assert outputs == {first.to_json()}


def test_the_assignment_travels_as_json() -> None:
    found = pack(interleaved(), [Namespace("spine", ("core",))])
    text = found.to_json()
    assert text.startswith('{"auto-1":{"nodes":["a1","a2","a3"],"networkNamespaces":["spine"]}')
    assert Assignment.from_json(text) == found
    for bad, says in [
        ("[]", "object of groups"),
        ("{", "not JSON"),
        ('{"auto-1": {"nodes": "a1"}}', "list of names"),
        ('{"auto-1": {"machines": []}}', "expected nodes"),
        ('{"auto-1": {"nodes": ["a1"]}, "auto-2": {"nodes": ["a1"]}}', "a1 is in groups"),
    ]:
        with pytest.raises(ValueError, match=says):
            Assignment.from_json(bad)
    assert [packing.auto_number(g) for g in ("auto-1", "auto-12", "auto-0", "rack-a")] == [
        1, 12, None, None]  # fmt: skip


def _dc_of(found: Assignment):
    networks = "".join(f"kind: Network\nname: {n}\ntype: internal\n---\n" for n in NETWORKS)
    nodes = "---\n".join(
        f"kind: Node\nname: {m.name}\ncpu: 1\ninterfaces: [{', '.join(m.networks)}]\n"
        for m in interleaved()
    )
    dc = load_text(networks + nodes, source="dc.yml", base_dir=Path("."))
    return packing.apply(dc, found)


def test_applied_to_a_data_center_it_declares_the_groups() -> None:
    found = pack(interleaved())
    dc = _dc_of(found)
    assert [g.name for g in dc.groups] == ["auto-1", "auto-2", "auto-3", "auto-4"]
    assert groups.layout(dc).nodes["auto-3"] == ("c1", "c2", "c3")
    assert groups.part(dc, "auto-2").summary() == "2 networks, 0 network namespaces, 3 nodes," \
        " 0 images, 0 device classes, 4 groups"  # fmt: skip
    # An assignment made for another spec is refused, saying how.
    other = Assignment(("auto-1",), {"a1": "auto-1", "zz": "auto-2"}, {"r": "auto-1"})
    with pytest.raises(ValueError) as info:
        packing.apply(dc, other)
    message = str(info.value)
    assert "no group for node(s) b1, c1, d1, a2," in message
    assert "no node(s) zz in the spec" in message
    assert "no network namespace(s) r in the spec" in message
    assert "undeclared group(s) auto-2" in message


def test_where_the_machines_are_reported_gives_the_namespaces_back() -> None:
    """`kubectl vdc graph` knows the machines' groups from the status, not the limit: the
    namespaces follow by the packing's own rule, to the same groups."""
    tors = [Namespace(f"tor-{r}", ("core", f"rack-{r}")) for r in RACKS]
    found = pack(interleaved(), tors)
    text = "".join(f"kind: Network\nname: {n}\ntype: internal\n---\n" for n in NETWORKS)
    text += "".join(
        f"kind: NetworkNamespace\nname: {ns.name}\ninterfaces: [{{network: core}},"
        f" {{network: {ns.networks[1]}}}]\n---\n"
        for ns in tors
    )
    text += "---\n".join(
        f"kind: Node\nname: {m.name}\ncpu: 1\ninterfaces: [{', '.join(m.networks)}]\n"
        for m in interleaved()
    )
    dc = load_text(text, source="dc.yml", base_dir=Path("."))
    assert packing.reported(dc, found.nodes) == found
    with pytest.raises(ValueError, match="no group reported for node"):
        packing.reported(dc, {"a1": "auto-1"})
    with pytest.raises(ValueError, match="not automatic group"):
        packing.reported(dc, {**found.nodes, "a1": "rack-a"})
