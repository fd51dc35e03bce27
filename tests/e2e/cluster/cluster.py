"""A real Kubernetes for the e2e tests, inside a network namespace of its own.

    $PY tests/e2e/cluster/cluster.py up       # builds what is missing; prints KUBECONFIG
    $PY tests/e2e/cluster/cluster.py status   # each component, the node; exit 0 when healthy
    $PY tests/e2e/cluster/cluster.py add-node     # a second node, for the groups' tests
    $PY tests/e2e/cluster/cluster.py remove-node
    $PY tests/e2e/cluster/cluster.py down [--purge]

with PY the Python of the venv `make deps` makes (/var/cache/vdc/venv/bin/python).

Every component runs inside the namespace `vdc-e2e`, entered with `nsenter --net` (not
`ip netns exec`, which hides the cgroup mounts kubelet and containerd need), so cluster
traffic never leaves the machine. A veth pair joins it to the host: the apiserver is at
https://10.201.0.2:6443 from both sides. `up` on a healthy cluster only prints its
KUBECONFIG. State that makes the next `up` fast (binaries, PKI, etcd, imported images)
lives under `$VDC_CACHE_DIR/k8s`; `down --purge` removes the cluster's part of it.

The cluster has one node; `add-node` starts a second one (containerd, a kubelet and
kube-proxy in the namespace `vdc-e2e-2`, a veth pair away from the first, each node
routing the other's pod CIDR), tainted so that only pods tolerating it land there. The
tests that need it start it and remove it again: the other suites keep one node, whose
containerd alone holds every image.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from itertools import pairwise
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tests.e2e.cluster` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.e2e.cluster import build, config, oci
from tests.e2e.cluster.pki import CLIENTS, Pki, kubelet_client

DEBS = ("containerd", "runc", "containernetworking-plugins", "conntrack", "iptables", "gcc")
"""What `up` needs besides the binaries it builds (pause.c is compiled with gcc)."""
START_ORDER = (
    "containerd",
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
)
READY_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    pass


def layout() -> config.Layout:
    root = build.cache_root() / "k8s"
    return config.Layout(bin=build.bin_dir(), state=root / "cluster", run=Path("/run/vdc-e2e"))


def sh(*argv: str, netns: bool | str = False, check: bool = True) -> str:
    """`netns`: True for the first node's namespace, or a namespace's name."""
    if netns:
        name = config.NETNS if netns is True else netns
        argv = ("nsenter", f"--net=/run/netns/{name}", "--", *argv)
    done = subprocess.run(argv, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


# -- processes -------------------------------------------------------------------------------


def pid_of(lay: config.Layout, name: str) -> int | None:
    """The component's pid while it runs: not a zombie (its parent, `up`, is gone and
    init reaps late) and not a recycled pid (the command line names it; it is empty for
    an instant while nsenter execs the component)."""
    try:
        pid = int((lay.run / f"{name}.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if stat.rpartition(")")[2].split()[0] == "Z" or (cmdline and name.encode() not in cmdline):
        return None
    return pid


def start(lay: config.Layout, name: str, argv: list[str], netns: str = config.NETNS) -> None:
    log = open(lay.run / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{netns}", "--", *argv],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # outlives `up`; `down` stops it by pid
    )
    log.close()
    (lay.run / f"{name}.pid").write_text(str(proc.pid))


def stop(lay: config.Layout, name: str, grace: float = 10) -> None:
    pid = pid_of(lay, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while pid_of(lay, name) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    (lay.run / f"{name}.pid").unlink(missing_ok=True)


def log_tail(lay: config.Layout, name: str, lines: int = 15) -> str:
    try:
        return "\n".join(
            (lay.run / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]
        )
    except FileNotFoundError:
        return "(no log)"


def wait(lay: config.Layout, name: str, ready, what: str, timeout: float = READY_TIMEOUT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_of(lay, name) is None:
            raise ClusterError(f"{name} exited while starting:\n{log_tail(lay, name)}")
        with contextlib.suppress(OSError, ClusterError, urllib.error.URLError):
            if ready():
                return
        time.sleep(0.2)
    raise ClusterError(f"{name}: {what} not reached in {timeout:.0f} s:\n{log_tail(lay, name)}")


# -- the API ---------------------------------------------------------------------------------


def api_get(lay: config.Layout, path: str) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
    context.load_cert_chain(lay.pki / "admin.crt", lay.pki / "admin.key")
    try:
        with urllib.request.urlopen(lay.apiserver_url + path, context=context, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def kubectl(lay: config.Layout, *args: str) -> str:
    return sh(str(lay.bin / "kubectl"), "--kubeconfig", str(lay.kubeconfig), *args)


def node_ready(lay: config.Layout, node: str = config.NODE) -> bool:
    status, body = api_get(lay, f"/api/v1/nodes/{node}")
    if status != 200:
        return False
    conditions = json.loads(body)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def healthy(lay: config.Layout) -> bool:
    """The cluster runs, from this layout's binaries and state: one of another cache
    directory (`make test-cold` beside a developer's kept cluster) does not count."""
    try:
        if (lay.run / "state-dir").read_text() != str(lay.state):
            return False
    except OSError:
        return False
    if any(pid_of(lay, name) is None for name in START_ORDER):
        return False
    try:
        return api_get(lay, "/readyz")[0] == 200 and node_ready(lay)
    except (OSError, urllib.error.URLError):
        return False


# -- bring-up steps --------------------------------------------------------------------------


def check_packages() -> None:
    """The Debian packages come from `scripts/install-deps.sh` (`make deps`), like the
    rest of what the tests need."""
    missing = [
        p
        for p in DEBS
        if "install ok installed"
        not in subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True
        ).stdout
    ]
    if missing:
        raise ClusterError(f"missing Debian packages {', '.join(missing)}: run `make deps`")


