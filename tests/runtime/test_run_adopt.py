"""`vdc run --adopt`: after a SIGKILL of `vdc run`, the next run with the same run dir and
spec takes over the machines and apps that kept running instead of booting them again."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.guests import console, node_yaml, wait_power
from tests.runtime.harness import (
    HostNetns,
    Snapshot,
    VdcRun,
    assert_no_leftovers,
    processes,
    snapshot,
)
from vdc_runtime.fabric import netns as nsutil

pytestmark = [pytest.mark.root, pytest.mark.slow]

BMC = "10.6.16.5"


def lab(
    tmp_path: Path, guest: GuestPaths, marker: str, restart: str = "no", app_restart: str = "no"
) -> Path:
    text = f"""\
kind: Network
name: adnet
type: internal
---
kind: Network
name: adbmc
type: bmc
address: 10.6.16.1/24
---
kind: NetworkNamespace
name: adns
interfaces:
- network: adnet
  addresses: [10.6.0.1/24]
apps:
- name: ticker
  command: [sh, -c, 'while :; do echo tick {marker}; sleep 0.2; done']
  restart: {app_restart}
---
""" + node_yaml(
        "ad1", guest, cmdline=f"vdc.bmc={BMC}", extra=f"interfaces: [adnet]\nrestart: {restart}\n"
    )
    return write(tmp_path / "lab.yml", text)


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _bmc_served(node: dict[str, Any]) -> bool:
    return node["bmc_address"] == BMC and (node["bmc"] or {}).get("state") == "listening"


@dataclass
class Lab:
    host: HostNetns
    spec: Path
    run_dir: Path
    running: list[VdcRun]
    before: Snapshot
    killed: dict[str, Any] = field(default_factory=dict)
    """The killed run's views of its node and namespace, by path."""


MakeLab = Callable[..., Lab]
FORWARD_PORT = 18087


