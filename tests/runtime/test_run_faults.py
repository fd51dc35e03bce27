"""Faults on namespaces through `vdc run`: loss counted with ping, a rate measured with
iperf3, a partition that stops DHCP and nothing else, a link down that takes BGP down,
faults that expire, bad input that changes nothing, and SIGTERM with faults active.

One data center serves the module's tests (in any order: each starts with no fault, and
faults left by a failed one are cleared); the SIGTERM test has a run of its own.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.conftest import write
from tests.runtime.harness import (
    HostNetns,
    VdcRun,
    assert_no_leftovers,
    call_in_netns,
    sh,
    snapshot,
)

pytestmark = [pytest.mark.root, pytest.mark.slow]

BIRD = """\
router id {me};
protocol device {{ scan time 1; }}
protocol bgp peer {{
  local {me} as {asn};
  neighbor {peer} as {peer_asn};
  connect delay time 1; connect retry time 1; hold time {hold};
  # After the hold timer expires BIRD waits `error wait time` (60 s by default) before
  # it connects again; the link-down test would spend that minute idle.
  error wait time 1, 2;
  ipv4 {{ import all; export all; }};
}}
"""
HOLD = 6

SPEC = """\
kind: Network
name: fltlan
type: internal
---
kind: Network
name: fltp2p
type: internal
---
kind: NetworkNamespace
name: fltboot
interfaces:
- {{network: fltlan, addresses: [10.73.0.1/24]}}
apps:
- name: dnsmasq
  command: [dnsmasq, --keep-in-foreground, --log-facility=-, --conf-file={dir}/dnsmasq.conf]
