"""Reads off the start-up path go through pyroute2; the start-up path imports neither it nor
what a lab without machines does not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.runtime.harness import HostNetns, call_in_netns
from vdc_runtime.fabric.present import link_groups


@pytest.mark.parametrize(
    "module",
    ["pyroute2", "aiohttp", "qemu", "vdc_runtime.fleet", "vdc_runtime.bmc", "vdc_runtime.nodes"],
)
def test_starting_a_run_imports_only_what_it_uses(module: str) -> None:
    # Importing vdc's modules loads none of these: pyroute2 is never on the start-up path,
    # the API's aiohttp is loaded by the command that serves it, machines' code only for
    # a spec with machines.
    code = (
        "import sys, vdc_runtime.cli, vdc_runtime.datacenter, vdc_runtime.fabric\n"
        f"print(sorted(m for m in sys.modules if (m + '.').startswith('{module}.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module",
    [
        "vdc_runtime.client",
        "vdc_runtime.faults",
        "vdc_runtime.graph",
        "vdc_runtime.nodes.layout",
        "vdc_runtime.nodes.machine",
        "vdc_runtime.spec.loader",
        "yaml",
        "pyroute2",
    ],
)
def test_serving_a_run_without_machines_imports_only_what_it_uses(module: str) -> None:
    # What `vdc run` of a cached spec without machines loads before its first answer: the
    # API client, faults, pictures and power actions wait for a request that needs them;
    # YAML and the loader for a spec not validated before.
    code = (
        "import sys, vdc_runtime.cli, vdc_runtime.spec.cache, vdc_runtime.api\n"
        f"print(sorted(m for m in sys.modules if (m + '.').startswith('{module}.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.root
def test_link_groups_agree_with_iproute2(host: HostNetns) -> None:
    host.sh(["ip", "link", "add", "grouped0", "group", "4711", "type", "bridge"])
    host.sh(["ip", "link", "add", "plain0", "type", "bridge"])
    shown = json.loads(host.sh(["ip", "-j", "-d", "link", "show"]))
    expected = {
        link["ifname"]: 0 if link["group"] == "default" else int(link["group"]) for link in shown
    }
    found = call_in_netns(host.name, link_groups)
    assert found == expected
    assert found["grouped0"] == 4711 and found["plain0"] == 0
