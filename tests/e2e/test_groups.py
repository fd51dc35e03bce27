"""A VirtualDataCenter of two groups on the real cluster: a pod per group, the quick
start's network stretched between them, a group's pod lost and brought back.

The quick start split in two: the boot server and worker-1 in rack-a, worker-2 in rack-b.
worker-2 can only boot over the network through rack-a's boot server, so its reaching
Ready is the proof that the stretched network carries DHCP, TFTP-less iPXE and HTTP.
(The e2e cluster has one node, so both pods land on it; the tunnels still run between
the two pods' addresses, as between nodes.)
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kube
from tests.e2e.test_operator import EXAMPLE, NS, READY_TIMEOUT, plugin, pods_of, vdc, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAME = "grouped"


def manifests() -> str:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] != "VirtualDataCenter":
            continue
        doc["metadata"]["name"] = NAME
        spec = doc["spec"]
        spec["groups"] = [{"name": "rack-a"}, {"name": "rack-b"}]
        spec["networkNamespaces"][0]["group"] = "rack-a"
        spec["nodes"][0]["group"] = "rack-a"
        spec["nodes"][1]["group"] = "rack-b"
    return "\n---\n".join(json.dumps(d) for d in docs)


def boots(kube: Kube, node: str) -> int:
    log = plugin(kube, "console-log", NAME, node, "-n", NS)
    assert log.returncode == 0, log.stderr
    return log.stdout.count("VDC-GUEST-READY")


@pytest.mark.timeout(1500)  # two PXE boots under TCG, then one again after the pod's loss
def test_a_vdc_of_two_groups(operator: Kube) -> None:
    started = time.monotonic()
    operator.apply(manifests())
    try:
        wait_ready(operator, NAME)
        print(f"{NAME} Ready after {time.monotonic() - started:.0f} s")
        status = vdc(operator, NAME)["status"]
        assert (status["phase"], status["ready"], status["readyGroups"]) == (
            "Running",
            "2/2",
            "2/2",
        )
        assert {n["name"]: n["group"] for n in status["nodes"]} == {
            "worker-1": "rack-a", "worker-2": "rack-b"}  # fmt: skip
        pods = {p["metadata"]["labels"]["vdc.dev/group"]: p for p in pods_of(operator, NAME)}
        assert set(pods) == {"rack-a", "rack-b"}
        assert status["groups"]["rack-b"]["podIP"] == pods["rack-b"]["status"]["podIP"]
        table = operator.run("get", "vdc", NAME, "-n", NS)
        assert table.splitlines()[1].split()[1:5] == ["Running", "2/2", "TCG", "2/2"] or (
            table.splitlines()[1].split()[1:5] == ["Running", "2/2", "KVM", "2/2"]
        ), table

        # From rack-a's pod, worker-2's BMC answers across the stretched bmc network.
        def bmc_addresses() -> dict[str, Any]:
            return {n["name"]: n.get("bmcAddress") for n in vdc(operator, NAME)["status"]["nodes"]}

        operator.wait_for(lambda: bmc_addresses().get("worker-2") == "10.72.16.12",
                          "worker-2's BMC address", 60)  # fmt: skip
        ipmi = ["ipmitool", "-I", "lanplus", "-H", "10.72.16.12", "-U", "admin",
                "-P", "change-me", "-C", "17", "-N", "3", "-R", "3", "power", "status"]  # fmt: skip
        out = operator.run("exec", "-n", NS, f"vdc-{NAME}-rack-a", "-c", "agent", "--", *ipmi)
        assert "Chassis Power is on" in out
        nodes = plugin(operator, "nodes", NAME, "-n", NS)
        assert nodes.returncode == 0 and "worker-2" in nodes.stdout, nodes.stderr
        assert boots(operator, "worker-1") == 1 and boots(operator, "worker-2") == 1

        # rack-b's pod is lost: the VDC is Degraded until the operator's new pod runs; the
        # tunnels follow its new address; rack-a's machine is not touched.
        lost = time.monotonic()
        operator.run("delete", "pod", f"vdc-{NAME}-rack-b", "-n", NS, "--wait=false")
        operator.wait_for(lambda: vdc(operator, NAME)["status"]["phase"] == "Degraded",
                          "the VDC Degraded", 120)  # fmt: skip
        wait_ready(operator, NAME)
        print(f"{NAME} Ready again {time.monotonic() - lost:.0f} s after rack-b's pod was lost")
        assert vdc(operator, NAME)["status"]["phase"] == "Running"
        assert boots(operator, "worker-1") == 1  # one boot: rack-a's QEMU never stopped
        assert boots(operator, "worker-2") == 1  # a new pod: its machine booted once more
        described = operator.run("describe", "vdc", NAME, "-n", NS)
        assert "PodRecreated" in described
    finally:
        operator.call("delete", "vdc", NAME, "-n", NS, "--wait=true",
                      f"--timeout={READY_TIMEOUT}s")  # fmt: skip
    assert pods_of(operator, NAME) == []
