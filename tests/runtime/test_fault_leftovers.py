"""The ledger's record of what a run's faults changed, as an adopting run reads it."""

from __future__ import annotations

from vdc_runtime.faults import leftovers


def test_pending_are_the_uncleared_undos_latest_first() -> None:
    entries = [
        {"kind": "netns", "name": "a"},
        {"kind": "fault-undo", "fault": "r1-1", "argv": ["tc", "qdisc", "del"]},
        {"kind": "fault-undo", "fault": "r1-2", "node": "n", "qmp": "cont"},
        {"kind": "fault-undo", "fault": "r1-3", "nft": "delete chain inet t f3_bmc\n"},
        {"kind": "fault-cleared", "fault": "r1-2"},
        {"kind": "fault-undo", "fault": "r1-4", "argv": ["ip", "link", "set", "up"]},
    ]
    pending = leftovers.pending(entries)
    assert [e["fault"] for e in pending] == ["r1-4", "r1-3", "r1-1"]
    assert [e["fault"] for e in leftovers.in_kernel(pending)] == ["r1-4", "r1-3", "r1-1"]
    assert leftovers.in_machines(pending) == []
    assert leftovers.without_records(entries) == [{"kind": "netns", "name": "a"}]


def test_a_cleared_fault_leaves_nothing_pending() -> None:
    entries = [
        {"kind": "fault-undo", "fault": "r1-1", "node": "n", "qmp": "set_link"},
        {"kind": "fault-cleared", "fault": "r1-1"},
    ]
    assert leftovers.pending(entries) == []