---
kind: NetworkNamespace
name: fltwork
interfaces:
- {{network: fltlan, addresses: [10.73.0.2/24]}}
---
kind: NetworkNamespace
name: fltother
interfaces:
- {{network: fltlan, addresses: [10.73.0.3/24]}}
---
kind: NetworkNamespace
name: fltr1
interfaces:
- {{network: fltp2p, addresses: [10.73.1.0/31]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/r1.conf, -s, {dir}/r1.ctl]
---
kind: NetworkNamespace
name: fltr2
interfaces:
- {{network: fltp2p, addresses: [10.73.1.1/31]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/r2.conf, -s, {dir}/r2.ctl]
"""


class Lab:
    def __init__(self, host: HostNetns, run: VdcRun, workdir: Path) -> None:
        self.host, self.run, self.workdir = host, run, workdir

    def add(self, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
        status, answer = self.run.api("/faults", "POST", body=body)
        assert status == expect, (status, answer)
        return answer

    def clear(self, fault_id: int) -> None:
        status, answer = self.run.api(f"/faults/{fault_id}", "DELETE")
        assert status == 200, (status, answer)

    def faults(self) -> list[dict[str, Any]]:
        status, answer = self.run.api("/faults")
        assert status == 200
        return answer

    def vdc(self, *args: str) -> str:
        """The CLI, in the test's host namespace where the API listens."""
        argv = ["nsenter", f"--net=/run/netns/{self.host.name}", "--",
                sys.executable, "-m", "vdc_runtime.cli", *args]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def bridge_chains(self) -> str:
        """The faults' bridge-family rules, whole ("" before the first fault made them)."""
        return self.host.sh(["nft", "list", "ruleset", "bridge"])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp_path = tmp_path_factory.mktemp("faults")
    write(
        tmp_path / "dnsmasq.conf",
        "port=0\ninterface=eth0\nbind-interfaces\nleasefile-ro\npid-file=\n"
        "dhcp-range=10.73.0.100,10.73.0.200,255.255.255.0,1h\n",
    )
    write(tmp_path / "r1.conf", BIRD.format(
        me="10.73.1.0", asn=65001, peer="10.73.1.1", peer_asn=65002, hold=HOLD))  # fmt: skip
    write(tmp_path / "r2.conf", BIRD.format(
        me="10.73.1.1", asn=65002, peer="10.73.1.0", peer_asn=65001, hold=HOLD))  # fmt: skip
    spec = write(tmp_path / "faults.yml", SPEC.format(dir=tmp_path))
    with HostNetns() as host:
        before = snapshot(host)
        run = VdcRun(host, [spec], tmp_path / "run").start()
        try:
            run.wait_ready()
            yield Lab(host, run, tmp_path)
        finally:
            if run.proc and run.proc.poll() is None:
                run.signal(signal.SIGTERM)
            code = run.wait()
        assert code == 0, run.output
        assert_no_leftovers(before, host, markers=("bird", "dnsmasq", "iperf3"))


@pytest.fixture
def lab_clean(lab: Lab) -> Iterator[Lab]:
    assert lab.faults() == []
    yield lab
    lab.run.api("/faults", "DELETE")


def ping(src: str, dst: str, count: int, interval: float = 0.002) -> int:
    """Replies received. 500 a second by default: the loss fault drops each packet on its
    own, whatever the rate, and 600 of them take a second rather than six."""
    out = sh(["ping", "-q", "-n", "-c", str(count), "-i", str(interval), "-W", "1", dst],
             ns=src, check=False, timeout=count * interval + 30)  # fmt: skip
    match = re.search(r"(\d+) received", out)
    assert match, out
    return int(match[1])


def dhcp(ns: str) -> bool:
    """Whether a DHCPDISCOVER broadcast from `ns`'s eth0 gets an offer (six tries, a
    second apart: dnsmasq leaves the first one of a client unanswered now and then).

    A socket of our own rather than busybox's udhcpc: udhcpc reads frames raw and checks
    their UDP checksums, which a veth leaves for offloading, so it drops every offer."""

    # The interface's own MAC: however dnsmasq addresses its offer, it reaches this socket.
    link = sh(["ip", "-o", "link", "show", "eth0"], ns=ns)
    mac = bytes.fromhex(re.search(r"link/ether ([0-9a-f:]+)", link)[1].replace(":", ""))

    def discover() -> bool:
        xid = os.urandom(4)
        packet = (
            bytes([1, 1, 6, 0]) + xid + b"\x00\x00" + b"\x80\x00"  # broadcast answers
            + bytes(16) + mac + bytes(10) + bytes(192)
            + b"\x63\x82\x53\x63" + bytes([53, 1, 1, 255])
        )  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"eth0")
            sock.bind(("", 68))
            sock.settimeout(1)
            for _ in range(6):
                sock.sendto(packet, ("255.255.255.255", 67))
                deadline = time.monotonic() + 1
                while time.monotonic() < deadline:
                    try:
                        answer = sock.recv(1500)
                    except TimeoutError:
                        break
                    if answer[0] == 2 and answer[4:8] == xid:
                        return True
        return False

    return call_in_netns(ns, discover)


def test_bad_input_changes_nothing(lab_clean: Lab) -> None:
    lab = lab_clean
    cases = [
        ({"kind": "link", "target": "nosuch:eth0", "loss": "10%"}, "target", "nosuch"),
        ({"kind": "link", "target": "fltwork:eth7", "loss": "10%"}, "target", "eth7"),
        ({"kind": "link", "target": "fltwork:eth0", "loss": "130%"}, "loss", "0–100"),
        ({"kind": "link", "target": "fltwork:eth0", "loss": "-5%"}, "loss", "0–100"),
        ({"kind": "link", "target": "fltwork:eth0", "loss": "5%", "for": "-3s"}, "for", "zero"),
        ({"kind": "link", "target": "fltwork:eth0", "loss": "5%", "for": "90d"}, "for", "week"),
        ({"kind": "partition", "between": ["fltwork"], "and": ["nosuch"]}, "and", "nosuch"),
        ({"kind": "machine", "target": "fltwork", "effect": "hang"}, "target", "no node"),
        ({"kind": "frobnicate"}, "kind", "frobnicate"),
    ]
    rules = lab.bridge_chains()
    for body, field, words in cases:
        answer = lab.add(body, expect=400)
        assert answer["field"] == field, (body, answer)
        assert words in answer["error"], (body, answer)
    assert lab.faults() == []
    assert lab.bridge_chains() == rules


def test_delay_needs_netem(lab_clean: Lab) -> None:
    lab = lab_clean
    """Where the kernel has sch_netem the delay applies; elsewhere the error names it."""
    probe = subprocess.run(["unshare", "--net", "tc", "qdisc", "add", "dev", "lo", "root",
                            "netem", "delay", "1ms"], capture_output=True)  # fmt: skip
    body = {"kind": "link", "target": "fltwork:eth0", "delay": "50ms", "direction": "in"}
    if probe.returncode == 0:
        fault = lab.add(body)
        out = sh(["ping", "-c", "3", "-i", "0.2", "10.73.0.2"], ns="fltother")
        rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]
        assert rtts and min(rtts) >= 50, out
        lab.clear(fault["id"])
    else:
        answer = lab.add(body, expect=400)
        assert answer["field"] == "delay" and "sch_netem" in answer["error"], answer
        assert lab.faults() == []


def test_loss_counted_with_ping(lab_clean: Lab) -> None:
    lab = lab_clean
    """30 % of what fltwork sends is dropped: of n echo requests, replies follow a binomial
    law; the bounds are 5 standard deviations wide, so a correct drop rate fails them about
    once in two million runs, and no loss at all (or 60 %) never passes."""
    n, p = 600, 0.30
    out = lab.vdc("fault", "add", "link", "fltwork:eth0", "--loss", "30%", "--direction", "out",
                  "--endpoint", "http://127.0.0.1:10808")  # fmt: skip
    fault_id = int(out.split()[0])
    assert "loss 30%" in lab.vdc("fault", "list")
    lost = n - ping("fltwork", "10.73.0.3", n)
    sd = math.sqrt(n * p * (1 - p))
    assert abs(lost - n * p) <= 5 * sd, f"{lost} of {n} lost, expected {n * p:.0f} ± {5 * sd:.0f}"
    lab.vdc("fault", "clear", str(fault_id))
    assert lab.faults() == []
    assert ping("fltwork", "10.73.0.3", 50) == 50


