"""The run state a killed run leaves for the next one to adopt: written whole or not at
all, read back as written, and a spec that changed since named by its differences."""

from __future__ import annotations

from pathlib import Path

import pytest

from vdc_runtime import runstate
from vdc_runtime.runstate import AppRecord, NodeRecord, ProcessRef, RunState
from vdc_runtime.spec.loader import load_text

SPEC = """\
kind: Network
name: net
type: internal
---
kind: NetworkNamespace
name: router
interfaces:
- network: net
  addresses: [10.0.0.1/24]
---
kind: Node
name: worker-1
cpu: 1
memory: 1G
interfaces: [net]
---
kind: Node
name: worker-2
cpu: 1
memory: 1G
interfaces: [net]
"""


def spec(text: str = SPEC) -> dict[str, object]:
    return runstate.canonical(load_text(text, "dc.yml"))


def test_the_state_reads_back_as_written(tmp_path: Path) -> None:
    state = RunState(
        spec=spec(),
        group="rack-a",
        nodes={
            "worker-1": NodeRecord(
                qemu=ProcessRef(41, 9000),
                swtpm=None,
                restarts=1,
                boots=2,
                ready_at=12.5,
                bmc_address="10.72.16.11",
                secure_boot=True,
                secure_boot_next=False,
            )
        },
        apps={"router/bird": AppRecord(process=ProcessRef(42, None), restarts=2)},
    )
    assert runstate.load(tmp_path) is None
    runstate.save(tmp_path, state)
    assert runstate.load(tmp_path) == state
    assert not list(tmp_path.glob("*.partial"))
    runstate.remove(tmp_path)
    assert runstate.load(tmp_path) is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not a run state"),
        ('{"version": 7, "spec": {}}', "version 7, not 1"),
        ('{"version": 1}', "not a run state"),
        ('{"version": 1, "spec": {}, "nodes": {"n": {"qemu": {"start": 3}}}}', "not a run state"),
    ],
)
def test_a_damaged_state_is_an_error_naming_its_file(
    tmp_path: Path, text: str, message: str
) -> None:
    (tmp_path / runstate.STATE_NAME).write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        runstate.load(tmp_path)
    assert str(tmp_path / runstate.STATE_NAME) in str(info.value)


def test_the_same_spec_has_no_differences() -> None:
    assert runstate.differences(spec(), spec()) == []


def test_differences_name_the_fields_and_the_items_by_name() -> None:
    changed = SPEC.replace("worker-2\ncpu: 1\nmemory: 1G", "worker-2\ncpu: 1\nmemory: 2G")
    assert runstate.differences(spec(), spec(changed)) == ['nodes[worker-2].memory: "1G" -> "2G"']
    added = SPEC + "---\nkind: Node\nname: worker-3\ncpu: 1\ninterfaces: [net]\n"
    assert runstate.differences(spec(), spec(added)) == ["nodes[worker-3]: added"]
    removed = SPEC.split("---\nkind: Node\nname: worker-2")[0]
    assert runstate.differences(spec(), spec(removed)) == ["nodes[worker-2]: removed"]
    moved = SPEC.replace("addresses: [10.0.0.1/24]", "addresses: [10.0.0.9/24]")
    (found,) = runstate.differences(spec(), spec(moved))
    assert found.startswith("netns[router].interfaces[0].addresses[0]: "), found


def test_many_differences_are_cut_short() -> None:
    found = [f"nodes[n{i}]: added" for i in range(13)]
    described = runstate.describe(found)
    assert described.endswith("nodes[n9]: added; and 3 more")
    assert "n10" not in described