def ensure_netns() -> None:
    if not Path(f"/run/netns/{config.NETNS}").exists():
        sh("ip", "netns", "add", config.NETNS)
    if config.HOST_LINK not in sh("ip", "-o", "link", "show"):
        sh("ip", "link", "add", config.HOST_LINK, "type", "veth", "peer", "name",
           config.NODE_LINK, "netns", config.NETNS)  # fmt: skip
        sh("ip", "addr", "add", f"{config.HOST_IP}/{config.NODE_PREFIX}", "dev", config.HOST_LINK)
        sh("ip", "link", "set", config.HOST_LINK, "up")
        ns = ("ip", "-n", config.NETNS)
        sh(*ns, "addr", "add", f"{config.NODE_IP}/{config.NODE_PREFIX}", "dev", config.NODE_LINK)
        sh(*ns, "link", "set", config.NODE_LINK, "up")
        sh(*ns, "link", "set", "lo", "up")
        # No default route: pod egress to anywhere but the node and the host goes nowhere.
    # Connections the node itself opens to a Service (the apiserver calling a webhook) need
    # a route before kube-proxy's DNAT picks the pod. Through loopback, whatever no Service
    # rule took is dropped inside the namespace (this kernel has no dummy links).
    sh("ip", "-n", config.NETNS, "route", "replace", config.SERVICE_CIDR, "dev", "lo",
       "src", config.NODE_IP)  # fmt: skip
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=True)
    masquerade(config.FIRST)


def masquerade(node: config.Node) -> None:
    """Pods reach the host (the runner tests' GitHub stand-in) from the node's address;
    between pods, on either node, addresses stay as they are."""
    rule = ("POSTROUTING", "-s", node.pod_cidr, "!", "-d", config.CLUSTER_CIDR, "-j", "MASQUERADE")
    if subprocess.run(["nsenter", f"--net=/run/netns/{node.netns}", "--", "iptables", "-t",
                       "nat", "-C", *rule], capture_output=True).returncode != 0:  # fmt: skip
        sh("iptables", "-t", "nat", "-A", *rule, netns=node.netns)