def test_rate_measured_with_iperf3(lab_clean: Lab) -> None:
    lab = lab_clean
    rate = 20_000_000
    server = subprocess.Popen(
        ["nsenter", "--net=/run/netns/fltwork", "--", "iperf3", "-s", "-1", "-B", "10.73.0.2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        fault = lab.add({"kind": "link", "target": "fltwork:fltlan", "rate": "20mbit"})
        deadline = time.monotonic() + 10
        while True:  # the server listens once it has bound
            probe = subprocess.run(["nsenter", "--net=/run/netns/fltother", "--", "iperf3",
                                    "-c", "10.73.0.2", "-t", "4", "-O", "1", "-J"],
                                   capture_output=True, text=True, timeout=60)  # fmt: skip
            if probe.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert probe.returncode == 0, probe.stdout + probe.stderr
        measured = json.loads(probe.stdout)["end"]["sum_received"]["bits_per_second"]
        assert abs(measured - rate) <= 0.15 * rate, f"{measured / 1e6:.1f} Mbit/s, not 20"
        lab.clear(fault["id"])
    finally:
        server.kill()
        server.wait()


def test_partition_stops_dhcp_and_nothing_else(lab_clean: Lab) -> None:
    lab = lab_clean
    assert dhcp("fltwork")
    fault = lab.add({"kind": "partition", "between": ["fltboot"], "and": ["fltwork"]})
    assert not dhcp("fltwork")
    assert ping("fltwork", "10.73.0.1", 3, 0.2) == 0
    # The rest of the network flows: both sides still reach a third namespace.
    assert ping("fltwork", "10.73.0.3", 3, 0.2) == 3
    assert ping("fltboot", "10.73.0.3", 3, 0.2) == 3
    lab.clear(fault["id"])
    assert dhcp("fltwork"), lab.host.sh(["nft", "list", "ruleset"]) + lab.run.output[-3000:]


def wait_bgp(lab: Lab, established: bool, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        out = sh(["birdc", "-s", str(lab.workdir / "r1.ctl"), "show", "protocols", "peer"])
        if ("Established" in out) == established:
            return
        assert time.monotonic() < deadline, out
        time.sleep(0.5)


def test_link_down_takes_bgp_down_and_back(lab_clean: Lab) -> None:
    lab = lab_clean
    wait_bgp(lab, established=True, within=60)
    fault = lab.add({"kind": "link", "target": "fltr2:eth0", "down": True})
    link = sh(["ip", "-o", "link", "show", "eth0"], ns="fltr2")
    assert "NO-CARRIER" in link, link  # the namespace's end lost its carrier
    # Down within its hold time (and the poll's own slack), as BGP sees it.
    wait_bgp(lab, established=False, within=HOLD + 5)
    lab.clear(fault["id"])
    wait_bgp(lab, established=True, within=60)


def test_fault_expires_by_itself(lab_clean: Lab) -> None:
    lab = lab_clean
    fault = lab.add({"kind": "link", "target": "fltother:eth0", "loss": "100%", "for": "2s"})
    assert fault["expires_at"] is not None
    assert ping("fltwork", "10.73.0.3", 3, 0.2) == 0
    deadline = time.monotonic() + 30
    while lab.faults():
        assert time.monotonic() < deadline, lab.faults()
        time.sleep(0.2)
    assert ping("fltwork", "10.73.0.3", 3, 0.2) == 3


TWO = """\
kind: Network
name: fltsig
type: internal
---
kind: NetworkNamespace
name: fltsa
interfaces:
- {network: fltsig, addresses: [10.73.2.1/24]}
---
kind: NetworkNamespace
name: fltsb
interfaces:
- {network: fltsig, addresses: [10.73.2.2/24]}
"""


def test_conflicts_and_sigterm_with_faults_active(
    host: HostNetns, tmp_path: Path, running: list[VdcRun]
) -> None:
    """Left active on purpose: SIGTERM must undo them, leaving nothing (`running` checks)."""
    run = VdcRun(host, [write(tmp_path / "two.yml", TWO)], tmp_path / "run").start()
    running.append(run)
    run.wait_ready()
    lab = Lab(host, run, tmp_path)
    lab.add({"kind": "link", "target": "fltsa:eth0", "rate": "10mbit"})
    answer = lab.add({"kind": "link", "target": "fltsa:eth0", "rate": "5mbit"}, expect=409)
    assert "clear it first" in answer["error"]
    lab.add({"kind": "link", "target": "fltsb:eth0", "loss": "10%", "for": "1h"})
    lab.add({"kind": "link", "target": "fltsb:eth0", "down": True})
    lab.add({"kind": "partition", "between": ["fltsa"], "and": ["fltsb"]})
    assert len(lab.faults()) == 4
    assert "bridge" in lab.bridge_chains()
    _, health = run.api("/health")
    assert len(health["faults"]) == 4
    run.signal(signal.SIGTERM)
    assert run.wait() == 0, run.output
