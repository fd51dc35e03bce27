"""The lab outlives its agent (issue 2-5): the agent of a Ready VDC is killed with SIGKILL;
the kubelet starts its container again, and the new agent adopts the machines the holder
kept running instead of booting them again.

On a VDC of its own (nodes at-worker-1, at-worker-2), so that its QEMUs are told from
the quick start's.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Kube
from tests.e2e.test_operator import (
    NS,
    READY_TIMEOUT,
    example_copy,
    plugin,
    pods_of,
    qemus,
    vdc,
    wait_ready,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAME = "adopttest"
PREFIX = "at-"


def container_pids(container_id: str) -> list[int]:
    """The host pids of a container's processes (found by its cgroup)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if container_id in (proc / "cgroup").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return sorted(found)


def agent_container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["status"]["containerStatuses"] if c["name"] == "agent")


def boots(kube: Kube, node: str) -> int:
    log = plugin(kube, "console-log", NAME, node, "-n", NS)
    assert log.returncode == 0, log.stderr
    return log.stdout.count("VDC-GUEST-READY")


def ipmitool(host: str, port: int, *command: str) -> subprocess.CompletedProcess[str]:
    """From the first node's network namespace, where pod addresses are reached."""
    return subprocess.run(
        ["ip", "netns", "exec", "vdc-e2e", "ipmitool", "-I", "lanplus", "-H", host,
         "-p", str(port), "-U", "admin", "-P", "change-me", "-C", "17", "-N", "1", "-R", "1",
         *command],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def events(kube: Kube, reason: str) -> list[dict[str, Any]]:
    """This VDC's events of `reason` (not those of an earlier VDC of the same name: events
    outlive their object for an hour)."""
    uid = vdc(kube, NAME)["metadata"]["uid"]
    found = kube.get("events", "-n", NS, "--field-selector",
                     f"reason={reason},involvedObject.uid={uid}")["items"]  # fmt: skip
    return found  # type: ignore[no-any-return]


def diagnostics(kube: Kube) -> str:
    """The pod's containers' logs (the agent's previous one's too) and the VDC's events."""
    parts = []
    for args in (("-c", "agent", "--previous"), ("-c", "agent"), ("-c", "holder")):
        done = kube.call("logs", "-n", NS, f"vdc-{NAME}", "--tail=60", *args)
        parts.append(f"--- logs {' '.join(args)}\n{done.stdout}{done.stderr}")
    done = kube.call("get", "events", "-n", NS, "--field-selector",
                     f"involvedObject.name={NAME}", "-o", "wide")  # fmt: skip
    parts.append(f"--- events\n{done.stdout}")
    return "\n".join(parts)


@pytest.fixture
def adopttest(operator: Kube) -> Iterator[Kube]:
    operator.apply(example_copy(NAME, PREFIX))
    try:
        wait_ready(operator, NAME)
        yield operator
    except BaseException:
        print(diagnostics(operator))
        raise
    finally:
        operator.call("delete", "vdc", NAME, "-n", NS, "--wait=true", "--timeout=180s")


@pytest.mark.timeout(1800)  # two PXE boots under TCG, then two power cycles
def test_a_killed_agent_is_restarted_and_adopts_the_running_machines(adopttest: Kube) -> None:
    try:
        killed_and_adopted(adopttest)
    except BaseException:
        print(diagnostics(adopttest))
        raise


def killed_and_adopted(operator: Kube) -> None:
    operator.wait_for(lambda: all(n.get("bmcAddress") for n in vdc(operator, NAME)["status"]
                                  ["nodes"]), "the BMC addresses", 60)  # fmt: skip
    (pod,) = pods_of(operator, NAME)
    status = vdc(operator, NAME)["status"]
    host, port = status["bmc"]["host"], status["bmc"]["ipmiPort"]  # worker-1: the first
    assert "Chassis Power is on" in ipmitool(host, port, "power", "status").stdout
    qemu_before = sorted(qemus(f"{PREFIX}worker-"))
    assert len(qemu_before) == 2
    assert boots(operator, f"{PREFIX}worker-1") == 1
    agent = agent_container(pod)
    assert agent["restartCount"] == 0
    container_id = agent["containerID"].split("://", 1)[1]
    pids = container_pids(container_id)
    assert pids, f"no process of the agent's container {container_id}"

    # kill -9 of everything in the agent's container: the kubelet starts it again.
    killed = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    # The BMC answers again as soon as the new agent has adopted the machines.
    while ipmitool(host, port, "power", "status").returncode != 0:
        assert time.monotonic() - killed < 120, "worker-1's BMC does not answer again"
        time.sleep(0.5)
    gap = time.monotonic() - killed
    print(f"worker-1's BMC answered again {gap:.1f} s after the agent was killed")

    def restarted() -> bool:
        (now,) = pods_of(operator, NAME)
        return agent_container(now)["restartCount"] == 1

    operator.wait_for(restarted, "the agent's container started again", 60)
    wait_ready(operator, NAME)
    (after,) = pods_of(operator, NAME)
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]  # the same pod
    # The same QEMUs, never booted again.
    assert sorted(qemus(f"{PREFIX}worker-")) == qemu_before
    assert boots(operator, f"{PREFIX}worker-1") == 1
    assert boots(operator, f"{PREFIX}worker-2") == 1
    nodes = {n["name"]: n for n in vdc(operator, NAME)["status"]["nodes"]}
    assert all(n["restarts"] == 0 for n in nodes.values()), nodes
    # Said: the operator saw the restart (and the VDC Degraded meanwhile), the agent the
    # adoption.
    (restart_event,) = events(operator, "AgentRestarted")
    assert restart_event["type"] == "Warning"
    assert "137" in restart_event["message"] or "Error" in restart_event["message"]
    (adopted,) = events(operator, "Adopted")
    assert "2 machines" in adopted["message"], adopted["message"]
    # The operator wrote Degraded (AgentRestarting) while the agent was gone, so the new
    # agent's report made it Running again: a second Running event.
    assert len(events(operator, "Running")) == 2, "the VDC was not Degraded meanwhile"
    assert vdc(operator, NAME)["status"]["agentRestarts"] == 1

    # Power actions after adoption: through the BMC (worker-1) and the API (worker-2).
    cycle = ipmitool(host, port, "chassis", "power", "cycle")
    assert cycle.returncode == 0, cycle.stderr
    operator.wait_for(lambda: boots(operator, f"{PREFIX}worker-1") == 2,
                      "worker-1 booting again after a power cycle through its BMC",
                      READY_TIMEOUT)  # fmt: skip
    result = plugin(operator, "power", NAME, "restart", f"{PREFIX}worker-2", "-n", NS)
    assert result.returncode == 0, result.stderr
    operator.wait_for(lambda: boots(operator, f"{PREFIX}worker-2") == 2,
                      "worker-2 booting again after a restart through the API",
                      READY_TIMEOUT)  # fmt: skip
    assert sorted(qemus(f"{PREFIX}worker-")) == qemu_before  # power cycles keep the QEMU

    # Deleted, it leaves nothing: the holder's processes go with the pod.
    holder = next(c for c in after["status"]["containerStatuses"] if c["name"] == "holder")
    holder_id = holder["containerID"].split("://", 1)[1]
    assert container_pids(holder_id)
    operator.run("delete", "vdc", NAME, "-n", NS, "--wait=true", "--timeout=180s")
    operator.wait_for(lambda: not pods_of(operator, NAME), "the pod gone", 120)
    assert qemus(f"{PREFIX}worker-") == []
    assert container_pids(holder_id) == []
