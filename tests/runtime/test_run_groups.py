"""One data center in two groups on two hosts (`vdc run --group/--peer`), its shared
networks stretched over VXLAN between them.

Each host is a network namespace of the test's, the two joined by a veth as two machines
by a cable; every packet, the tunnels' included, stays inside those namespaces.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.guests import console, node_yaml
from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, sh, snapshot
from vdc_runtime.fabric.plan import tunnel_name
from vdc_runtime.spec.identity import netns_mac

pytestmark = [pytest.mark.root]

UNDERLAY = {"a": "10.231.0.1", "b": "10.231.0.2"}

SPEC = """\
kind: Network
name: {p}core
type: internal
---
kind: Network
name: {p}ext
type: external
address: 10.5.0.1/24
---
kind: Network
name: {p}local
type: internal
---
kind: Group
name: rack-a
---
kind: Group
name: rack-b
---
kind: NetworkNamespace
name: {p}ra
group: rack-a
interfaces:
- network: {p}core
  addresses: [10.0.0.1/24]
- network: {p}ext
  addresses: [10.5.0.11/24]
---
kind: NetworkNamespace
name: {p}rb
group: rack-b
interfaces:
- network: {p}core
  addresses: [10.0.0.2/24]
- network: {p}ext
  addresses: [10.5.0.12/24]
- network: {p}local
  addresses: [10.9.0.1/24]
