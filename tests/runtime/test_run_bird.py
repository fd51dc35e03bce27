"""Routers running BIRD (Debian's bird2) as netns apps learn each other's racks over eBGP."""

import signal
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import write
from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, sh, snapshot

pytestmark = [pytest.mark.root, pytest.mark.slow]

BIRD_CONF = """\
router id {rid};
protocol device {{ scan time 1; }}
protocol direct {{ ipv4; interface "eth*"; }}
protocol kernel {{ ipv4 {{ export all; }}; }}
{sessions}
"""
SESSION = """\
protocol bgp p{n} {{
  local {local} as {asn};
  neighbor {peer} as {peer_asn};
  connect delay time 1; connect retry time 1; hold time 6;
  ipv4 {{ import all; export all; }};
}}
"""

SPEC = """\
kind: Network
name: bs0r0
type: internal
---
kind: Network
name: bs0r1
type: internal
---
kind: Network
name: brack0
type: internal
---
kind: Network
name: brack1
type: internal
---
kind: NetworkNamespace
name: bspine
interfaces:
- {{network: bs0r0, addresses: [10.1.0.0/31]}}
- {{network: bs0r1, addresses: [10.1.0.2/31]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/spine.conf, -s, {dir}/spine.ctl]
---
kind: NetworkNamespace
name: btor0
interfaces:
- {{network: bs0r0, addresses: [10.1.0.1/31]}}
- {{network: brack0, addresses: [10.2.0.1/24]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/tor0.conf, -s, {dir}/tor0.ctl]
---
kind: NetworkNamespace
name: btor1
interfaces:
- {{network: bs0r1, addresses: [10.1.0.3/31]}}
- {{network: brack1, addresses: [10.2.1.1/24]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/tor1.conf, -s, {dir}/tor1.ctl]
---
kind: NetworkNamespace
name: bhost0
interfaces:
- {{network: brack0, addresses: [10.2.0.10/24]}}
init-scripts: [gw0.sh]
---
kind: NetworkNamespace
name: bhost1
interfaces:
- {{network: brack1, addresses: [10.2.1.10/24]}}
init-scripts: [gw1.sh]
"""


def _session(n: int, local: str, asn: int, peer: str, peer_asn: int) -> str:
    return SESSION.format(n=n, local=local, asn=asn, peer=peer, peer_asn=peer_asn)


def test_bgp_routers_connect_racks(host: HostNetns, tmp_path: Path) -> None:
    write(tmp_path / "spine.conf", BIRD_CONF.format(rid="10.1.0.0", sessions=(
        _session(0, "10.1.0.0", 65000, "10.1.0.1", 65001)
        + _session(1, "10.1.0.2", 65000, "10.1.0.3", 65002)
    )))  # fmt: skip
    write(tmp_path / "tor0.conf", BIRD_CONF.format(
        rid="10.1.0.1", sessions=_session(0, "10.1.0.1", 65001, "10.1.0.0", 65000)
    ))  # fmt: skip
    write(tmp_path / "tor1.conf", BIRD_CONF.format(
        rid="10.1.0.3", sessions=_session(0, "10.1.0.3", 65002, "10.1.0.2", 65000)
    ))  # fmt: skip
    write(tmp_path / "gw0.sh", "#!/bin/sh\nip route add default via 10.2.0.1\n", 0o755)
    write(tmp_path / "gw1.sh", "#!/bin/sh\nip route add default via 10.2.1.1\n", 0o755)
    spec = write(tmp_path / "bird.yml", SPEC.format(dir=tmp_path))
    before = snapshot(host)
    run = VdcRun(host, [spec], tmp_path / "run").start()
    try:
        run.wait_ready()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            routes = sh(["ip", "netns", "exec", "btor0", "ip", "route"])
            if "10.2.1.0/24" in routes and "proto bird" in routes:
                break
            time.sleep(0.5)
        assert "10.2.1.0/24" in routes, routes
        out = sh(["ip", "netns", "exec", "bhost0", "ping", "-c", "2", "-W", "2", "10.2.1.10"])
        assert "2 received" in out
        status, spaces = run.api("/netns")
        assert status == 200
        assert {ns["name"]: ns["apps"][0]["state"] for ns in spaces if ns["apps"]} == {
            "bspine": "running", "btor0": "running", "btor1": "running",
        }  # fmt: skip
    finally:
        if run.proc and run.proc.poll() is None:
            run.signal(signal.SIGTERM)
        code = run.wait()
    assert code == 0, run.output
    assert_no_leftovers(before, host, markers=("bird",))
