"""Invalid VirtualDataCenters, each with where it is wrong: refused by the Python models
(tests/operator/test_invalid_vdcs.py) and at `kubectl apply` (tests/e2e/test_operator.py),
by the CRD's schema alone where it can tell, by the operator's webhook otherwise."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BASE: dict[str, Any] = {
    "networks": [
        {"name": "net", "type": "external", "address": "10.80.0.1/24"},
        {"name": "bmc", "type": "bmc", "address": "10.81.0.1/24"},
        {"name": "core", "type": "internal"},
    ],
    "networkNamespaces": [
        {"name": "router", "interfaces": [{"network": "net", "addresses": ["10.80.0.2/24"]}]}
    ],
    "images": [{"name": "img", "url": "http://images.invalid/disk.img"}],
    "nodes": [
        {"name": "n1", "cpu": 1, "memory": "256M", "interfaces": [{"network": "net"}]},
        {"name": "n2", "smp": {"cpus": 2}, "interfaces": [{"network": "core"}]},
    ],
}


@dataclass(frozen=True)
class Case:
    id: str
    change: Callable[[dict[str, Any]], Any]
    path: str
    """The field path the refusal names."""
    says: str
    """Part of the refusal's message."""
    schema: bool
    """Whether the CRD's schema refuses it alone (else only the webhook does)."""
    name: str = "bad"

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(BASE)
        self.change(spec)
        return spec

    def manifest(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "vdc.dev/v1alpha1",
            "kind": "VirtualDataCenter",
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": self.spec(),
        }


