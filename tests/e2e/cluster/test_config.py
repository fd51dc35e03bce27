"""The e2e cluster's configs for its second node, and what keeps two nodes on one machine
from stepping on each other, without starting anything."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.e2e.cluster import config

LAYOUT = config.Layout(bin=Path("/bin-dir"), state=Path("/state"), run=Path("/run/x"))


def test_the_second_node_keeps_its_files_apart_and_shares_the_clusters_pki() -> None:
    second = LAYOUT.of(config.SECOND)
    assert (second.state, second.run) == (Path("/state/node2"), Path("/run/x/node2"))
    assert second.containerd_socket == Path("/run/x/node2/containerd.sock")
    assert second.pki == LAYOUT.pki == Path("/state/pki")
    assert second.kubeconfig_of("kubelet-vdc-e2e-2") == Path("/state/kubelet-vdc-e2e-2.kubeconfig")
    assert LAYOUT.of(config.FIRST) is LAYOUT


def test_each_kubelet_has_its_own_identity_cgroups_logs_and_taints() -> None:
    first = yaml.safe_load(config.kubelet_config(LAYOUT, Path("/r")))
    second = yaml.safe_load(
        config.kubelet_config(LAYOUT.of(config.SECOND), Path("/r"), config.SECOND)
    )
    assert first["address"] == config.NODE_IP and second["address"] == config.SECOND.ip
    assert first["tlsCertFile"] == "/state/pki/kubelet-serving.crt"
    assert second["tlsCertFile"] == "/state/pki/kubelet-vdc-e2e-2-serving.crt"
    # A kubelet removes the pod cgroups and log directories it does not know: the first
    # keeps the defaults, the second has its own.
    assert "cgroupRoot" not in first and "podLogsDir" not in first
    assert second["cgroupRoot"] == "/vdc-e2e-2"
    assert second["podLogsDir"] == "/state/node2/pod-logs"
    assert "registerWithTaints" not in first
    assert second["registerWithTaints"] == [
        {"key": config.SECOND_TAINT, "value": "true", "effect": "NoSchedule"}
    ]
    argv = config.node_commands(LAYOUT.of(config.SECOND), config.SECOND)["kubelet"]
    assert argv[argv.index("--hostname-override") + 1] == "vdc-e2e-2"
    assert argv[argv.index("--kubeconfig") + 1] == "/state/kubelet-vdc-e2e-2.kubeconfig"
    assert argv[argv.index("--root-dir") + 1] == "/state/node2/kubelet"


def test_pod_networks_are_per_node_and_never_masquerade_between_pods() -> None:
    first, second = (json.loads(config.cni_conflist(n)) for n in (config.FIRST, config.SECOND))
    assert first["name"] != second["name"]  # host-local keeps its leases per network name
    subnets = [c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] for c in (first, second)]
    assert subnets == ["10.244.0.0/24", "10.244.1.0/24"]
    assert not first["plugins"][0]["ipMasq"] and not second["plugins"][0]["ipMasq"]
    proxy = yaml.safe_load(config.kube_proxy_config(LAYOUT, config.SECOND))
    assert proxy["clusterCIDR"] == config.CLUSTER_CIDR
    assert proxy["hostnameOverride"] == "vdc-e2e-2"


def test_the_first_node_runs_the_control_plane_in_start_order() -> None:
    assert list(config.commands(LAYOUT)) == [
        "containerd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
        "kubelet", "kube-proxy"]  # fmt: skip


def test_the_apiserver_audits_the_operators_namespace_only() -> None:
    policy = yaml.safe_load(config.audit_policy())
    assert policy["rules"] == [
        {"level": "Metadata", "userGroups": ["system:serviceaccounts:vdc-system"]},
        {"level": "None"},
    ]
    argv = config.commands(LAYOUT)["kube-apiserver"]
    assert argv[argv.index("--audit-log-path") + 1] == "/run/x/audit.log"