"""


@pytest.fixture
def hosts() -> Iterator[tuple[HostNetns, HostNetns]]:
    """Two hosts joined by a veth, 10.231.0.1 and .2."""
    with HostNetns() as a, HostNetns() as b:
        suffix = uuid.uuid4().hex[:6]
        link_a, link_b = f"ula{suffix}", f"ulb{suffix}"
        sh(["ip", "link", "add", link_a, "netns", a.name, "type", "veth",
            "peer", "name", link_b, "netns", b.name])  # fmt: skip
        for host, link, address in ((a, link_a, UNDERLAY["a"]), (b, link_b, UNDERLAY["b"])):
            host.sh(["ip", "address", "add", f"{address}/24", "dev", link])
            host.sh(["ip", "link", "set", link, "up"])
        yield a, b


def _bridge_json(host: HostNetns, name: str) -> dict:
    return json.loads(host.sh(["ip", "-j", "address", "show", "dev", name]))[0]


def _group_run(host: HostNetns, spec: Path, work: Path, group: str, peer: str) -> VdcRun:
    """`vdc run --group` on one emulated host, its files under `work`, tunnelling to the
    other host (rack-a's peer is rack-b and the other way round)."""
    work.mkdir()
    address = UNDERLAY["b" if peer == "rack-b" else "a"]
    return VdcRun(host, [spec], work / "run", "--group", group, "--peer", f"{peer}={address}")


def _start_both(
    hosts: tuple[HostNetns, HostNetns], spec: Path, tmp_path: Path, timeout: float = 60
) -> list[VdcRun]:
    """rack-a on the first host and rack-b on the second, both started and ready."""
    a, b = hosts
    runs = [
        _group_run(a, spec, tmp_path / "a", "rack-a", "rack-b").start(),
        _group_run(b, spec, tmp_path / "b", "rack-b", "rack-a").start(),
    ]
    try:
        for run in runs:
            run.wait_ready(timeout)
    except BaseException:
        _stop(runs)
        raise
    return runs


def _stop(runs: list[VdcRun]) -> list[int]:
    for run in runs:
        if run.proc and run.proc.poll() is None:
            run.signal(signal.SIGTERM)
    return [run.wait(60) for run in runs]


def test_two_groups_on_two_hosts_share_their_networks(
    hosts: tuple[HostNetns, HostNetns], tmp_path: Path
) -> None:
    a, b = hosts
    p = "g" + uuid.uuid4().hex[:5]
    spec = write(tmp_path / "dc.yml", SPEC.format(p=p))
    before = (snapshot(a), snapshot(b))
    runs = run_a, run_b = _start_both(hosts, spec, tmp_path)
    try:
        # Each host built its own part: its namespace, the bridges its members use.
        assert set(sh(["ip", "netns", "list"]).split()) >= {f"{p}ra", f"{p}rb"}
        assert f"{p}local:" not in a.sh(["ip", "-o", "link"])
        assert f"{p}local:" in b.sh(["ip", "-o", "link"])

        # The stretched network is one L2 segment: a namespace of each group reach each
        # other, full-size packets of the lowered MTU included (1450 = 1500 - 50).
        sh(["ping", "-c", "2", "-W", "3", "10.0.0.2"], ns=f"{p}ra")
        sh(["ping", "-c", "1", "-W", "3", "-M", "do", "-s", "1422", "10.0.0.2"], ns=f"{p}ra")
        for host in (a, b):
            assert _bridge_json(host, f"{p}core")["mtu"] == 1450
        eth0 = json.loads(sh(["ip", "-j", "link", "show", "eth0"], ns=f"{p}rb"))[0]
        assert eth0["mtu"] == 1450
        assert eth0["address"] == netns_mac(f"{p}rb", 0)  # stable across rebuilds
        status, networks = run_a.api("/networks")
        assert status == 200
        assert {n["name"]: n["mtu"] for n in networks}[f"{p}core"] == 1450

        # Head-end replication: the tunnel floods to the other host only.
        fdb = a.sh(["bridge", "fdb", "show", "dev", tunnel_name(f"{p}core")])
        assert f"00:00:00:00:00:00 dst {UNDERLAY['b']}" in fdb

        # The external network's host address lives in its home group (rack-a, the first
        # to use it): rack-b's bridge has none, and rack-b's namespace reaches it through
        # the tunnel.
        assert [i["local"] for i in _bridge_json(a, f"{p}ext")["addr_info"]
                if i["family"] == "inet"] == ["10.5.0.1"]  # fmt: skip
        assert not [i for i in _bridge_json(b, f"{p}ext")["addr_info"] if i["family"] == "inet"]
        sh(["ping", "-c", "1", "-W", "3", "10.5.0.1"], ns=f"{p}rb")
    finally:
        codes = _stop(runs)
    assert codes == [0, 0], run_a.output + run_b.output
    assert_no_leftovers(before[0], a)
    assert_no_leftovers(before[1], b)


def test_a_missing_peer_is_refused_before_anything_is_built(
    hosts: tuple[HostNetns, HostNetns], tmp_path: Path
) -> None:
    a, _ = hosts
    p = "g" + uuid.uuid4().hex[:5]
    spec = write(tmp_path / "dc.yml", SPEC.format(p=p))
    before = snapshot(a)
    run = VdcRun(a, [spec], tmp_path / "run", "--group", "rack-a")
    assert run.run_to_exit() == 2
    assert f"group rack-b shares network(s) {p}core, {p}ext with group rack-a" in run.output
    assert "--peer rack-b=ADDRESS" in run.output
    assert_no_leftovers(before, a)


MACHINES = """\
kind: Network
name: {p}lan
type: external
address: 10.73.0.1/24
---
kind: Network
name: {p}bmc
type: bmc
address: 10.73.16.1/24
---
kind: BMC
users: [{{name: admin, password: s3cret-admin}}]
---
kind: Group
name: rack-a
---
kind: Group
name: rack-b
---
kind: NetworkNamespace
name: {p}dhcp
group: rack-a
interfaces:
- network: {p}lan
  addresses: [10.73.0.2/24]
apps:
- name: dnsmasq
  command: [dnsmasq, --keep-in-foreground, --log-facility=-, --conf-file=dnsmasq.conf]
---
{node}
group: rack-b
interfaces: [{p}lan]
bmc: {{address: 10.73.16.12}}
"""


@pytest.mark.slow
def test_a_machine_of_one_group_is_served_and_driven_from_the_other(
    hosts: tuple[HostNetns, HostNetns], tmp_path: Path, guest: GuestPaths
) -> None:
    """DHCP from a namespace of rack-a reaches a machine of rack-b (broadcasts cross the
    tunnel), and rack-a's host drives that machine through its BMC, which answers on the
    stretched bmc network."""
    a, b = hosts
    p = "m" + uuid.uuid4().hex[:5]
    write(tmp_path / "dnsmasq.conf",
          "port=0\ninterface=eth0\nbind-interfaces\nleasefile-ro\npid-file=\n"
          "dhcp-range=10.73.0.100,10.73.0.200,255.255.255.0,1h\n")  # fmt: skip
    node = node_yaml(f"{p}w", guest, cmdline="vdc.dhcp=1").rstrip("\n")
    spec = write(tmp_path / "dc.yml", MACHINES.format(p=p, node=node))
    before = (snapshot(a), snapshot(b))
    runs = run_a, run_b = _start_both(hosts, spec, tmp_path, timeout=120)
    try:
        log = console(run_b, f"{p}w")
        log.wait_for("VDC-GUEST-DHCP eth0 10.73.0.1")
        ipmi = ["ipmitool", "-I", "lanplus", "-H", "10.73.16.12", "-U", "admin",
                "-P", "s3cret-admin", "-C", "17", "-N", "2", "-R", "3"]  # fmt: skip
        assert "Chassis Power is on" in a.sh([*ipmi, "power", "status"])
        log.wait_for("VDC-GUEST-READY")
        a.sh([*ipmi, "power", "reset"])
        log.wait_for("VDC-GUEST-READY", count=2)
        # rack-a has no machine: the bmc bridge it carries is the network's home only.
        assert run_a.api("/nodes")[1] == []
    finally:
        codes = _stop(runs)
    assert codes == [0, 0], run_a.output + run_b.output
    assert_no_leftovers(before[0], a, markers=("qemu-system", "dnsmasq"))
    assert_no_leftovers(before[1], b, markers=("qemu-system",))


def test_a_group_that_comes_back_at_a_new_address_is_followed(
    hosts: tuple[HostNetns, HostNetns], tmp_path: Path
) -> None:
    """rack-b's host is replaced and comes back at a new address (as a pod recreated on
    another node): rack-a, told the new address, tunnels there; its own namespace is
    untouched, and it forgets what it had learned behind the old address."""
    a, b = hosts
    p = "p" + uuid.uuid4().hex[:5]
    spec = write(tmp_path / "dc.yml", SPEC.format(p=p))
    before = (snapshot(a), snapshot(b))
    runs = [run_a, run_b] = _start_both(hosts, spec, tmp_path)
    try:
        sh(["ping", "-c", "1", "-W", "3", "10.0.0.2"], ns=f"{p}ra")
        tunnel = tunnel_name(f"{p}core")
        assert UNDERLAY["b"] in a.sh(["bridge", "fdb", "show", "dev", tunnel])
        netns_inode = Path(f"/run/netns/{p}ra").stat().st_ino

        assert run_b.stop() == 0
        links = b.sh(["ip", "-o", "link"]).splitlines()
        link_b = next(line.split(": ")[1].split("@")[0] for line in links if "ulb" in line)
        b.sh(["ip", "address", "flush", "dev", link_b])
        b.sh(["ip", "address", "add", "10.231.0.3/24", "dev", link_b])
        run_b = _group_run(b, spec, tmp_path / "b2", "rack-b", "rack-a")
        runs[1] = run_b.start()
        run_b.wait_ready()

        status, view = run_a.api("/group/peers", "PUT", body={"rack-b": "10.231.0.3"})
        assert status == 200, view
        assert view["peers"] == {"rack-b": "10.231.0.3"}
        assert {t["network"]: t["peers"] for t in view["tunnels"]} == {
            f"{p}core": ["10.231.0.3"], f"{p}ext": ["10.231.0.3"]}  # fmt: skip
        # rb was built again, with the same MACs (a namespace's are stable): ra's neighbour
        # entry stays right, so traffic resumes at once.
        started = time.monotonic()
        sh(["ping", "-c", "1", "-W", "3", "10.0.0.2"], ns=f"{p}ra")
        print(f"reachable again {time.monotonic() - started:.2f} s after the peer update")
        fdb = a.sh(["bridge", "fdb", "show", "dev", tunnel])
        assert "10.231.0.3" in fdb and UNDERLAY["b"] not in fdb
        assert Path(f"/run/netns/{p}ra").stat().st_ino == netns_inode

        status, body = run_a.api("/group/peers", "PUT", body={"rack-a": "10.231.0.9"})
        assert status == 400 and "that is this run's own group" in body["error"]
        status, body = run_a.api("/group/peers", "PUT", body={"rack-b": "somewhere"})
        assert status == 400 and "not an IP address" in body["error"]
    finally:
        codes = _stop(runs)
    assert codes == [0, 0], run_a.output + run_b.output
    assert_no_leftovers(before[0], a)
    assert_no_leftovers(before[1], b)


BGP = """\
kind: Network
name: {p}core
type: internal
---
kind: Network
name: {p}lan
type: internal
---
kind: Group
name: rack-a
---
kind: Group
name: rack-b
---
kind: NetworkNamespace
name: {p}ra
group: rack-a
interfaces:
- {{network: {p}core, addresses: [10.0.0.1/24]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/ra.conf, -s, {dir}/ra.ctl]
---
kind: NetworkNamespace
name: {p}rb
group: rack-b
interfaces:
- {{network: {p}core, addresses: [10.0.0.2/24]}}
- {{network: {p}lan, addresses: [10.9.0.1/24]}}
apps:
- name: bird
  command: [bird, -f, -c, {dir}/rb.conf, -s, {dir}/rb.ctl]
"""
BIRD = """\
router id {local};
protocol device {{ scan time 1; }}
protocol direct {{ ipv4; interface "eth*"; }}
protocol kernel {{ ipv4 {{ export all; }}; }}
protocol bgp peer {{
  local {local} as {asn};
  neighbor {peer} as {peer_asn};
  connect delay time 1; connect retry time 1; hold time 6;
  ipv4 {{ import all; export all; }};
}}
"""


@pytest.mark.slow
def test_bgp_routers_of_two_groups_peer_across_the_tunnel(
    hosts: tuple[HostNetns, HostNetns], tmp_path: Path
) -> None:
    a, b = hosts
    p = "b" + uuid.uuid4().hex[:5]
    write(tmp_path / "ra.conf", BIRD.format(local="10.0.0.1", asn=65001, peer="10.0.0.2",
                                            peer_asn=65002))  # fmt: skip
    write(tmp_path / "rb.conf", BIRD.format(local="10.0.0.2", asn=65002, peer="10.0.0.1",
                                            peer_asn=65001))  # fmt: skip
    spec = write(tmp_path / "dc.yml", BGP.format(p=p, dir=tmp_path))
    before = (snapshot(a), snapshot(b))
    runs = _start_both(hosts, spec, tmp_path)
    try:
        # rack-a's router learns rack-b's LAN over eBGP, its session across the tunnel.
        deadline = time.monotonic() + 30
        routes = ""
        while time.monotonic() < deadline and "10.9.0.0/24" not in routes:
            routes = sh(["ip", "route"], ns=f"{p}ra")
            time.sleep(0.5)
        assert "10.9.0.0/24 via 10.0.0.2" in routes and "proto bird" in routes, routes
        sh(["ping", "-c", "1", "-W", "3", "10.9.0.1"], ns=f"{p}ra")
    finally:
        codes = _stop(runs)
    assert codes == [0, 0], runs[0].output + runs[1].output
    assert_no_leftovers(before[0], a, markers=("bird",))
    assert_no_leftovers(before[1], b, markers=("bird",))
