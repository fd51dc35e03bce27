"""Groups: what each builds, which networks are stretched and where their addresses live.
Pure, from the spec; the two-host run is in test_run_groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.test_fabric_plan import assert_golden
from vdc_runtime import groups
from vdc_runtime.fabric import nft
from vdc_runtime.fabric.plan import plan_fabric, plan_tunnels, tunnel_name
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.convert import to_manifest
from vdc_runtime.spec import SpecErrors, load_text

SPEC = """\
kind: Network
name: ext
type: external
use-nat: true
address: 10.0.0.1/24
---
kind: Network
name: bmc
type: bmc
address: 10.72.16.1/24
---
kind: Network
name: core
type: internal
---
kind: Network
name: rack1
type: internal
---
kind: Network
name: spare
type: internal
---
kind: Group
name: r1
---
kind: Group
name: r2
---
kind: NetworkNamespace
name: spine
interfaces:
- network: ext
  addresses: [10.0.0.2/24]
- network: core
  addresses: [10.1.0.1/24]
---
kind: NetworkNamespace
name: tor1
group: r1
interfaces:
- network: core
  addresses: [10.1.0.2/24]
- network: rack1
  addresses: [10.2.0.1/24]
---
kind: Node
name: w1
group: r1
cpu: 1
interfaces: [rack1, ext]
---
kind: Node
name: w2
group: r2
cpu: 1
interfaces: [ext]
"""


def _dc(text: str = SPEC):
    return load_text(text, source="dc.yml", base_dir=Path("."))


def test_the_layout_of_three_groups() -> None:
    layout = groups.layout(_dc())
    # The default group (the spine, which names none) comes first, then the declared ones.
    assert layout.order == ("default", "r1", "r2")
    assert layout.netns == {"default": ("spine",), "r1": ("tor1",), "r2": ()}
    assert layout.nodes == {"default": (), "r1": ("w1",), "r2": ("w2",)}
    # Each builds the networks its members use, and every bmc network (each group reaches
    # every BMC); the network nobody uses goes to the first group.
    assert layout.networks == {
        "default": ("ext", "bmc", "core", "spare"),
        "r1": ("ext", "bmc", "core", "rack1"),
        "r2": ("ext", "bmc"),
    }
    assert layout.home == {"ext": "default", "bmc": "default", "core": "default",
                           "rack1": "r1", "spare": "default"}  # fmt: skip
    stretched = {s.network: s.groups for s in layout.stretched}
    assert stretched == {"ext": ("default", "r1", "r2"), "bmc": ("default", "r1", "r2"),
                         "core": ("default", "r1")}  # fmt: skip
    assert layout.peers("r2") == ("default", "r1")
    assert layout.stretch("rack1") is None


def test_without_groups_everything_is_one_group_and_nothing_is_stretched() -> None:
    text = (
        "\n---\n".join(doc for doc in SPEC.split("\n---\n") if "kind: Group" not in doc)
        .replace("group: r1\n", "")
        .replace("group: r2\n", "")
    )
    layout = groups.layout(_dc(text))
    assert layout.order == ("default",) and layout.stretched == ()
    assert layout.peers("default") == ()


def test_vnis_come_from_the_names_alone() -> None:
    names = [f"net{i}" for i in range(2000)]
    vnis = groups.vni_for(names)
    assert len(set(vnis.values())) == 2000
    assert all(1 <= v <= groups.VNI_MAX for v in vnis.values())
    # The same name gets the same VNI in any company (unless a collision moved it).
    assert groups.vni_for(["net7"])["net7"] == vnis["net7"]


def test_a_group_builds_its_part() -> None:
    dc = _dc()
    part = groups.part(dc, "r2")
    assert [n.name for n in part.nodes] == ["w2"]
    assert part.netns == []
    assert [n.name for n in part.networks] == ["ext", "bmc"]
    assert part.images == dc.images and part.bmc == dc.bmc
    with pytest.raises(KeyError):
        groups.part(dc, "r9")


def test_the_tunnels_and_bridges_of_a_group() -> None:
    dc = _dc()
    layout = groups.layout(dc)
    peers = {"default": "192.0.2.1", "r1": "192.0.2.2"}
    tunnels = plan_tunnels(layout, "r2", "192.0.2.3", peers)
    assert [(t.bridge, t.peers) for t in tunnels.tunnels] == [
        ("ext", ("192.0.2.1", "192.0.2.2")),
        ("bmc", ("192.0.2.1", "192.0.2.2")),
    ]
    assert tunnels.tunnels[0].name == tunnel_name("ext") and len(tunnels.tunnels[0].name) <= 15
    assert tunnels.away == {"ext", "bmc"}
    plan = plan_fabric(groups.part(dc, "r2", layout), mtu=1450, group=7, table="vdc_t",
                       tunnels=tunnels)  # fmt: skip
    # The addresses (and NAT) of ext and bmc live in their home groups.
    assert [(b.name, b.address, b.nat, b.stretched) for b in plan.bridges] == [
        ("ext", None, False, True),
        ("bmc", None, False, True),
    ]
    assert plan.host_sysctls == ()
    assert plan.links == ["ext", "bmc", tunnel_name("ext"), tunnel_name("bmc")]
    # A stretched bridge forwards whatever its kind; no NAT away from home.
    assert_golden("nft_ruleset_group.nft", nft.ruleset(plan))


def test_peers_not_known_yet_are_left_out() -> None:
    layout = groups.layout(_dc())
    tunnels = plan_tunnels(layout, "r1", "192.0.2.2", {})
    assert all(t.peers == () for t in tunnels.tunnels)
    assert {t.bridge for t in tunnels.tunnels} == {"ext", "bmc", "core"}


@pytest.mark.parametrize(
    ("group", "peers", "message"),
    [
        ("r3", {}, "--group r3: no such group (the spec's groups: default, r1, r2)"),
        ("r2", {"r1": "192.0.2.2"},
         "group default shares network(s) ext, bmc with group r2: give --peer default=ADDRESS"),
        ("r2", {"r2": "192.0.2.2", "default": "x", "r1": "192.0.2.1"},
         "--peer r2=192.0.2.2: that is this run's own group"),
        ("r2", {"default": "nowhere", "r1": "192.0.2.1"}, "--peer default=nowhere: not an IP"),
        ("r2", {"default": "192.0.2.1", "r1": "192.0.2.2", "rr": "192.0.2.9"},
         "--peer rr=192.0.2.9: no such group"),
    ],
)  # fmt: skip
def test_run_problems(group: str, peers: dict[str, str], message: str) -> None:
    problems = groups.run_problems(groups.layout(_dc()), group, peers)
    assert any(message in p for p in problems), problems


def test_a_complete_run_has_no_problems() -> None:
    peers = {"default": "192.0.2.1", "r1": "192.0.2.2"}
    assert groups.run_problems(groups.layout(_dc()), "r2", peers) == []


# -- the spec --------------------------------------------------------------------------------


def _errors(text: str) -> list[str]:
    with pytest.raises(SpecErrors) as info:
        _dc(text)
    return [str(e) for e in info.value.errors]


def test_group_references_are_checked() -> None:
    text = SPEC.replace("group: r2", "group: r3")
    assert _errors(text) == [
        'dc.yml: document 7 (Group "r2"): name: no node or network namespace is in group'
        " 'r2' (they name it in their 'group' key)",
        "dc.yml: document 11 (Node \"w2\"): group: no Group named 'r3' is defined",
    ]


def test_the_default_group_needs_no_declaration() -> None:
    dc = _dc(SPEC.replace("kind: NetworkNamespace\nname: spine\n",
                          "kind: NetworkNamespace\nname: spine\ngroup: default\n"))  # fmt: skip
    assert groups.layout(dc).order == ("default", "r1", "r2")


def test_a_group_name_names_a_pod() -> None:
    text = SPEC.replace("name: r2\n", "name: Rack_2\n").replace("group: r2", "group: Rack_2")
    declared, used = _errors(text)
    assert declared.startswith("dc.yml: document 7 (Group \"Rack_2\"): name: 'Rack_2' is not a")
    assert used.startswith("dc.yml: document 11 (Node \"w2\"): group: 'Rack_2' is not a valid")


def test_groups_in_a_cr_with_pod_settings() -> None:
    manifest = to_manifest(_dc(), "lab")
    assert manifest["spec"]["groups"] == [{"name": "r1"}, {"name": "r2"}]
    assert [n.get("group") for n in manifest["spec"]["nodes"]] == ["r1", "r2"]
    spec = dict(manifest["spec"])
    spec["groups"] = [{"name": "r1", "pod": {"nodeSelector": {"rack": "1"}}}, {"name": "r2"}]
    parsed = cr.parse(spec)
    assert parsed.groups[0].pod is not None and parsed.groups[0].pod.node_selector == {"rack": "1"}
    dc = cr.load(spec)
    assert [g.name for g in dc.groups] == ["r1", "r2"]
    assert groups.layout(dc) == groups.layout(_dc())
    spec["nodes"][1]["group"] = "r3"
    with pytest.raises(SpecErrors) as info:
        cr.load(spec)
    messages = [str(e) for e in info.value.errors]
    assert any(m.startswith("spec.nodes[1].group: no Group named 'r3'") for m in messages)
    assert any(m.startswith("spec.groups[1].name: no node or network namespace") for m in messages)