def write_configs(lay: config.Layout) -> None:
    for directory in (lay.run, lay.state, lay.state / "containerd" / "cni"):
        directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(lay.pki)
    pki.ensure(config.NODE, config.NODE_IP, config.SERVICE_IP)
    for client in CLIENTS:
        name = "admin" if client.file == "admin" else client.file
        path = lay.kubeconfig if name == "admin" else lay.kubeconfig_of(name)
        path.write_text(pki.kubeconfig(client, lay.apiserver_url))
        path.chmod(0o600)
    (lay.run / "scheduler.yaml").write_text(config.scheduler_config(lay))
    (lay.run / "audit-policy.yaml").write_text(config.audit_policy())
    write_node_configs(lay, config.FIRST)


def write_node_configs(lay: config.Layout, node: config.Node) -> None:
    own = lay.of(node)
    for directory in (own.run, own.state / "containerd" / "cni"):
        directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(lay.pki)
    pki.ensure_node(node.name, node.ip, node.kubelet_identity)
    kubeconfig = lay.kubeconfig_of(node.kubelet_identity)
    kubeconfig.write_text(
        pki.kubeconfig(kubelet_client(node.name, node.kubelet_identity), lay.apiserver_url)
    )
    kubeconfig.chmod(0o600)
    resolv = lay.state / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")  # nothing answers: lookups fail fast, locally
    files = {
        own.run / "containerd.toml": config.containerd_config(own),
        own.state / "containerd" / "cni" / "10-vdc-e2e.conflist": config.cni_conflist(node),
        own.run / "kubelet.yaml": config.kubelet_config(own, resolv, node),
        own.run / "kube-proxy.yaml": config.kube_proxy_config(own, node),
    }
    for path, text in files.items():
        path.write_text(text)


PAUSE_SOURCE = Path(__file__).with_name("pause.c")


def pause_archive(lay: config.Layout) -> Path:
    return lay.state / "pause.oci.tar"


def _pause_stamp(lay: config.Layout) -> Path:
    return lay.state / "pause.source"


def pause_current(lay: config.Layout) -> bool:
    stamp = _pause_stamp(lay)
    return (
        pause_archive(lay).exists()
        and stamp.exists()
        and stamp.read_bytes() == PAUSE_SOURCE.read_bytes()
    )


def build_pause(lay: config.Layout) -> Path:
    """The sandbox image, built from pause.c (cached by the source's content)."""
    out = pause_archive(lay)
    if pause_current(lay):
        return out
    source = PAUSE_SOURCE.read_bytes()
    lay.state.mkdir(parents=True, exist_ok=True)
    _pause_stamp(lay).unlink(missing_ok=True)
    binary = lay.state / "pause"
    sh("gcc", "-Os", "-static", "-s", "-o", str(binary), str(PAUSE_SOURCE))
    layer = oci.layer([oci.File("pause", binary.read_bytes(), 0o755)])
    partial = out.with_name(out.name + ".partial")
    oci.write_archive(partial, config.PAUSE_IMAGE, [layer], entrypoint=["/pause"])
    os.replace(partial, out)
    _pause_stamp(lay).write_bytes(source)
    return out


def import_image(lay: config.Layout, archive: Path, node: config.Node = config.FIRST) -> None:
    argv = ("ctr", "--address", str(lay.of(node).containerd_socket), "-n", "k8s.io", "images",
            "import", str(archive))  # fmt: skip
    for attempt in range(3):
        try:
            sh(*argv, netns=node.netns)
            return
        except ClusterError as exc:
            # containerd 1.6 may collect the snapshots of the image a new import replaces
            # while it unpacks the new one on top of them ("parent snapshot ... does not
            # exist"): the next attempt finds them gone and unpacks afresh.
            if "does not exist" not in str(exc) or attempt == 2:
                raise


