"""No well-known BMC account on Kubernetes (issue 2-8): a VirtualDataCenter that names no
BMC users gets a generated account in a Secret it owns, which its status names; its
published BMCs refuse Placemat's cybozu/cybozu and accept the generated password."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Kube
from tests.e2e.lab import one_worker
from tests.e2e.test_operator import NS, plugin, pods_of, vdc, wait_ready

pytestmark = [pytest.mark.root, pytest.mark.slow]

NAME, NODE = "credtest", "cr-worker-1"
IPMI, REDFISH = 6230, 8443


@pytest.fixture
def lab(operator: Kube) -> Iterator[Kube]:
    operator.apply(one_worker(NAME, NODE, bmc={"publish": {"ipmiPort": IPMI,
                                                           "redfishPort": REDFISH}}))  # fmt: skip
    try:
        wait_ready(operator, NAME)
        yield operator
    finally:
        operator.call("delete", "vdc", NAME, "-n", NS, "--wait=true", "--timeout=180s")


def from_the_cluster(*argv: str) -> subprocess.CompletedProcess[str]:
    """From the node's network namespace, where pod addresses are reached (as from a pod)."""
    return subprocess.run(["ip", "netns", "exec", "vdc-e2e", *argv],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def power_status(host: str, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return from_the_cluster("ipmitool", "-I", "lanplus", "-H", host, "-p", str(IPMI),
                            "-U", user, "-P", password, "-C", "17", "-N", "2", "-R", "1",
                            "power", "status")  # fmt: skip


def redfish(host: str, user: str, password: str) -> str:
    """The HTTP status of the Systems collection, logged in as `user`."""
    done = from_the_cluster("curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}",
                            "-u", f"{user}:{password}",
                            f"https://{host}:{REDFISH}/redfish/v1/Systems")  # fmt: skip
    return done.stdout


def test_published_bmcs_take_the_generated_account_only(lab: Kube) -> None:
    kube = lab
    status = vdc(kube, NAME)["status"]
    assert status["bmc"]["secretName"] == f"vdc-{NAME}-bmc"
    secret = kube.get("secret", f"vdc-{NAME}-bmc", "-n", NS)
    assert secret["metadata"]["ownerReferences"][0]["name"] == NAME
    shown = plugin(kube, "credentials", NAME, "-n", NS, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    account = json.loads(shown.stdout)
    assert account["username"] == "admin" and len(account["password"]) == 20

    (pod,) = pods_of(kube, NAME)
    host = pod["status"]["podIP"]
    refused = power_status(host, "cybozu", "cybozu")
    assert refused.returncode != 0, refused.stdout
    accepted = power_status(host, "admin", account["password"])
    assert accepted.returncode == 0 and "Chassis Power is on" in accepted.stdout, accepted.stderr
    assert redfish(host, "cybozu", "cybozu") == "401"
    assert redfish(host, "admin", account["password"]) == "200"