def _node(i: int, **changes: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda s: s["nodes"][i].update(changes)


def _net(i: int, **changes: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda s: s["networks"][i].update(changes)


def _auto(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    """With automatic groups, and `change`."""
    return lambda s: [s.update(placement={"groups": "auto"}), change(s)]


def _placement(**placement: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda s: s.update(placement=placement)


def _drop(i: int, key: str) -> Callable[[dict[str, Any]], Any]:
    return lambda s: s["nodes"][i].pop(key)


CASES = [
    Case("unknown-key", _net(0, usenat=True), "spec.networks[0].usenat", "unknown", True),
    Case("wrong-type", _node(0, cpu="two"), "spec.nodes[0].cpu", "integer", True),
    Case("bad-enum", _net(0, type="wan"), "spec.networks[0].type", "wan", True),
    Case("bad-cidr", _net(0, address="10.80.0.300/24"), "spec.networks[0].address",
         "prefix length", True),
    Case("no-prefix", _net(0, address="10.80.0.1"), "spec.networks[0].address",
         "prefix length", True),
    Case("network-address", _net(0, address="10.80.0.0/24"), "spec.networks[0].address",
         "network address", False),
    Case("internal-with-address", _net(2, address="10.82.0.1/24"), "spec.networks[2].address",
         "internal network has no host address", True),
    Case("external-without-address", lambda s: s["networks"][0].pop("address"),
         "spec.networks[0].address", "required for", True),
    Case("nat-not-external", _net(1, useNat=True), "spec.networks[1].useNat",
         "NAT is only possible on external networks", True),
    Case("cpu-and-smp", _node(0, smp={"cpus": 1}), "spec.nodes[0].smp", "exclusive", True),
    Case("no-cpu", _drop(0, "cpu"), "spec.nodes[0]", "'cpu' or 'smp'", True),
    Case("maxcpus", _node(1, smp={"cpus": 2, "maxcpus": 1}), "spec.nodes[1].smp.maxcpus",
         "at least cpus", True),
    Case("duplicate-node", lambda s: s["nodes"].append(dict(s["nodes"][0])), "spec.nodes[2]",
         "uplicate", True),
    Case("duplicate-boot-device", _node(0, bootOrder=["network", "network"]),
         "spec.nodes[0].bootOrder[1]", "uplicate", True),
    Case("localds-without-user-data",
         _node(0, volumes=[{"kind": "localds", "name": "seed"}]),
         "spec.nodes[0].volumes[0].userData", "required for kind localds", True),
    Case("key-of-another-kind",
         _node(0, volumes=[{"kind": "image", "name": "root", "image": "img", "size": "1G"}]),
         "spec.nodes[0].volumes[0].size", "kind raw", True),
    Case("two-file-sources",
         _node(0, kernel={"inline": "x", "configMapKeyRef": {"name": "k", "key": "k"}}),
         "spec.nodes[0].kernel", "exactly one of", True),
    Case("initrd-without-kernel", _node(0, initrd={"inline": "x"}), "spec.nodes[0].initrd",
         "only used with 'kernel'", True),
    Case("bad-mac", _node(0, interfaces=[{"network": "net", "mac": "52:54:00:zz:00:01"}]),
         "spec.nodes[0].interfaces[0].mac", "", True),
    Case("node-name-with-slash", _node(0, name="rack/1"), "spec.nodes[0].name", "", True),
    Case("hostpath-name-too-long",
         _node(0, volumes=[{"kind": "hostPath", "name": "s" * 32, "path": "/srv"}]),
         "spec.nodes[0].volumes[0].name", "mount tag", True),
    Case("password-and-secret",
         lambda s: s.update(bmc={"users": [{"name": "a", "password": "p",
                                            "passwordSecretRef": {"name": "s", "key": "k"}}]}),
         "spec.bmc.users[0]", "exactly one of", True),
    Case("bad-toleration", lambda s: s.update(pod={"tolerations": [{"effect": "Sometimes"}]}),
         "spec.pod.tolerations[0].effect", "Sometimes", True),
    Case("bad-accel", lambda s: s.update(accel="fast"), "spec.accel", "fast", True),
    Case("bad-placement", _placement(groups="automatic"), "spec.placement.groups", "automatic",
         True),
    Case("pod-limit-without-auto", _placement(podLimit={"memory": "32Gi"}),
         "spec.placement.podLimit", "only used with groups: auto", True),
    Case("empty-pod-limit", _placement(groups="auto", podLimit={}), "spec.placement.podLimit",
         "give cpu, memory or both", True),
    Case("bad-pod-limit", _placement(groups="auto", podLimit={"memory": "32GB"}),
         "spec.placement.podLimit.memory", "", True),
    Case("long-name", lambda s: None, "metadata.name", "at most 52 characters", True,
         name="x" * 53),
    # Only the whole spec tells these: the webhook runs `vdc validate`'s checks.
    Case("undefined-network", _node(0, interfaces=[{"network": "nowhere"}]),
         "spec.nodes[0].interfaces[0].network", "no Network named 'nowhere'", False),
    Case("undefined-image",
         _node(0, volumes=[{"kind": "image", "name": "root", "image": "nope"}]),
         "spec.nodes[0].volumes[0].image", "no Image named 'nope'", False),
    Case("undefined-file-image", _node(0, kernel={"image": "nope"}),
         "spec.nodes[0].kernel.image", "no Image named 'nope'", False),
    Case("bmc-outside-networks", _node(0, bmc={"address": "10.99.0.5"}),
         "spec.nodes[0].bmc.address", "not inside any bmc network", False),
    Case("address-used-twice",
         lambda s: s["networkNamespaces"][0]["interfaces"][0].update(addresses=["10.80.0.1/24"]),
         "spec.networkNamespaces[0].interfaces[0].addresses[0]", "already used", False),
    Case("address-outside-network",
         lambda s: s["networkNamespaces"][0]["interfaces"][0].update(addresses=["10.9.0.2/24"]),
         "spec.networkNamespaces[0].interfaces[0].addresses[0]", "outside network 'net'", False),
    Case("mac-used-twice",
         lambda s: [n.update(interfaces=[{"network": "net", "mac": "52:54:00:00:00:01"}])
                    for n in s["nodes"]],
         "spec.nodes[1].interfaces[0].mac", "already used", False),
    Case("serial-used-twice",
         lambda s: [n.update(smbios={"serial": "S1"}) for n in s["nodes"]],
         "spec.nodes[1].smbios.serial", "already used", False),
    Case("bad-regex", _node(0, readiness={"console": "(login"}), "spec.nodes[0].readiness.console",
         "not a regular expression", False),
    Case("auto-and-a-node-group", _auto(_node(1, group="rack-b")), "spec.nodes[1].group",
         "the operator chooses the groups", False),
    Case("auto-and-a-namespace-group",
         _auto(lambda s: s["networkNamespaces"][0].update(group="rack-a")),
         "spec.networkNamespaces[0].group", "the operator chooses the groups", False),
    Case("auto-and-declared-groups", _auto(lambda s: s.update(groups=[{"name": "rack-a"}])),
         "spec.groups", "must be empty", False),
]  # fmt: skip
