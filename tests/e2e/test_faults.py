"""spec.faults (issue 2-7): a fault added to a running VirtualDataCenter's spec is applied by
its agent without a new pod, shows in its status and events and in `kubectl vdc fault
list`, and is cleared when removed from the spec; a bad fault is refused at apply."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import Kube
from tests.e2e.lab import console_length, console_match, one_worker, type_line
from tests.e2e.test_operator import NS, plugin, pods_of, vdc, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAME, NODE = "faulttest", "ft-worker-1"
LINK_DOWN = {"kind": "link", "target": f"{NODE}:eth0", "down": True}


@pytest.fixture
def lab(operator: Kube) -> Iterator[Kube]:
    operator.apply(one_worker(NAME, NODE))
    try:
        wait_ready(operator, NAME)
        yield operator
    finally:
        operator.call("delete", "vdc", NAME, "-n", NS, "--wait=true", "--timeout=180s")


def set_faults(kube: Kube, faults: list[dict[str, Any]]) -> None:
    patch = json.dumps({"spec": {"faults": faults}})
    kube.run("patch", "vdc", NAME, "-n", NS, "--type", "merge", "-p", patch)


def carrier(kube: Kube) -> str:
    mark = console_length(kube, NAME, NODE)
    type_line(kube, NAME, NODE, "echo CARRIER-$(cat /sys/class/net/eth0/carrier)-END")
    return console_match(kube, NAME, NODE, r"CARRIER-(\d)-END", mark)[1]


def reasons(kube: Kube) -> list[str]:
    uid = vdc(kube, NAME)["metadata"]["uid"]
    found = kube.get("events", "-n", NS, "--field-selector", f"involvedObject.uid={uid}")
    return [e["reason"] for e in found["items"]]


def handled(kube: Kube, count: int) -> bool:
    """The status reports the spec's generation and `count` active faults."""
    body = vdc(kube, NAME)
    status = body.get("status") or {}
    return (
        status.get("observedGeneration") == body["metadata"]["generation"]
        and len(status.get("faults") or []) == count
    )


def test_spec_faults_are_applied_and_cleared_in_place(lab: Kube) -> None:
    kube = lab
    (pod,) = pods_of(kube, NAME)
    assert carrier(kube) == "1"

    set_faults(kube, [LINK_DOWN])
    kube.wait_for(lambda: handled(kube, 1), "the fault in the status", 60)
    status = vdc(kube, NAME)["status"]
    (fault,) = status["faults"]
    assert fault["declared"] is True and fault["kind"] == "link"
    assert fault["summary"] == f"link {NODE}:eth0 down"
    assert status["phase"] == "Running", status
    assert carrier(kube) == "0", "the guest still sees its link"
    listed = plugin(kube, "fault", NAME, "-n", NS, "list")
    assert listed.returncode == 0 and f"link {NODE}:eth0 down" in listed.stdout, listed
    assert "FaultApplied" in reasons(kube)

    set_faults(kube, [])
    kube.wait_for(lambda: handled(kube, 0), "the fault cleared from the status", 60)
    assert carrier(kube) == "1", "the guest's link did not come back"
    assert "FaultCleared" in reasons(kube)
    (same,) = pods_of(kube, NAME)
    assert same["metadata"]["uid"] == pod["metadata"]["uid"], "the pod was replaced"


def test_a_bad_fault_is_refused_at_apply(lab: Kube) -> None:
    kube = lab
    for fault, says in (
        ({"kind": "link", "target": f"{NODE}:eth0", "loss": "130%"}, "outside 0–100 %"),
        ({"kind": "machine", "target": "nowhere", "effect": "hang"}, "no node named 'nowhere'"),
    ):
        patch = json.dumps({"spec": {"faults": [fault]}})
        done = kube.call("patch", "vdc", NAME, "-n", NS, "--type", "merge", "-p", patch)
        assert done.returncode != 0, fault
        assert "spec.faults[0]" in done.stderr and says in done.stderr, done.stderr
    assert not (vdc(kube, NAME)["spec"].get("faults"))