def up(*, build_missing: bool = True) -> config.Layout:
    """Start the cluster (or find it running). `build_missing=False`, as the tests call
    it, refuses to build the binaries or the pause image: `make deps-e2e` makes them."""
    lay = layout()
    if healthy(lay):
        return lay
    check_packages()
    if build_missing:
        build.build()
        build_pause(lay)
    elif not (build.cluster_built() and pause_current(lay)):
        raise ClusterError(
            f"the e2e cluster's binaries ({lay.bin}) or its pause image are not built:"
            " run `make deps-e2e`"
        )
    down(lay)  # whatever a killed earlier `up` left
    ensure_netns()
    write_configs(lay)
    (lay.run / "state-dir").write_text(str(lay.state))
    argv = config.commands(lay)
    started = time.monotonic()

    start(lay, "containerd", argv["containerd"])
    wait(lay, "containerd", lay.containerd_socket.exists, "its socket")
    # Imported at every start: containerd 1.6 does not pin the sandbox image against GC.
    import_image(lay, pause_archive(lay))

    start(lay, "etcd", argv["etcd"])
    # etcd listens on the namespace's loopback only: asked from inside it.
    health = ("curl", "-sf", "http://127.0.0.1:2379/health")
    wait(lay, "etcd", lambda: '"health":"true"' in sh(*health, netns=True), "health")
    start(lay, "kube-apiserver", argv["kube-apiserver"])
    wait(lay, "kube-apiserver", lambda: api_get(lay, "/readyz")[0] == 200, "readyz")
    # The apiserver's client identity may use kubelets' logs, exec and port-forward.
    if "vdc-e2e-apiserver-kubelet" not in kubectl(lay, "get", "clusterrolebinding", "-o", "name"):
        kubectl(lay, "create", "clusterrolebinding", "vdc-e2e-apiserver-kubelet",
                "--clusterrole=system:kubelet-api-admin", "--user=kube-apiserver")  # fmt: skip
    for name in ("kube-controller-manager", "kube-scheduler"):
        start(lay, name, argv[name])
    start(lay, "kubelet", argv["kubelet"])
    wait(lay, "kubelet", lambda: node_ready(lay), "node Ready")
    start(lay, "kube-proxy", argv["kube-proxy"])
    for name in ("kube-controller-manager", "kube-scheduler", "kube-proxy"):
        wait(lay, name, lambda: True, "running")
    print(f"cluster.py: up in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return lay


# -- a second node ---------------------------------------------------------------------------

NODE_COMPONENTS = ("containerd", "kubelet", "kube-proxy")


def ensure_second_netns(node: config.Node = config.SECOND) -> None:
    """The second node's namespace, a veth pair away from the first's; each routes the
    other's pod CIDR through it, and the host reaches it through the first node."""
    if not Path(f"/run/netns/{node.netns}").exists():
        sh("ip", "netns", "add", node.netns)
    first = ("ip", "-n", config.NETNS)
    second = ("ip", "-n", node.netns)
    if config.PEER_LINK not in sh(*first, "-o", "link", "show"):
        sh(*first, "link", "add", config.PEER_LINK, "type", "veth", "peer", "name",
           config.SECOND_LINK, "netns", node.netns)  # fmt: skip
        sh(*first, "addr", "add", f"{config.PEER_IP}/24", "dev", config.PEER_LINK)
        sh(*first, "link", "set", config.PEER_LINK, "up")
        sh(*second, "addr", "add", f"{node.ip}/24", "dev", config.SECOND_LINK)
        sh(*second, "link", "set", config.SECOND_LINK, "up")
        sh(*second, "link", "set", "lo", "up")
    sh(*first, "route", "replace", node.pod_cidr, "via", node.ip)
    sh(*second, "route", "replace", config.POD_CIDR, "via", config.PEER_IP)
    sh(*second, "route", "replace", f"{config.NODE_IP}/32", "via", config.PEER_IP)
    sh(*second, "route", "replace", f"{config.HOST_IP}/32", "via", config.PEER_IP)
    sh("ip", "route", "replace", config.SECOND_SUBNET, "via", config.NODE_IP)
    sh(*second, "route", "replace", config.SERVICE_CIDR, "dev", "lo", "src", node.ip)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", netns=node.netns)
    masquerade(node)


def _cgroup_roots(node: config.Node) -> list[Path]:
    return [h / node.cgroup_root.strip("/") for h in Path("/sys/fs/cgroup").iterdir()
            if h.is_dir() and node.cgroup_root]  # fmt: skip


def add_node(lay: config.Layout, node: config.Node = config.SECOND) -> config.Layout:
    """Start `node` (containerd, kubelet, kube-proxy) beside a running cluster, or find
    it running; returns its layout. Its containerd has only the pause image: import what
    its pods run (`import_image(..., node)`)."""
    own = lay.of(node)
    if all(pid_of(own, n) is not None for n in NODE_COMPONENTS) and node_ready(lay, node.name):
        return own
    remove_node(lay, node)
    ensure_second_netns(node)
    write_node_configs(lay, node)
    for root in _cgroup_roots(node):
        # The kubelet refuses a cgroupRoot that is missing in any hierarchy.
        root.mkdir(exist_ok=True)
    argv = config.node_commands(own, node)
    started = time.monotonic()
    start(own, "containerd", argv["containerd"], node.netns)
    wait(own, "containerd", own.containerd_socket.exists, "its socket")
    import_image(lay, pause_archive(lay), node)
    start(own, "kubelet", argv["kubelet"], node.netns)
    wait(own, "kubelet", lambda: node_ready(lay, node.name), "node Ready")
    start(own, "kube-proxy", argv["kube-proxy"], node.netns)
    wait(own, "kube-proxy", lambda: True, "running")
    print(f"cluster.py: node {node.name} up in {time.monotonic() - started:.1f} s",
          file=sys.stderr)  # fmt: skip
    return own


def remove_node(lay: config.Layout, node: config.Node = config.SECOND) -> None:
    """Stop `node`'s components, remove its pods' containers, namespace and cgroups, and
    its Node object (so nothing waits for a node that is gone)."""
    own = lay.of(node)
    if own.run.exists():
        for name in ("kube-proxy", "kubelet"):
            stop(own, name)
        if pid_of(own, "containerd") is not None:
            _remove_pods(own, node)
        stop(own, "containerd")
        _kill_shims(own)
    _unmount(own)
    if Path(f"/run/netns/{node.netns}").exists():
        sh("ip", "netns", "delete", node.netns)
    if Path(f"/run/netns/{config.NETNS}").exists():
        sh("ip", "-n", config.NETNS, "link", "delete", config.PEER_LINK, check=False)
    sh("ip", "route", "delete", config.SECOND_SUBNET, check=False)
    for root in _cgroup_roots(node):
        _remove_cgroup_tree(root)
    shutil.rmtree(own.run, ignore_errors=True)
    with contextlib.suppress(OSError, urllib.error.URLError, ClusterError):
        if api_get(lay, "/readyz")[0] == 200:
            kubectl(lay, "delete", "node", node.name, "--ignore-not-found", "--wait=false")


# -- teardown --------------------------------------------------------------------------------


def down(lay: config.Layout, purge: bool = False) -> None:
    """Stop everything `up` started, by pid, and remove what it left in the kernel."""
    remove_node(lay)
    if lay.run.exists():
        for name in ("kube-proxy", "kubelet", "kube-scheduler", "kube-controller-manager"):
            stop(lay, name)
        if pid_of(lay, "containerd") is not None:
            _remove_pods(lay)
        for name in ("kube-apiserver", "etcd", "containerd"):
            stop(lay, name)
        _kill_shims(lay)
    _unmount(lay)
    for netns in Path("/run/netns").glob("cni-*"):
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["ip", "netns", "delete", netns.name], check=True, capture_output=True)
    if Path(f"/run/netns/{config.NETNS}").exists():
        sh("ip", "netns", "delete", config.NETNS)  # takes the veth pair and iptables with it
    # The kernel frees a namespace (and so the host end of the veth) a moment later.
    deadline = time.monotonic() + 15
    while config.HOST_LINK in sh("ip", "-o", "link", "show") and time.monotonic() < deadline:
        time.sleep(0.1)
    _remove_pod_cgroups()
    shutil.rmtree(lay.run, ignore_errors=True)
    if purge:
        shutil.rmtree(lay.state, ignore_errors=True)


