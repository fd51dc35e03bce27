"""The fabric plan and nftables ruleset are pure functions of the spec: golden-tested."""

import os
from pathlib import Path

from vdc_runtime.fabric import nft
from vdc_runtime.fabric.mtu import choose_mtu
from vdc_runtime.fabric.plan import host_veth_name, plan_fabric, run_identity
from vdc_runtime.spec import load_text

GOLDEN = Path(__file__).parent / "golden"

SPEC = """\
kind: Network
name: ext
type: external
use-nat: true
address: 10.0.0.1/24
---
kind: Network
name: ext6
type: external
use-nat: true
address: fd00:10::1/64
---
kind: Network
name: core
type: internal
---
kind: Network
name: bmc
type: bmc
address: 10.72.16.1/20
---
kind: Network
name: plain
type: external
address: 10.9.0.1/24
---
kind: NetworkNamespace
name: router
interfaces:
- network: ext
  addresses: [10.0.0.2/24]
- network: core
  addresses: [10.1.0.1/31, "fd00:1::1/64"]
- network: bmc
"""


def _plan():
    dc = load_text(SPEC, source="golden.yml", base_dir=Path("."))
    return plan_fabric(dc, mtu=1460, group=4242, table="vdc_0123456789")


def assert_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


def test_nft_ruleset_golden():
    assert_golden("nft_ruleset.nft", nft.ruleset(_plan()))


def test_plan_objects():
    plan = _plan()
    assert [b.name for b in plan.bridges] == ["ext", "ext6", "core", "bmc", "plain"]
    (router,) = plan.namespaces
    assert [(v.peer, v.bridge) for v in router.veths] == [
        ("eth0", "ext"),
        ("eth1", "core"),
        ("eth2", "bmc"),
    ]
    assert [str(a) for a in router.veths[1].addresses] == ["10.1.0.1/31", "fd00:1::1/64"]
    assert router.veths[2].addresses == ()
    assert plan.host_sysctls == (
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
    )
    assert plan.links == ["ext", "ext6", "core", "bmc", "plain", *(v.host for v in router.veths)]


def test_no_nat_means_no_host_sysctls():
    dc = load_text("kind: Network\nname: n\ntype: internal\n", source="x.yml", base_dir=Path("."))
    assert plan_fabric(dc, mtu=None, group=1, table="t").host_sysctls == ()


def test_host_veth_names_fit_ifnamsiz_and_are_stable():
    names = {host_veth_name(f"ns{i}", j) for i in range(200) for j in range(8)}
    assert len(names) == 1600
    assert all(len(n) <= 15 and n.startswith("vdc") for n in names)
    assert host_veth_name("a", 0) == host_veth_name("a", 0) != host_veth_name("a", 1)


def test_run_identity_differs_per_run_dir():
    (t1, g1), (t2, g2) = run_identity("/run/a"), run_identity("/run/b")
    assert t1 != t2 and g1 != g2
    assert t1.startswith("vdc_") and 0 < g1 < 2**31


def test_mtu_choice_follows_placemat():
    assert choose_mtu([1460], [1500, 9000]) == 1460
    assert choose_mtu([], [1500, 1460]) == 1460
    assert choose_mtu([], []) is None
