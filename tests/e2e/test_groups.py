"""A VirtualDataCenter of two groups on a real cluster of two nodes: a pod per group, each
on its own node, the quick start's network stretched between them, BGP across the
tunnel, a group's pod lost and brought back.

The quick start split in two: the boot server and worker-1 in rack-a, worker-2 in rack-b.
worker-2 can only boot over the network through rack-a's boot server, so its reaching
Ready is the proof that the stretched network carries DHCP, TFTP-less iPXE and HTTP. A
BIRD router in each group peers with the other over a stretched core network and learns
the LAN behind it. The second node (tests/e2e/cluster: `add-node`) is tainted; rack-b's
pod tolerates the taint and asks for that node, so the groups really are on two nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import cluster, config
from tests.e2e.conftest import OPERATOR_NAMESPACE, Kube
from tests.e2e.test_operator import EXAMPLE, NS, READY_TIMEOUT, plugin, pods_of, vdc, wait_ready
from tests.prereqs import require
from tests.runtime.test_run_groups import BIRD
from vdc_operator import builders

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAME = "grouped"
TOLERATE_SECOND = {"key": config.SECOND_TAINT, "operator": "Exists", "effect": "NoSchedule"}
RUNTIME_IMAGE = "vdc.local/vdc-runtime:dev"


@pytest.fixture(scope="module")
def two_nodes(operator: Kube) -> Iterator[Kube]:
    """The cluster with its second node, which holds the runtime image only."""
    layout = operator.layout
    try:
        cluster.add_node(layout)
        cluster.import_image(layout, require.image_archives()[RUNTIME_IMAGE], config.SECOND)
    except cluster.ClusterError as exc:
        pytest.fail(str(exc))
    try:
        yield operator
    finally:
        if not os.environ.get("VDC_E2E_KEEP"):
            cluster.remove_node(layout)


def router(name: str, group: str, core: str, lan: str | None = None) -> dict[str, Any]:
    interfaces = [{"network": "core", "addresses": [f"{core}/24"]}]
    if lan:
        interfaces.append({"network": "lan-b", "addresses": [f"{lan}/24"]})
    return {"name": name, "group": group, "interfaces": interfaces,
            "apps": [{"name": "bird", "command": ["bird", "-f", "-c", f"{name}.conf",
                                                  "-s", f"/tmp/{name}.ctl"]}]}  # fmt: skip


def manifests() -> str:
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    for doc in docs:
        if doc["kind"] != "VirtualDataCenter":
            continue
        doc["metadata"]["name"] = NAME
        spec = doc["spec"]
        spec["groups"] = [
            {"name": "rack-a"},
            {"name": "rack-b", "pod": {
                "nodeSelector": {"kubernetes.io/hostname": config.SECOND.name},
                "tolerations": [TOLERATE_SECOND]}},
        ]  # fmt: skip
        spec["networkNamespaces"][0]["group"] = "rack-a"
        spec["nodes"][0]["group"] = "rack-a"
        spec["nodes"][1]["group"] = "rack-b"
        spec["networks"] += [{"name": "core", "type": "internal"},
                             {"name": "lan-b", "type": "internal"}]  # fmt: skip
        spec["networkNamespaces"] += [
            router("router-a", "rack-a", "10.99.0.1"),
            router("router-b", "rack-b", "10.99.0.2", "10.98.0.1"),
        ]
        spec["files"] += [
            {"path": "router-a.conf", "inline": BIRD.format(
                local="10.99.0.1", asn=65001, peer="10.99.0.2", peer_asn=65002)},
            {"path": "router-b.conf", "inline": BIRD.format(
                local="10.99.0.2", asn=65002, peer="10.99.0.1", peer_asn=65001)},
        ]  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def boots(kube: Kube, node: str) -> int:
    log = plugin(kube, "console-log", NAME, node, "-n", NS)
    assert log.returncode == 0, log.stderr
    return log.stdout.count("VDC-GUEST-READY")


def routes(kube: Kube, group: str, netns: str) -> str:
    return kube.run("exec", "-n", NS, f"vdc-{NAME}-{group}", "-c", "agent", "--",
                    "ip", "-n", netns, "route")  # fmt: skip


def leftovers() -> list[str]:
    """What a deleted VDC of this test could have left on either node: QEMUs of its
    machines, VXLAN links in any namespace of this machine."""
    found = []
    qemus = subprocess.run(["pgrep", "-af", "qemu-system.*guest=worker-"], capture_output=True,
                           text=True).stdout.strip()  # fmt: skip
    if qemus:
        found.append(f"QEMU: {qemus}")
    for netns in Path("/run/netns").iterdir():
        links = subprocess.run(["ip", "-n", netns.name, "-o", "link", "show", "type", "vxlan"],
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        if links:
            found.append(f"VXLAN in {netns.name}: {links}")
    return found


@pytest.mark.timeout(1800)  # three PXE boots under TCG, then one again after the pod's loss
def test_a_vdc_of_two_groups_on_two_nodes(two_nodes: Kube) -> None:
    operator = two_nodes
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
        assert {g: pods[g]["spec"]["nodeName"] for g in pods} == {
            "rack-a": config.FIRST.name, "rack-b": config.SECOND.name}  # fmt: skip
        assert status["groups"]["rack-b"]["podIP"] == pods["rack-b"]["status"]["podIP"]
        table = operator.run("get", "vdc", NAME, "-n", NS)
        assert table.splitlines()[1].split()[1:5] == ["Running", "2/2", "TCG", "2/2"] or (
            table.splitlines()[1].split()[1:5] == ["Running", "2/2", "KVM", "2/2"]
        ), table

        # BGP across the tunnel: rack-a's router learns the LAN behind rack-b's.
        operator.wait_for(lambda: "10.98.0.0/24 via 10.99.0.2" in routes(operator, "rack-a",
                                                                         "router-a"),
                          "router-a's BGP route to rack-b's LAN", 60)  # fmt: skip
        assert "proto bird" in routes(operator, "rack-a", "router-a")

        # From rack-a's pod, on the first node, worker-2's BMC on the second answers across
        # the stretched bmc network, and power-cycles it: worker-2 boots again.
        def bmc_addresses() -> dict[str, Any]:
            return {n["name"]: n.get("bmcAddress") for n in vdc(operator, NAME)["status"]["nodes"]}

        operator.wait_for(lambda: bmc_addresses().get("worker-2") == "10.72.16.12",
                          "worker-2's BMC address", 60)  # fmt: skip
        ipmi = ["ipmitool", "-I", "lanplus", "-H", "10.72.16.12", "-U", "admin",
                "-P", "change-me", "-C", "17", "-N", "3", "-R", "3", "power"]  # fmt: skip
        in_a = ("exec", "-n", NS, f"vdc-{NAME}-rack-a", "-c", "agent", "--")
        assert "Chassis Power is on" in operator.run(*in_a, *ipmi, "status")
        nodes = plugin(operator, "nodes", NAME, "-n", NS)
        assert nodes.returncode == 0 and "worker-2" in nodes.stdout, nodes.stderr
        assert boots(operator, "worker-1") == 1 and boots(operator, "worker-2") == 1
        assert "Cycle" in operator.run(*in_a, *ipmi, "cycle")
        operator.wait_for(lambda: boots(operator, "worker-2") == 2,
                          "worker-2 booting again", READY_TIMEOUT)  # fmt: skip
        wait_ready(operator, NAME)

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
        new_b = next(p for p in pods_of(operator, NAME)
                     if p["metadata"]["labels"]["vdc.dev/group"] == "rack-b")  # fmt: skip
        assert new_b["spec"]["nodeName"] == config.SECOND.name
        operator.wait_for(lambda: "10.98.0.0/24 via 10.99.0.2" in routes(operator, "rack-a",
                                                                         "router-a"),
                          "BGP back to the new rack-b pod", 60)  # fmt: skip
        described = operator.run("describe", "vdc", NAME, "-n", NS)
        assert "PodRecreated" in described
    finally:
        operator.call("delete", "vdc", NAME, "-n", NS, "--wait=true",
                      f"--timeout={READY_TIMEOUT}s")  # fmt: skip
    assert pods_of(operator, NAME) == []
    operator.wait_for(lambda: not leftovers(), "nothing left on either node", 60)


def test_groups_spread_over_nodes_by_default(two_nodes: Kube) -> None:
    """Two groups that may run on either node go to different ones: the soft spread."""
    name = "spread"
    ns_of = {"name": "n", "interfaces": [{"network": "lan", "addresses": ["10.97.0.{}/24"]}]}
    namespaces = []
    for i, group in enumerate(("one", "two"), start=1):
        member = json.loads(json.dumps(ns_of).replace("{}", str(i)))
        namespaces.append({**member, "name": f"ns-{group}", "group": group})
    manifest = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"networks": [{"name": "lan", "type": "internal"}],
                         "networkNamespaces": namespaces,
                         "groups": [{"name": "one"}, {"name": "two"}],
                         "pod": {"tolerations": [TOLERATE_SECOND],
                                 "resources": {"cpu": "50m", "memory": "128Mi"}}}}  # fmt: skip
    two_nodes.apply(json.dumps(manifest))
    try:
        wait_ready(two_nodes, name)
        placed = {p["metadata"]["labels"]["vdc.dev/group"]: p["spec"]["nodeName"]
                  for p in pods_of(two_nodes, name)}  # fmt: skip
        assert sorted(placed.values()) == [config.FIRST.name, config.SECOND.name], placed
        in_one = ("exec", "-n", NS, f"vdc-{name}-one", "-c", "agent", "--")
        two_nodes.run(*in_one, "ip", "netns", "exec", "ns-one", "ping", "-c", "1", "-W", "5",
                      "10.97.0.2")  # fmt: skip
    finally:
        two_nodes.call("delete", "vdc", name, "-n", NS, "--wait=true", "--timeout=120s")


def test_automatic_groups_pack_the_machines_under_the_pod_limit(operator: Kube) -> None:
    """Two machines that fit no pod together under the VDC's limit: two pods, each
    machine in one, the network stretched between them; kubectl vdc finds each one's pod."""
    name = "packed"
    machine = {"smp": {"cpus": 1}, "memory": "128M", "kernel": {"image": "k"},
               "initrd": {"image": "i"}, "cmdline": "console=ttyS0 quiet",
               "interfaces": [{"network": "lan"}],
               "readiness": {"console": "VDC-GUEST-READY"}}  # fmt: skip
    manifest = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"networks": [{"name": "lan", "type": "internal"}],
                         "images": [{"name": "k", "file": "/usr/share/vdc/demo/vmlinuz"},
                                    {"name": "i", "file": "/usr/share/vdc/demo/initrd.gz"}],
                         "nodes": [{"name": "m1", **machine}, {"name": "m2", **machine}],
                         # One machine's pod asks for 384Mi (the agent's 192Mi, the guest's
                         # 128M, QEMU's 64Mi), two machines' for 576Mi.
                         "placement": {"groups": "auto",
                                       "podLimit": {"memory": "400Mi"}}}}  # fmt: skip
    operator.apply(json.dumps(manifest))
    try:
        wait_ready(operator, name)
        pods = {p["metadata"]["name"]: p for p in pods_of(operator, name)}
        assert sorted(pods) == [f"vdc-{name}-auto-1", f"vdc-{name}-auto-2"]
        for pod in pods.values():
            requests = builders.pod_requests(pod)
            assert requests["memory"] == "384Mi", requests
        status = vdc(operator, name)["status"]
        assert {n["name"]: n["group"] for n in status["nodes"]} == {"m1": "auto-1", "m2": "auto-2"}
        assert status["readyGroups"] == "2/2"
        log = plugin(operator, "console-log", name, "m2", "-n", NS)
        assert log.returncode == 0 and "VDC-GUEST-READY" in log.stdout, log.stderr
    finally:
        operator.call("delete", "vdc", name, "-n", NS, "--wait=true", "--timeout=300s")
    assert pods_of(operator, name) == []


def test_removing_the_second_node_leaves_the_first_nodes_pods_alone(two_nodes: Kube) -> None:
    """Stopping a node kills the container shims of its own containerd only: those of the
    first node's pods (the operator's among them) run on."""

    def operator_container() -> tuple[str, int]:
        pod = two_nodes.get("pods", "-n", OPERATOR_NAMESPACE)["items"][0]
        status = pod["status"]["containerStatuses"][0]
        return status["containerID"], status["restartCount"]

    before = operator_container()
    layout = two_nodes.layout
    cluster.remove_node(layout)
    try:
        time.sleep(3)  # a killed shim's container is seen dead by the kubelet within this
        assert operator_container() == before
    finally:
        cluster.add_node(layout)
        cluster.import_image(layout, require.image_archives()[RUNTIME_IMAGE], config.SECOND)