def _remove_pods(lay: config.Layout, node: config.Node = config.FIRST) -> None:
    """`lay` is the node's."""
    ctr = ("ctr", "--address", str(lay.containerd_socket), "-n", "k8s.io")
    ns = node.netns
    for task in sh(*ctr, "tasks", "ls", "-q", netns=ns, check=False).split():
        sh(*ctr, "tasks", "kill", "-s", "SIGKILL", task, netns=ns, check=False)
    time.sleep(0.5)
    for task in sh(*ctr, "tasks", "ls", "-q", netns=ns, check=False).split():
        sh(*ctr, "tasks", "delete", "-f", task, netns=ns, check=False)
    for container in sh(*ctr, "containers", "ls", "-q", netns=ns, check=False).split():
        sh(*ctr, "containers", "delete", container, netns=ns, check=False)


def _kill_shims(lay: config.Layout) -> None:
    """A shim whose containerd is gone still holds its container: stop those of the node
    whose layout `lay` is, and no other node's (its pods run on)."""
    # containerd starts each shim with `-address <its socket>` among the arguments.
    wanted = (b"-address", str(lay.containerd_socket).encode())
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            argv = cmdline.read_bytes().split(b"\0")
            if argv[0].endswith(b"containerd-shim-runc-v2") and wanted in pairwise(argv):
                os.kill(int(cmdline.parent.name), signal.SIGKILL)


