"""A spine-leaf data center: hosts in different racks reach each other through routers."""

import signal
from pathlib import Path

import pytest

from tests.runtime.conftest import write
from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, snapshot

pytestmark = [pytest.mark.root, pytest.mark.slow]

SPINE_LEAF = """\
kind: Network
name: {p}s0r0
type: internal
---
kind: Network
name: {p}s0r1
type: internal
---
kind: Network
name: {p}rack0
type: internal
---
kind: Network
name: {p}rack1
type: internal
---
kind: Network
name: {p}ext
type: external
address: 10.0.0.1/24
---
kind: NetworkNamespace
name: {p}spine0
interfaces:
- network: {p}s0r0
  addresses: [10.1.0.0/31]
- network: {p}s0r1
  addresses: [10.1.0.2/31]
- network: {p}ext
  addresses: [10.0.0.2/24]
init-scripts: [spine.sh]
---
kind: NetworkNamespace
name: {p}tor0
interfaces:
- network: {p}s0r0
  addresses: [10.1.0.1/31]
- network: {p}rack0
  addresses: [10.2.0.1/24]
init-scripts: [tor0.sh]
---
kind: NetworkNamespace
name: {p}tor1
interfaces:
- network: {p}s0r1
  addresses: [10.1.0.3/31]
- network: {p}rack1
  addresses: [10.2.1.1/24, "fd00:21::1/64"]
init-scripts: [tor1.sh]
---
kind: NetworkNamespace
name: {p}host0
interfaces:
- network: {p}rack0
  addresses: [10.2.0.10/24]
init-scripts: [host0.sh]
---
kind: NetworkNamespace
name: {p}host1
interfaces:
- network: {p}rack1
  addresses: [10.2.1.10/24, "fd00:21::10/64"]
init-scripts: [host1.sh]
apps:
- name: web
  command: [python3, -u, -m, http.server, "8080", --bind, 10.2.1.10]
"""

SCRIPTS = {
    "spine.sh": "ip route add 10.2.0.0/24 via 10.1.0.1\nip route add 10.2.1.0/24 via 10.1.0.3\n",
    "tor0.sh": "ip route add default via 10.1.0.0\n",
    "tor1.sh": "ip route add default via 10.1.0.2\n",
    "host0.sh": "ip route add default via 10.2.0.1\n",
    "host1.sh": "ip route add default via 10.2.1.1\necho host1 routes ready\n",
}


def make_spine_leaf(tmp_path: Path, prefix: str = "t") -> Path:
    for name, body in SCRIPTS.items():
        write(tmp_path / name, "#!/bin/sh\nset -e\n" + body, 0o755)
    return write(tmp_path / "cluster.yml", SPINE_LEAF.format(p=prefix))


def test_hosts_in_different_racks_reach_each_other(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    run = VdcRun(host, [make_spine_leaf(tmp_path)], tmp_path / "run").start()
    try:
        run.wait_ready()
        # Three routed hops: host0 → tor0 → spine0 → tor1 → host1.
        out = host.sh(["ip", "netns", "exec", "thost0", "ping", "-c", "2", "-W", "2", "10.2.1.10"])
        assert "2 received" in out
        trace = host.sh(
            ["ip", "netns", "exec", "thost0", "ping", "-c", "1", "-t", "3", "10.2.1.10"],
            check=False,
        )
        assert "Time to live exceeded" in trace, "the path should cross exactly three routers"
        page = host.sh(
            [
                "ip",
                "netns",
                "exec",
                "thost0",
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://10.2.1.10:8080/",
            ]
        )
        assert "Directory listing" in page
        # The router namespaces are real: the host (bridge address) reaches the spine directly.
        assert "1 received" in host.sh(["ping", "-c", "1", "-W", "2", "10.0.0.2"])
        # Namespaces got Placemat's sysctls.
        assert (
            host.sh(
                ["ip", "netns", "exec", "tspine0", "sysctl", "-n", "net.ipv4.ip_forward"]
            ).strip()
            == "1"
        )
        assert (
            host.sh(
                ["ip", "netns", "exec", "tspine0", "sysctl", "-n", "net.ipv4.conf.eth0.rp_filter"]
            ).strip()
            == "0"
        )

        status, nets = run.api("/networks")
        assert status == 200
        assert [n["name"] for n in nets] == ["ts0r0", "ts0r1", "track0", "track1", "text"]
        assert nets[4] == {
            "name": "text", "type": "external", "use_nat": False, "address": "10.0.0.1/24",
            "bridge": "text", "mtu": nets[4]["mtu"],
        }  # fmt: skip
        status, spaces = run.api("/netns")
        host1 = next(ns for ns in spaces if ns["name"] == "thost1")
        assert host1["interfaces"][0]["addresses"] == ["10.2.1.10/24", "fd00:21::10/64"]
        assert host1["apps"][0]["state"] == "running" and host1["apps"][0]["pid"]
        assert run.api("/netns/nope")[0] == 404
        # An app's output is kept in a file of its own, also served by the API.
        status, served = run.api("/netns/thost1/apps/web/log", text=True)
        assert status == 200 and '"GET / HTTP/1.1" 200' in served
        assert run.api("/netns/thost1/apps/nope/log", text=True)[0] == 404
    finally:
        if run.proc and run.proc.poll() is None:
            run.signal(signal.SIGTERM)
        code = run.wait()
    output = run.output
    assert code == 0, output
    # Init-script output is logged line by line under netns/program; an app's goes to its
    # file (and to the log with -v only), so servers such as dnsmasq do not flood the terminal.
    assert "[thost1/host1.sh] host1 routes ready" in output
    web_log = Path(host1["apps"][0]["log"]).read_text()
    assert "10.2.0.10 - - " in web_log and '"GET / HTTP/1.1" 200' in web_log
    assert "[thost1/web]" not in output
    assert_no_leftovers(before, host, markers=("http.server",))
