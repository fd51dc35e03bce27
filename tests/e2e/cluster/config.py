"""What the e2e cluster's components are started with: pure builders of their configs and
command lines, so every setting these machines need is in one reviewable place.

Settings forced by the CI machines (a container without systemd or all capabilities):
- root lacks CAP_SYS_RESOURCE: containerd's `restrict_oom_score_adj`, `oomScoreAdj: 0`
  for kubelet and kube-proxy, kubelet `maxOpenFiles` under the hard nofile limit (20000);
- cgroup v1 without systemd: the cgroupfs driver everywhere;
- no registry: a locally built pause image, image GC that never evicts imported images;
- a child network namespace: kube-proxy must not write the global conntrack sysctls.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

NODE = "vdc-e2e"
NETNS = "vdc-e2e"
HOST_LINK, NODE_LINK = "vdce2e-host", "vdce2e-node"
HOST_IP, NODE_IP = "10.201.0.1", "10.201.0.2"
NODE_PREFIX = 24
POD_CIDR = "10.244.0.0/24"
CLUSTER_CIDR = "10.244.0.0/16"
# The second node's link to the first: a veth pair between the two namespaces.
PEER_LINK, SECOND_LINK = "vdce2e-n1n2", "vdce2e-n2"
PEER_IP = "10.202.0.1"
SECOND_SUBNET = "10.202.0.0/24"
SECOND_TAINT = "vdc.dev/e2e-second-node"
SERVICE_CIDR = "10.96.0.0/24"
SERVICE_IP = "10.96.0.1"  # the `kubernetes` Service: the apiserver's first service IP
APISERVER_PORT = 6443
PAUSE_IMAGE = "vdc.local/pause:1"


@dataclass(frozen=True)
class Node:
    """A node's own part: the first runs the control plane beside its kubelet; a second
    (`cluster.py add-node`) only containerd, a kubelet and kube-proxy, in a namespace of
    its own. `subdir` keeps its files apart from the first's; its kubelet puts pods under
    a cgroup of its own (`cgroup_root`) and logs in a directory of its own, because a
    kubelet removes whatever pod logs and cgroups it does not know."""

    name: str
    netns: str
    ip: str
    pod_cidr: str
    subdir: str = ""
    cgroup_root: str = ""
    taints: tuple[str, ...] = ()

    @property
    def kubelet_identity(self) -> str:
        """The file name of its kubelet's certificates and kubeconfig."""
        return "kubelet" if not self.subdir else f"kubelet-{self.name}"


FIRST = Node(NODE, NETNS, NODE_IP, POD_CIDR)
SECOND = Node(
    "vdc-e2e-2", "vdc-e2e-2", "10.202.0.2", "10.244.1.0/24",
    subdir="node2", cgroup_root="/vdc-e2e-2",
    # Only what tolerates it lands there: the other suites keep to the first node, whose
    # containerd holds every image.
    taints=(f"{SECOND_TAINT}=true:NoSchedule",),
)  # fmt: skip


@dataclass(frozen=True)
class Layout:
    """Where a cluster keeps its files: `state` survives `down` (PKI, etcd, images),
    `run` holds sockets, pid files and logs of the processes of one `up`."""

    bin: Path
    state: Path
    run: Path
    shared: Path | None = None
    """A second node's layout: the first's state, where the PKI and kubeconfigs are."""

    @property
    def pki(self) -> Path:
        return self.cluster_state / "pki"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    def of(self, node: Node) -> Layout:
        """Where `node`'s containerd and kubelet keep their files (the PKI and the
        kubeconfigs stay the cluster's: see `cluster_state`)."""
        if not node.subdir:
            return self
        return Layout(self.bin, self.state / node.subdir, self.run / node.subdir, self.state)

    @property
    def cluster_state(self) -> Path:
        return self.shared or self.state

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig, for tests and people."""
        return self.cluster_state / "admin.kubeconfig"

    def kubeconfig_of(self, component: str) -> Path:
        return self.cluster_state / f"{component}.kubeconfig"

    @property
    def apiserver_url(self) -> str:
        return f"https://{NODE_IP}:{APISERVER_PORT}"


def containerd_config(layout: Layout) -> str:
    """containerd 1.6's config (version 2), all paths private to the harness."""
    state = layout.state / "containerd"
    return f"""\
version = 2
root = "{state / "root"}"
state = "{layout.run / "containerd"}"
[grpc]
  address = "{layout.containerd_socket}"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{state / "cni"}"
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = "{state / "opt"}"
"""


