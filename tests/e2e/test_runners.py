"""GitHub Actions runners in a VDC's pod, on the real cluster, against the fake GitHub.

GitHub cannot be reached from here, so the operator registers the runners with a local
fake GitHub (tests/github/fake_github.py, in GHES form: https://10.201.0.1:PORT/acme/lab,
the host's end of the cluster's veth) that checks requests as GitHub does, and the runner
containers run the stand-in runner (tests/e2e/runner), which consumes its JIT
configuration as the real runner would, runs the job the test queued on the fake, and
reports the result. Nothing is sent anywhere but this machine.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import config
from tests.e2e.conftest import Kube
from tests.github.fake_github import FakeGitHubThread
from vdc_runtime.bmc.tls import CertificateAuthority

pytestmark = [pytest.mark.root, pytest.mark.slow]

NS = "default"
TOKEN = "ghp_e2e-runners"
ADMIN = ("admin", "s3cret-admin")
STANDIN = "vdc.local/vdc-runner-standin:dev"
READY_TIMEOUT = 600

# The job's steps: real commands against the data center from the runner container.
WAIT_READY = (
    "for i in $(seq 150); do vdc node list --json | python3 -c 'import json,sys;"
    ' sys.exit(0 if all(n["ready"] for n in json.load(sys.stdin)) else 1)\' && exit 0;'
    " sleep 2; done; vdc node list --json; exit 1"
)
STEPS = [
    {"name": "Wait until every machine is ready", "run": WAIT_READY},
    {"name": "Power-cycle n1 through its BMC",
     "run": f"ipmitool -I lanplus -H 10.72.16.11 -U {ADMIN[0]} -P {ADMIN[1]} -C 17"
            " chassis power cycle"},
    {"name": "Wait for the second boot", "run": "sleep 5; " + WAIT_READY},
    {"name": "Read its console log",
     "run": "vdc node console-log n1 > console.txt; n=$(grep -c VDC-GUEST-READY console.txt);"
            " echo \"boots: $n\"; test $n -ge 2"},
]  # fmt: skip


@pytest.fixture(scope="module")
def github(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeGitHubThread, str]]:
    """The fake GitHub on the host's end of the cluster's veth, with a CA of its own."""
    work = tmp_path_factory.mktemp("github")
    ca = CertificateAuthority.load_or_create(work / "ca")
    cert, key = ca.issue([config.HOST_IP], work)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with FakeGitHubThread(owner="acme", repo="lab", token=TOKEN, ghes=True,
                          host=config.HOST_IP, port=0, ssl_context=context) as gh:  # fmt: skip
        yield gh, ca.cert_path.read_text()


def manifest(name: str, gh: FakeGitHubThread, ca_pem: str, **after_job: str) -> str:
    vdc = {
        "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "networks": [{"name": "bmc", "type": "bmc", "address": "10.72.16.1/24"}],
            "images": [{"name": "k", "file": "/usr/share/vdc/demo/vmlinuz"},
                       {"name": "i", "file": "/usr/share/vdc/demo/initrd.gz"}],
            "nodes": [{"name": "n1", "smp": {"cpus": 1}, "memory": "192M",
                       "kernel": {"image": "k"}, "initrd": {"image": "i"},
                       "cmdline": "console=ttyS0 quiet", "bmc": {"address": "10.72.16.11"},
                       "readiness": {"console": "VDC-GUEST-READY"}}],
            "bmc": {"users": [{"name": ADMIN[0], "password": ADMIN[1]}]},
            "runners": {
                "url": f"{gh.url}/acme/lab", "credentials": {"secretName": "github-token"},
                "labels": ["vdc-lab"], "image": STANDIN, "command": ["vdc-standin-runner"],
                "afterJob": after_job, "caBundle": ca_pem,
            },
        },
    }  # fmt: skip
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "github-token", "namespace": NS},
              "stringData": {"token": TOKEN}}  # fmt: skip
    return json.dumps(secret) + "\n---\n" + json.dumps(vdc)


def status(kube: Kube, name: str) -> dict[str, Any]:
    found = kube.call("get", "vdc", name, "-n", NS, "-o", "json")
    return json.loads(found.stdout).get("status") or {} if found.returncode == 0 else {}


def gone(kube: Kube, name: str) -> bool:
    return kube.call("get", "vdc", name, "-n", NS).returncode != 0


def runners_on_github(gh: FakeGitHubThread, vdc: str) -> dict[int, Any]:
    """The runners GitHub has for one VDC (the fake is shared by the module's tests, which
    may run in any order): the operator names them vdc-<namespace>-<vdc>-<uid>-<i>."""
    assert gh.fake is not None
    everyone = gh.call(lambda: dict(gh.fake.runners))  # type: ignore[union-attr]
    return {i: r for i, r in everyone.items() if r.name.startswith(f"vdc-{NS}-{vdc}-")}


def test_a_job_runs_in_the_vdc_which_then_goes(
    operator: Kube, github: tuple[FakeGitHubThread, str]
) -> None:
    gh, ca_pem = github
    operator.apply(manifest("runjob", gh, ca_pem, keepFor="0s"))
    operator.wait_for(lambda: status(operator, "runjob").get("runnersRegistered") == 1,
                      "the runner registered", 120)  # fmt: skip
    label = status(operator, "runjob")["runnerLabel"]
    registered = next(r for r in gh.call(lambda: list(gh.fake.requests))  # type: ignore[union-attr]
                      if r.path.endswith("/generate-jitconfig")
                      and label in (r.json or {}).get("labels", []))  # fmt: skip
    assert registered.method == "POST" and registered.status == 201
    assert registered.path == "/api/v3/repos/acme/lab/actions/runners/generate-jitconfig"
    assert registered.json["labels"] == ["vdc-lab", label]
    assert registered.headers["Authorization"] == f"Bearer {TOKEN}"
    # The GitHub credentials stay with the operator: the pod only has the JIT config.
    pod = operator.get("pod", "vdc-runjob", "-n", NS)
    assert "github-token" not in json.dumps(pod["spec"])
    assert [c["name"] for c in pod["spec"]["containers"]] == ["agent", "holder", "runner-0"]

    started = time.monotonic()
    job = gh.queue_job(["vdc-lab", label], name="reboot-test", steps=STEPS)
    result = gh.wait_result(job, READY_TIMEOUT)
    outputs = "\n".join(f"{s['name']}: {s['exit_code']}\n{s['output']}" for s in result.steps)
    assert result.result == "succeeded", outputs
    print(f"the job took {time.monotonic() - started:.0f} s")
    assert [s["exit_code"] for s in result.steps] == [0, 0, 0, 0]
    assert "boots: " in result.steps[-1]["output"]

    # Its job done, the VDC goes (afterJob.keepFor 0s), its runner removed from GitHub.
    operator.wait_for(lambda: gone(operator, "runjob"), "the VDC deleted", 180)
    assert runners_on_github(gh, "runjob") == {}
    assert operator.get("pods", "-n", NS, "-l", "vdc.dev/name=runjob")["items"] == []
    assert operator.call("get", "secret", "vdc-runjob-runners", "-n", NS).returncode != 0
    events = operator.run("get", "events", "-n", NS, "--field-selector",
                          "involvedObject.name=runjob", "-o", "json")  # fmt: skip
    reasons = {e["reason"] for e in json.loads(events)["items"]}
    assert {"RunnerRegistered", "JobStarted", "RunnerFinished", "JobsDone"} <= reasons, reasons


def test_a_failed_job_keeps_the_vdc_for_debugging(
    operator: Kube, github: tuple[FakeGitHubThread, str]
) -> None:
    gh, ca_pem = github
    operator.apply(manifest("failjob", gh, ca_pem, keepFor="0s"))
    operator.wait_for(lambda: status(operator, "failjob").get("runnersRegistered") == 1,
                      "the runner registered", 120)  # fmt: skip
    label = status(operator, "failjob")["runnerLabel"]
    steps = [
        # As a workflow would: the runner may listen before the agent's API answers.
        {"name": "Wait until every machine is ready", "run": WAIT_READY},
        {"name": "Something breaks", "run": "vdc node list >/dev/null && false"},
        {"name": "Keep the data center", "if": "failure()", "run": "vdc keep 2h"},
    ]
    result = gh.wait_result(gh.queue_job([label], name="broken", steps=steps), READY_TIMEOUT)
    assert result.result == "failed"
    assert "kept until" in result.steps[-1]["output"], result.steps

    def kept() -> bool:
        s = status(operator, "failjob")
        return bool(s.get("keepUntil")) and bool(s.get("deleteAt"))

    operator.wait_for(kept, "the VDC kept", 60)
    s = status(operator, "failjob")
    assert s["runners"][0]["result"] == "failed" and s["deleteAt"] >= s["keepUntil"]
    time.sleep(10)  # past keepFor 0s: still there
    assert not gone(operator, "failjob")
    operator.run("delete", "vdc", "failjob", "-n", NS, "--wait=true", "--timeout=180s")
    assert runners_on_github(gh, "failjob") == {}


def test_rate_limited_registration_is_a_condition_and_recovers(
    operator: Kube, github: tuple[FakeGitHubThread, str]
) -> None:
    gh, ca_pem = github
    gh.call(lambda: gh.fake.rate_limit(3, reset_in=8))  # type: ignore[union-attr]
    operator.apply(manifest("limited", gh, ca_pem))

    def condition() -> dict[str, Any]:
        found = [c for c in status(operator, "limited").get("conditions", [])
                 if c["type"] == "RunnersRegistered"]  # fmt: skip
        return found[0] if found else {}

    operator.wait_for(lambda: condition().get("reason") == "RateLimited", "RateLimited", 60)
    assert operator.get("pods", "-n", NS, "-l", "vdc.dev/name=limited")["items"] == []
    operator.wait_for(lambda: condition().get("status") == "True", "registered after", 120)
    operator.wait_for(lambda: status(operator, "limited").get("phase") == "Running",
                      "the VDC running", READY_TIMEOUT)  # fmt: skip
    operator.run("delete", "vdc", "limited", "-n", NS, "--wait=true", "--timeout=180s")
    assert runners_on_github(gh, "limited") == {}