def _unmount(lay: config.Layout) -> None:
    """What the kubelet and containerd mounted (volumes, sandbox shm) and left behind."""
    roots = (str(lay.state / "kubelet"), str(lay.run))  # kubelet bind-mounts its root dir
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    ours = [m for m in mounts if m in roots or m.startswith(tuple(r + "/" for r in roots))]
    for mount in sorted(ours, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _remove_pod_cgroups() -> None:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        _remove_cgroup_tree(hierarchy / "kubepods")


def _remove_cgroup_tree(top: Path) -> None:
    if top.is_dir():
        for directory in sorted(top.rglob("*"), key=lambda p: -len(p.parts)):
            if directory.is_dir():
                with contextlib.suppress(OSError):
                    directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


# -- status ----------------------------------------------------------------------------------


def status(lay: config.Layout) -> bool:
    """Print each component and node; True when the cluster (its first node) is healthy."""

    def components(own: config.Layout, names: tuple[str, ...], prefix: str = "") -> bool:
        pids = {name: pid_of(own, name) for name in names}
        for name, pid in pids.items():
            print(f"{prefix + name:<24} {'running, pid ' + str(pid) if pid else 'not running'}")
        return all(pids.values())

    ok = components(lay, START_ORDER)
    try:
        ready = api_get(lay, "/readyz")[0] == 200
        node = node_ready(lay)
    except (OSError, urllib.error.URLError):
        ready = node = False
    print(f"{'apiserver /readyz':<24} {'ok' if ready else 'not ready'}")
    print(f"{'node ' + config.NODE:<24} {'Ready' if node else 'not Ready'}")
    second = lay.of(config.SECOND)
    if second.run.exists():
        components(second, NODE_COMPONENTS, f"{config.SECOND.name} ")
        with contextlib.suppress(OSError, urllib.error.URLError):
            ready2 = node_ready(lay, config.SECOND.name)
            print(f"{'node ' + config.SECOND.name:<24} {'Ready' if ready2 else 'not Ready'}")
    print(f"KUBECONFIG={lay.kubeconfig}")
    return ok and ready and node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the cluster (or reuse a healthy one)")
    sub.add_parser("status", help="show each component; exit 0 when healthy")
    sub.add_parser("add-node", help=f"start a second node, {config.SECOND.name} (tainted "
                   f"{config.SECOND_TAINT}), beside the running cluster")  # fmt: skip
    sub.add_parser("remove-node", help="stop the second node and forget it")
    purge = sub.add_parser("down", help="stop everything and clean the kernel up")
    purge.add_argument("--purge", action="store_true", help="also forget PKI, etcd, images")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("cluster.py: run as root (it makes a network namespace and cgroups)")
    try:
        if args.command == "up":
            print(f"KUBECONFIG={up().kubeconfig}")
        elif args.command == "add-node":
            add_node(up())
        elif args.command == "remove-node":
            remove_node(layout())
        elif args.command == "down":
            down(layout(), purge=args.purge)
        else:
            raise SystemExit(0 if status(layout()) else 1)
    except ClusterError as exc:
        raise SystemExit(f"cluster.py: {exc}") from None


if __name__ == "__main__":
    main()