def cni_conflist(node: Node = FIRST) -> str:
    """The bridge plugin's own masquerading would hide a pod's address from the other
    node's pods (it spares only the node's own subnet): `cluster.py` masquerades what
    leaves the cluster's CIDR instead."""
    return json.dumps(
        {
            "cniVersion": "0.4.0",
            # Also host-local's directory of leases under /var/lib/cni: one per node.
            "name": node.netns,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.pod_cidr}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(layout: Layout, resolv_conf: Path, node: Node = FIRST) -> str:
    """`layout` is the node's (`Layout.of`)."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "maxOpenFiles": 16384,
        "address": node.ip,
        "readOnlyPort": 0,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "authentication": {
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
            "webhook": {"enabled": True},
            "anonymous": {"enabled": False},
        },
        "authorization": {"mode": "Webhook"},
        # No cluster DNS: pods resolve with a file of the harness's, never the host's.
        "resolvConf": str(resolv_conf),
        "tlsCertFile": str(layout.pki / f"{node.kubelet_identity}-serving.crt"),
        "tlsPrivateKeyFile": str(layout.pki / f"{node.kubelet_identity}-serving.key"),
    }
    if node.cgroup_root:
        config["cgroupRoot"] = node.cgroup_root
    if node.subdir:
        config["podLogsDir"] = str(layout.state / "pod-logs")
    if node.taints:
        config["registerWithTaints"] = [_taint(t) for t in node.taints]
    return yaml.safe_dump(config, sort_keys=False)


def _taint(text: str) -> dict[str, str]:
    """`key=value:Effect` as the kubelet's registerWithTaints takes it."""
    key_value, effect = text.rsplit(":", 1)
    key, _, value = key_value.partition("=")
    return {"key": key, "value": value, "effect": effect}


def kube_proxy_config(layout: Layout, node: Node = FIRST) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": node.name,
        "oomScoreAdj": 0,
        "clientConnection": {"kubeconfig": str(layout.kubeconfig_of("kube-proxy"))},
        # Zeros leave the (global, here unwritable) conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


def scheduler_config(layout: Layout) -> str:
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig_of("scheduler"))},
        "leaderElection": {"leaderElect": False},
    }
    return yaml.safe_dump(config, sort_keys=False)


AUDITED_GROUP = "system:serviceaccounts:vdc-system"
"""Whose requests the apiserver writes to `audit.log`: the operator's namespace, so
bench/operator.py can count what the operator asks of the API, watches and lists apart."""


def audit_policy() -> str:
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        # One event per request (a watch also writes one when it starts).
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "userGroups": [AUDITED_GROUP]},
            {"level": "None"},
        ],
    }
    return yaml.safe_dump(policy, sort_keys=False)


def commands(layout: Layout) -> dict[str, list[str]]:
    """Each component's argv, in start order."""
    b, pki, run = layout.bin, layout.pki, layout.run
    own = node_commands(layout, FIRST)
    return {
        "containerd": own["containerd"],
        "etcd": [
            str(b / "etcd"),
            "--name", NODE,
            "--data-dir", str(layout.state / "etcd"),
            "--listen-client-urls", "http://127.0.0.1:2379",
            "--advertise-client-urls", "http://127.0.0.1:2379",
            "--listen-peer-urls", "http://127.0.0.1:2380",
            "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
            "--initial-cluster", f"{NODE}=http://127.0.0.1:2380",
            "--unsafe-no-fsync",
            "--log-level", "warn",
        ],
        "kube-apiserver": [
            str(b / "kube-apiserver"),
            "--etcd-servers", "http://127.0.0.1:2379",
            "--advertise-address", NODE_IP,
            "--bind-address", "0.0.0.0",
            "--secure-port", str(APISERVER_PORT),
            "--tls-cert-file", str(pki / "apiserver.crt"),
            "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--kubelet-certificate-authority", str(pki / "ca.crt"),
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            # The node's IP, never its name: a name would be looked up in the host's DNS.
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true",
            "--profiling=false",
            "--audit-policy-file", str(run / "audit-policy.yaml"),
            "--audit-log-path", str(run / "audit.log"),
            "--audit-log-format", "json",
            # MB, in /run (memory): the benchmark follows a rotation.
            "--audit-log-maxsize", "100",
            "--audit-log-maxbackup", "1",
        ],
        "kube-controller-manager": [
            str(b / "kube-controller-manager"),
            "--kubeconfig", str(layout.kubeconfig_of("controller-manager")),
            "--authentication-kubeconfig", str(layout.kubeconfig_of("controller-manager")),
            "--authorization-kubeconfig", str(layout.kubeconfig_of("controller-manager")),
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"),
            "--cluster-signing-key-file", str(pki / "ca.key"),
            "--use-service-account-credentials",
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--leader-elect=false",
            "--bind-address", "127.0.0.1",
        ],
        "kube-scheduler": [
            str(b / "kube-scheduler"),
            "--config", str(run / "scheduler.yaml"),
            "--bind-address", "127.0.0.1",
        ],
        "kubelet": own["kubelet"],
        "kube-proxy": own["kube-proxy"],
    }  # fmt: skip


def node_commands(layout: Layout, node: Node) -> dict[str, list[str]]:
    """What runs on every node, in start order: `layout` is the node's (`Layout.of`)."""
    b, run = layout.bin, layout.run
    return {
        "containerd": ["containerd", "--config", str(run / "containerd.toml")],
        "kubelet": [
            str(b / "kubelet"),
            "--config", str(run / "kubelet.yaml"),
            "--kubeconfig", str(layout.kubeconfig_of(node.kubelet_identity)),
            "--hostname-override", node.name,
            "--node-ip", node.ip,
            "--root-dir", str(layout.state / "kubelet"),
        ],
        "kube-proxy": [str(b / "kube-proxy"), "--config", str(run / "kube-proxy.yaml")],
    }  # fmt: skip


__all__ = [
    "AUDITED_GROUP",
    "FIRST",
    "NETNS",
    "NODE",
    "SECOND",
    "Layout",
    "Node",
    "audit_policy",
    "cni_conflist",
    "commands",
    "containerd_config",
    "kube_proxy_config",
    "kubelet_config",
    "node_commands",
    "scheduler_config",
]