@pytest.fixture
def make_lab(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> Iterator[MakeLab]:
    """A lab's spec (its app's marker, its node's restart policy) in a fresh run dir;
    whatever a failed test left running of it is removed by a --force run afterwards, so
    no QEMU outlives the test."""
    made: list[Lab] = []

    def make(marker: str, restart: str = "no", app_restart: str = "no") -> Lab:
        lab_ = Lab(host, lab(tmp_path, guest, marker, restart, app_restart), tmp_path / "run",
                   running, snapshot(host))  # fmt: skip
        made.append(lab_)
        return lab_

    yield make
    for lab_ in made:
        if (lab_.run_dir / "vdc-ledger.jsonl").exists():
            forced = VdcRun(host, [lab_.spec], lab_.run_dir, "--force").start()
            forced.wait_ready(120)
            forced.stop()


def _killed_run(lab_: Lab, faults: tuple[dict[str, object], ...] = ()) -> tuple[int, int]:
    """A run whose guest booted, with `faults` applied, then SIGKILLed: its QEMU's and its
    app's pids."""
    running = lab_.running
    first = VdcRun(lab_.host, [lab_.spec], lab_.run_dir).start()
    running.append(first)
    first.wait_ready(120)
    # Killed as soon as the API shows the guest ready and its announced BMC served: what
    # a run was seen to have, its adopter has (the guest never announces its BMC again).
    deadline = time.monotonic() + 120
    while not _bmc_served(node := first.api("/nodes/ad1")[1]) or not node["ready"]:
        assert time.monotonic() < deadline, node
        time.sleep(0.1)
    qemu = node["pid"]
    app = first.api("/netns/adns")[1]["apps"][0]["pid"]
    forward = {"local_port": FORWARD_PORT, "netns": "adns", "remote_host": "10.6.0.1",
               "remote_port": 7}  # fmt: skip
    assert first.api("/forwards", "POST", body=forward)[0] == 201
    for fault in faults:
        assert first.api("/faults", "POST", body=fault)[0] == 201, fault
    for path in ("/nodes/ad1", "/netns/adns"):
        lab_.killed[path] = first.api(path)[1]
    first.signal(signal.SIGKILL)
    first.wait()
    running.remove(first)
    assert _running(qemu) and _running(app)
    return qemu, app


def test_a_killed_run_is_adopted_and_its_machines_keep_running(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    marker = "31817"
    lab_ = make_lab(marker, "no")
    host, spec, running = lab_.host, lab_.spec, lab_.running
    # Faults end with the run that made them, also where what they changed outlives it: a
    # qdisc on the node's tap, a namespace's link down, the QEMU's vCPUs stopped.
    faults = (
        {"kind": "link", "target": "ad1:eth0", "rate": "10mbit"},
        {"kind": "link", "target": "adns:adnet", "down": True},
        {"kind": "machine", "target": "ad1", "effect": "hang"},
    )
    qemu, app = _killed_run(lab_, faults)
    tap = lab_.killed["/nodes/ad1"]["taps"]["adnet"]
    veth = lab_.killed["/netns/adns"]["interfaces"][0]["host_link"]
    assert "tbf" in host.sh(["tc", "qdisc", "show", "dev", tap])  # left by the killed run
    assert ",UP" not in host.sh(["ip", "-o", "link", "show", "dev", veth])

    adopting = VdcRun(host, [spec], tmp_path / "run", "--adopt").start()
    running.append(adopting)
    adopting.wait_ready(60)
    node = adopting.api("/nodes/ad1")[1]
    assert (node["pid"], node["power_status"], node["restarts"]) == (qemu, "On", 0), node
    assert node["ready"] is True, node  # its power known as On, its readiness kept
    assert _bmc_served(node) and node["bmc"]["origin"] == "announced", node["bmc"]
    power = host.sh(["ipmitool", "-I", "lanplus", "-H", BMC, "-U", "cybozu", "-P", "cybozu",
                     "-C", "17", "power", "status"])  # fmt: skip
    assert "Chassis Power is on" in power
    assert adopting.api("/netns/adns")[1]["apps"][0]["pid"] == app
    assert adopting.api("/faults")[1] == []
    qdiscs = host.sh(["tc", "qdisc", "show", "dev", tap])
    assert "tbf" not in qdiscs and "netem" not in qdiscs, qdiscs
    assert ",UP" in host.sh(["ip", "-o", "link", "show", "dev", veth])
    # The forward added through the API is served again.
    (fwd,) = adopting.api("/forwards")[1]
    assert (fwd["local_port"], fwd["netns"], fwd["remote_port"]) == (FORWARD_PORT, "adns", 7)
    con = console(adopting, "ad1")
    assert con.count("VDC-GUEST-READY") == 1  # one boot: the guest was never restarted
    # Power actions reach the adopted QEMU.
    assert adopting.api("/nodes/ad1/restart", "POST")[0] == 200
    con.wait_for("VDC-GUEST-READY", count=2)
    assert adopting.api("/nodes/ad1")[1]["pid"] == qemu

    assert adopting.stop() == 0, adopting.output
    running.remove(adopting)
    assert not _running(qemu) and not _running(app)
    assert_no_leftovers(lab_.before, host, markers=(marker,))


def test_a_machine_that_ended_in_the_gap_follows_its_restart_policy(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    marker = "31827"
    lab_ = make_lab(marker, "on-failure")
    host, spec, running = lab_.host, lab_.spec, lab_.running
    qemu, _ = _killed_run(lab_)
    os.kill(qemu, signal.SIGKILL)  # while no run watches

    adopting = VdcRun(host, [spec], tmp_path / "run", "--adopt").start()
    running.append(adopting)
    adopting.wait_ready(120)
    node = wait_power(adopting, "ad1", "On")
    assert node["pid"] != qemu and node["restarts"] == 1, node
    assert "its QEMU ended while no run watched it" in adopting.output
    assert adopting.stop() == 0, adopting.output
    running.remove(adopting)
    assert_no_leftovers(lab_.before, host, markers=(marker,))


def _tickers(marker: str) -> list[int]:
    """The pids of the lab's app processes (its shell, by the marker in its command)."""
    shell = f"sh -c while :; do echo tick {marker};"
    return sorted(pid for pid, cmd in processes() if cmd.startswith(shell) and _running(pid))


def test_an_app_started_again_just_before_the_kill_is_adopted_not_started_twice(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    marker = "31847"
    lab_ = make_lab(marker, app_restart="always")
    host, spec, running = lab_.host, lab_.spec, lab_.running
    first = VdcRun(host, [spec], lab_.run_dir).start()
    running.append(first)
    first.wait_ready(120)
    (old,) = _tickers(marker)
    os.kill(old, signal.SIGKILL)
    # Killed as soon as the API shows the app's new process.
    deadline = time.monotonic() + 30
    while (app := first.api("/netns/adns")[1]["apps"][0])["pid"] in (old, None):
        assert time.monotonic() < deadline, app
        time.sleep(0.05)
    first.signal(signal.SIGKILL)
    first.wait()
    running.remove(first)
    assert _tickers(marker) == [app["pid"]]

    adopting = VdcRun(host, [spec], lab_.run_dir, "--adopt").start()
    running.append(adopting)
    adopting.wait_ready(60)
    adopted = adopting.api("/netns/adns")[1]["apps"][0]
    assert (adopted["pid"], adopted["restarts"]) == (app["pid"], 1), adopted
    assert _tickers(marker) == [app["pid"]]  # one app, not a second one beside it
    assert adopting.stop() == 0, adopting.output
    running.remove(adopting)
    assert _tickers(marker) == []
    assert_no_leftovers(lab_.before, host, markers=(marker,))


def test_adopting_another_spec_is_refused_and_touches_nothing(
    make_lab: MakeLab, tmp_path: Path
) -> None:
    marker = "31837"
    lab_ = make_lab(marker, "no")
    host, spec, running = lab_.host, lab_.spec, lab_.running
    qemu, app = _killed_run(lab_)
    changed = write(tmp_path / "changed.yml", spec.read_text().replace("256M", "384M"))

    refused = VdcRun(host, [changed], tmp_path / "run", "--adopt")
    assert refused.run_to_exit() == 1
    assert 'nodes[ad1].memory: "256M" -> "384M"' in refused.output, refused.output
    assert _running(qemu) and _running(app)  # refusing touched nothing

    nothing = VdcRun(host, [spec], tmp_path / "elsewhere", "--adopt")
    assert nothing.run_to_exit() == 1
    assert "nothing to adopt" in nothing.output

    # A namespace gone (its mount removed; the app inside keeps it alive, unreachable):
    # what ran there cannot be adopted.
    assert nsutil.remove("adns")
    gone = VdcRun(host, [spec], tmp_path / "run", "--adopt")
    assert gone.run_to_exit() == 1
    assert "network namespaces adns are gone" in gone.output, gone.output
    assert _running(qemu) and _running(app)

    forced = VdcRun(host, [spec], tmp_path / "run", "--force").start()
    running.append(forced)
    forced.wait_ready(120)
    assert not _running(qemu) and not _running(app)
    assert forced.stop() == 0, forced.output
    running.remove(forced)
    assert_no_leftovers(lab_.before, host, markers=(marker,))
