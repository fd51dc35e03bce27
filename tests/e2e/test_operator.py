"""The operator on the real cluster: invalid VDCs refused at `kubectl apply`, the quick
start reaching Ready with its guests booted, spec changes, deletion leaving nothing, and
an operator killed mid-provisioning recovering without a second pod.

The tests share the quick-start VDC (the `quickstart` fixture applies it once; each test
that uses it starts once it is Ready and leaves it Ready), in any order; deleting one
and killing the operator happen to VDCs of their own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import ROOT, Kube
from tests.operator.invalid_vdcs import CASES, Case
from tests.prereqs import require

pytestmark = [pytest.mark.root, pytest.mark.slow]

EXAMPLE = ROOT / "examples" / "vdc-quickstart.yaml"
NS = "default"
READY_TIMEOUT = 600  # two PXE-booting TCG guests on a loaded 2-core machine


def refusal(kube: Kube, manifest: dict[str, Any]) -> str:
    done = kube.call("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest))
    assert done.returncode != 0, f"accepted: {json.dumps(manifest)[:300]}"
    return done.stderr


def check_refusal(text: str, case: Case) -> None:
    assert case.path.removeprefix("spec.") in text or case.path in text, text
    assert case.says in text, text


@pytest.mark.parametrize("case", [c for c in CASES if c.schema], ids=lambda c: c.id)
def test_the_crd_alone_refuses(crd: Kube, case: Case) -> None:
    check_refusal(refusal(crd, case.manifest(NS)), case)


def test_the_crd_alone_admits_what_only_the_whole_spec_tells(crd: Kube) -> None:
    for case in CASES:
        if not case.schema:
            done = crd.call("apply", "--dry-run=server", "-f", "-",
                            stdin=json.dumps(case.manifest(NS)))  # fmt: skip
            # Admitted, or (when an earlier test installed the operator) refused by its
            # webhook only: the API server checks the schema before it asks the webhook.
            webhook = 'admission webhook "vdc-spec.vdc.dev" denied' in done.stderr
            assert done.returncode == 0 or webhook, (case.id, done.stderr)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_the_webhook_refuses_with_the_models_messages(operator: Kube, case: Case) -> None:
    check_refusal(refusal(operator, case.manifest(NS)), case)


def test_a_refused_apply_creates_nothing(operator: Kube) -> None:
    case = next(c for c in CASES if c.id == "undefined-network")
    done = operator.call("apply", "-f", "-", stdin=json.dumps(case.manifest(NS)))
    assert done.returncode != 0
    assert "denied the request" in done.stderr
    assert "spec.nodes[0].interfaces[0].network" in done.stderr
    assert operator.call("get", "vdc", "bad", "-n", NS).returncode != 0


# -- the quick start -----------------------------------------------------------------------------


def vdc(kube: Kube, name: str = "quickstart") -> dict[str, Any]:
    return kube.get("vdc", name, "-n", NS)  # type: ignore[no-any-return]


def pods_of(kube: Kube, name: str) -> list[dict[str, Any]]:
    return kube.get("pods", "-n", NS, "-l", f"vdc.dev/name={name}")["items"]  # type: ignore[no-any-return]


def plugin(kube: Kube, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECTL": kube.kubectl[0], "KUBECONFIG": kube.kubectl[2]}
    # Installed next to this interpreter by `pip install` (make deps), as a user's would be.
    kubectl_vdc = Path(sys.executable).parent / "kubectl-vdc"
    return subprocess.run([str(kubectl_vdc), *args], capture_output=True, text=True, env=env,
                          timeout=120)  # fmt: skip


@pytest.fixture(scope="module")
def quickstart_applied(operator: Kube) -> Iterator[Kube]:
    """examples/vdc-quickstart.yaml, applied once for the module, deleted after it."""
    started = time.monotonic()
    operator.run("apply", "-n", NS, "-f", str(EXAMPLE))
    wait_ready(operator)
    print(f"quickstart Ready after {time.monotonic() - started:.0f} s")
    yield operator
    operator.call("delete", "-n", NS, "-f", str(EXAMPLE), "--wait=true", "--timeout=180s")


def wait_ready(kube: Kube, name: str = "quickstart") -> None:
    done = kube.call("wait", "-n", NS, "--for=condition=Ready", f"vdc/{name}",
                     f"--timeout={READY_TIMEOUT}s")  # fmt: skip
    body = vdc(kube, name)
    assert done.returncode == 0, (done.stderr, json.dumps(body.get("status"), indent=1))


@pytest.fixture
def quickstart(quickstart_applied: Kube) -> Kube:
    """The quick-start VDC, Ready (a test before may have power-cycled a machine)."""
    wait_ready(quickstart_applied)
    return quickstart_applied


def test_quickstart_reaches_ready(quickstart: Kube) -> None:
    operator = quickstart
    body = vdc(operator)
    status = body["status"]
    assert status["phase"] == "Running" and status["ready"] == "2/2"
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert status["accel"] in ("KVM", "TCG")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {k: conditions[k]["status"] for k in conditions} == {
        "Ready": "True", "NetworkReady": "True", "NodesReady": "True",
        "Accelerated": "True" if status["accel"] == "KVM" else "False",
    }  # fmt: skip
    assert conditions["Accelerated"]["reason"] == status["accel"]
    nodes = {n["name"]: n for n in status["nodes"]}
    assert set(nodes) == {"worker-1", "worker-2"}
    for name in nodes:
        assert nodes[name]["phase"] == "Ready" and nodes[name]["power"] == "On"
        assert "startTime" in nodes[name]

    # The guests announce their BMC addresses a little after their ready marker.
    def bmc_addresses() -> dict[str, str | None]:
        return {n["name"]: n.get("bmcAddress") for n in vdc(operator)["status"]["nodes"]}

    expected = {"worker-1": "10.72.16.11", "worker-2": "10.72.16.12"}
    operator.wait_for(lambda: bmc_addresses() == expected, "the BMC addresses", 60)
    # The guests really booted: their consoles show the marker, seen through the plugin.
    log = plugin(operator, "console-log", "quickstart", "worker-1", "-n", NS)
    assert log.returncode == 0 and "VDC-GUEST-READY" in log.stdout, log.stderr
    (pod,) = pods_of(operator, "quickstart")
    assert pod["metadata"]["ownerReferences"][0]["kind"] == "VirtualDataCenter"


def test_kubectl_get_describe_and_the_plugin(quickstart: Kube) -> None:
    operator = quickstart
    table = operator.run("get", "vdc", "-n", NS)
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "PHASE", "READY", "ACCEL", "GROUPS", "AGE"]
    assert row.split()[:3] == ["quickstart", "Running", "2/2"]
    assert "quickstart" in operator.run("get", "all", "-n", NS)  # the `all` category
    described = operator.run("describe", "vdc", "quickstart", "-n", NS)
    for reason in ("PodCreated", "NodeReady", "Running"):
        assert reason in described, described
    nodes = plugin(operator, "nodes", "quickstart", "-n", NS)
    assert nodes.returncode == 0, nodes.stderr
    lines = nodes.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "POWER", "STATE", "READY"]
    assert any(line.split()[:4] == ["worker-2", "On", "running", "true"] for line in lines)
    assert plugin(operator, "list", "-n", NS).stdout.count("quickstart") == 1


def test_kubectl_vdc_dashboard(quickstart: Kube) -> None:
    """The agent's web view through `kubectl vdc dashboard`'s port-forward, with the token
    the plugin read in the pod: the page and its xterm.js (the pinned one, which the image
    bundled) come from the pod; without the token, actions are refused."""
    env = {**os.environ, "KUBECTL": quickstart.kubectl[0], "KUBECONFIG": quickstart.kubectl[2]}
    kubectl_vdc = Path(sys.executable).parent / "kubectl-vdc"
    proc = subprocess.Popen([str(kubectl_vdc), "dashboard", "quickstart", "-n", NS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only

    def get(url: str, **headers: str) -> bytes:
        with direct.open(urllib.request.Request(url, headers=headers), timeout=30) as answer:
            return answer.read()  # type: ignore[no-any-return]

    def refused(url: str, **headers: str) -> tuple[int, str]:
        with pytest.raises(urllib.error.HTTPError) as caught:
            direct.open(urllib.request.Request(url, method="POST", headers=headers), timeout=30)
        return caught.value.code, json.load(caught.value)["error"]

    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line.startswith("web view of quickstart: http://127.0.0.1:"):
            proc.terminate()
            raise AssertionError(f"kubectl vdc dashboard said {line!r}: {proc.stderr.read()}")
        base, token = line.split(": ", 1)[1].strip().split("/ui/?token=")
        page = get(f"{base}/ui/").decode()
        linked = re.findall(r'(?:src|href)="([^"]*)"', page)
        assert "/ui/static/vendor/xterm.js" in linked, page
        for url in linked:  # nothing from a CDN: all of it from the agent, through the forward
            assert url.startswith("/ui/static/") or url == "data:,", url
            if url.startswith("/ui/static/"):
                assert get(f"{base}{url}"), url
        assert get(f"{base}/ui/static/vendor/xterm.js") == require.pinned_xterm()
        drawn = get(f"{base}/ui/topology.svg").decode()
        assert "worker-1 [ready]" in drawn and "worker-2 [ready]" in drawn
        session = json.loads(get(f"{base}/ui/session", Authorization=f"Bearer {token}"))
        assert session["authorized"] is True and session["console"] is True, session
        assert session["missing"] is None, session
        # Without the token: the page's action and its console are refused.
        code, _ = refused(f"{base}/ui/nodes/worker-1/nmi")
        assert code == 401
        code, _ = refused(f"{base}/ui/nodes/worker-1/nmi", Authorization="Bearer wrong")
        assert code == 403
        # A browser's request to the plain API needs the token too (a script's does not).
        code, error = refused(f"{base}/nodes/worker-1/nmi", Origin="https://evil.example")
        assert code == 403, error
        code, error = refused(f"{base}/nodes/worker-1/nmi", Origin=base)
        assert code == 401 and "token" in error, error
        assert not json.loads(get(f"{base}/ui/session"))["authorized"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_metrics(quickstart: Kube) -> None:
    operator = quickstart
    url = "http://127.0.0.1:9090/metrics"
    script = f"import urllib.request; print(urllib.request.urlopen('{url}').read().decode())"
    agent = operator.run("exec", "-n", NS, "vdc-quickstart", "-c", "agent", "--",
                         "python3", "-c", script)  # fmt: skip
    assert 'vdc_node_boots_total{node="worker-1"}' in agent
    assert 'vdc_node_ready{node="worker-2"} 1.0' in agent
    assert 'vdc_datacenter_phase{phase="running"} 1.0' in agent
    assert "vdc_bmc_requests_total" in agent
    operator_pod = operator.get("pods", "-n", "vdc-system", "-l",
                                "app.kubernetes.io/name=vdc")["items"][0]  # fmt: skip
    ip = operator_pod["status"]["podIP"]
    text = subprocess.run(
        ["ip", "netns", "exec", "vdc-e2e", "curl", "-sf", f"http://{ip}:8080/metrics"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert 'vdc_operator_reconciles_total{handler="reconcile",result="ok"}' in text
    assert 'vdc_operator_vdcs{phase="Running"} 1.0' in text


def test_another_pod_power_cycles_a_node_through_its_bmc(quickstart: Kube) -> None:
    operator = quickstart
    status = vdc(operator)["status"]
    host, port = status["bmc"]["host"], status["bmc"]["ipmiPort"] + 1  # worker-2: the 2nd node
    assert host == pods_of(operator, "quickstart")[0]["status"]["podIP"]
    ipmitool = ["ipmitool", "-I", "lanplus", "-H", host, "-p", str(port), "-U", "admin",
                "-P", "change-me", "-C", "17", "-N", "3", "-R", "3"]  # fmt: skip
    client = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bmc-client", "namespace": NS},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "ipmitool", "image": "vdc.local/vdc-runtime:dev",
            "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", " ".join(ipmitool) + " power status && "
                        + " ".join(ipmitool) + " chassis power cycle"],
        }]},
    }  # fmt: skip
    booting_before = operator.run("get", "events", "-n", NS, "--field-selector",
                                  "reason=NodeBooting,involvedObject.name=quickstart",
                                  "-o", "name").count("\n")  # fmt: skip
    operator.apply(json.dumps(client))
    try:

        def finished() -> bool:
            phase = operator.get("pod", "bmc-client", "-n", NS)["status"].get("phase")
            return phase in ("Succeeded", "Failed")

        operator.wait_for(finished, "the BMC client pod", 120)
        logs = operator.run("logs", "bmc-client", "-n", NS)
        assert operator.get("pod", "bmc-client", "-n", NS)["status"]["phase"] == "Succeeded", logs
        assert "Chassis Power is on" in logs and "Chassis Power Control: Cycle" in logs, logs
    finally:
        operator.call("delete", "pod", "bmc-client", "-n", NS, "--wait=false")

    def worker_2() -> dict[str, Any]:
        return {n["name"]: n for n in vdc(operator)["status"]["nodes"]}["worker-2"]

    # The status follows: worker-2 boots again (its readiness starts over), then is Ready.
    operator.wait_for(lambda: worker_2()["phase"] != "Ready", "worker-2 rebooting", 60)
    operator.wait_for(lambda: worker_2()["phase"] == "Ready", "worker-2 ready again", 300)
    booting_after = operator.run("get", "events", "-n", NS, "--field-selector",
                                 "reason=NodeBooting,involvedObject.name=quickstart",
                                 "-o", "name").count("\n")  # fmt: skip
    assert booting_after > booting_before


def test_power_cycle_is_followed_by_the_status(quickstart: Kube) -> None:
    operator = quickstart
    before = {n["name"]: n for n in vdc(operator)["status"]["nodes"]}["worker-2"]
    result = plugin(operator, "power", "quickstart", "stop", "worker-2", "-n", NS)
    assert result.returncode == 0, result.stderr

    def node() -> dict[str, Any]:
        return {n["name"]: n for n in vdc(operator)["status"]["nodes"]}["worker-2"]

    operator.wait_for(lambda: node()["power"] == "Off", "worker-2 off in the status", 60)
    assert vdc(operator)["status"]["phase"] == "Provisioning"
    assert plugin(operator, "power", "quickstart", "start", "worker-2", "-n", NS).returncode == 0
    operator.wait_for(lambda: node()["phase"] == "Ready", "worker-2 ready again", 300)
    assert vdc(operator)["status"]["phase"] == "Running"
    assert node()["startTime"] == before["startTime"]  # the same QEMU, rebooted


def test_spec_change_replaces_the_pod(quickstart: Kube) -> None:
    operator = quickstart
    (old,) = pods_of(operator, "quickstart")
    before = vdc(operator)["metadata"]["generation"]
    memory = "320M" if vdc(operator)["spec"]["nodes"][1].get("memory") != "320M" else "336M"
    change = [{"op": "replace", "path": "/spec/nodes/1/memory", "value": memory}]
    operator.run("patch", "vdc", "quickstart", "-n", NS, "--type=json", "-p", json.dumps(change))
    body = vdc(operator)
    generation = before + 1
    assert body["metadata"]["generation"] == generation

    def replaced() -> bool:
        pods = pods_of(operator, "quickstart")
        return len(pods) == 1 and pods[0]["metadata"]["uid"] != old["metadata"]["uid"]

    operator.wait_for(replaced, "a new pod", 180)
    done = operator.call("wait", "-n", NS, "--for=condition=Ready", "vdc/quickstart",
                         f"--timeout={READY_TIMEOUT}s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = vdc(operator)["status"]
    assert status["observedGeneration"] == generation and status["phase"] == "Running"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["observedGeneration"] == generation
    assert "Replacing" in operator.run("describe", "vdc", "quickstart", "-n", NS)


def example_copy(name: str, node_prefix: str = "") -> str:
    """The example's Secret and VDC, the VDC renamed (and its nodes, to tell their QEMUs
    from the quick start's)."""
    docs = list(yaml.safe_load_all(EXAMPLE.read_text()))
    vdc_doc = next(d for d in docs if d["kind"] == "VirtualDataCenter")
    vdc_doc["metadata"]["name"] = name
    for node in vdc_doc["spec"]["nodes"]:
        node["name"] = node_prefix + node["name"]
    secret = next(d for d in docs if d["kind"] == "Secret")
    return json.dumps(secret) + "\n---\n" + json.dumps(vdc_doc)


