"""The contract between the operator and the agent: every variable the operator puts into an
agent container's environment is one `vdc agent` reads, into the option it means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.operator.test_builders import vdc
from vdc_operator import builders
from vdc_runtime.cli import agent_options, build_parser
from vdc_runtime.resource import spec as cr


def agent_env(body: dict[str, Any], storage: builders.Storage) -> dict[str, str]:
    (pod,) = builders.build_pods(body, cr.parse(body["spec"]), builders.Settings(), storage)
    env = pod["spec"]["containers"][0]["env"]
    # Values Kubernetes fills in from the pod (fieldRef), as it would.
    filled = {"VDC_NAMESPACE": "lab", "POD_NAME": "vdc-quickstart", "POD_IP": "10.0.0.5"}
    return {e["name"]: e.get("value", filled.get(e["name"])) for e in env}


def test_every_variable_the_operator_sets_reaches_the_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = vdc()
    body["spec"]["bmc"] = {}  # no users: a generated account
    restore = builders.Restore(claim="snaps", parts={"all": "old/all/u-1"})
    env = agent_env(body, builders.Storage(claim="snaps", restore=restore))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = agent_options(build_parser().parse_args(["agent"]))
    assert (options.name, options.namespace, options.pod, options.pod_ip) == (
        "quickstart", "lab", "vdc-quickstart", "10.0.0.5",
    )  # fmt: skip
    assert options.holder == Path(builders.HOLDER_SOCKET)
    assert options.snapshots_dir == Path("/var/lib/vdc-snapshots")
    assert options.snapshots_claim == "snaps"
    assert (options.restore, options.restore_dir) == ("u-1", Path("/var/lib/vdc-snapshots/old/all"))
    assert options.bmc_password_file == Path("/etc/vdc/bmc/password")
    assert options.bmc_secret == "vdc-quickstart-bmc"
    understood = {
        "VDC_NAME", "VDC_NAMESPACE", "POD_NAME", "POD_IP", "VDC_SOURCES_DIR",
        "VDC_HOLDER_SOCKET", "VDC_METRICS_PORT", "VDC_SNAPSHOTS_DIR", "VDC_SNAPSHOTS_CLAIM",
        "VDC_RESTORE", "VDC_RESTORE_DIR", "VDC_BMC_PASSWORD_FILE", "VDC_BMC_SECRET",
    }  # fmt: skip
    assert set(env) <= understood, f"not read by the agent: {set(env) - understood}"