def qemus(prefix: str) -> list[str]:
    found = subprocess.run(["pgrep", "-f", f"qemu-system.*guest={prefix}"],
                           capture_output=True, text=True)  # fmt: skip
    return found.stdout.split()


def test_delete_leaves_nothing(operator: Kube) -> None:
    operator.apply(example_copy("deletetest", "dt-"))
    operator.wait_for(lambda: len(qemus("dt-worker-")) == 2, "the VDC's two QEMUs", 300)
    operator.run("delete", "vdc", "deletetest", "-n", NS, "--wait=true", "--timeout=180s")
    assert operator.call("get", "vdc", "deletetest", "-n", NS).returncode != 0
    left = []
    for kind in ("pods", "serviceaccounts", "roles", "rolebindings", "secrets"):
        items = operator.get(kind, "-n", NS, "-l", "vdc.dev/name=deletetest")["items"]
        left += [f"{kind}/{i['metadata']['name']}" for i in items]
    assert left == []
    assert qemus("dt-worker-") == []


# -- an operator that dies ----------------------------------------------------------------------


def operator_pids() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "kopf run.*vdc_operator.handlers"],
                           capture_output=True, text=True)  # fmt: skip
    return [int(p) for p in found.stdout.split()]


def test_operator_killed_mid_provisioning_recovers_without_duplicates(operator: Kube) -> None:
    operator.apply(example_copy("crashtest"))
    # Kill the operator as soon as it has created the pod, before the VDC is ready.
    operator.wait_for(lambda: pods_of(operator, "crashtest"), "the first pod", 120)
    pids = operator_pids()
    assert pids, "no operator process found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    seen: set[str] = set()

    def ready_with_one_pod() -> bool:
        pods = pods_of(operator, "crashtest")
        seen.update(p["metadata"]["uid"] for p in pods)
        assert len(pods) <= 1, [p["metadata"]["name"] for p in pods]
        status = vdc(operator, "crashtest").get("status") or {}
        return status.get("phase") == "Running"

    operator.wait_for(ready_with_one_pod, "crashtest Running", READY_TIMEOUT)
    assert len(seen) == 1, seen
    assert operator_pids() and set(operator_pids()).isdisjoint(pids)
    operator.run("delete", "vdc", "crashtest", "-n", NS, "--wait=true", "--timeout=180s")
    assert pods_of(operator, "crashtest") == []
