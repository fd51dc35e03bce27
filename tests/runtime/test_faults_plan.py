"""Faults as clients ask for them, and what they change: checked input (table tests), and
the nftables scripts, tc and ip argv and QMP arguments planned from them (golden)."""

from __future__ import annotations

import argparse
import re

import pytest

from tests.runtime.test_fabric_plan import assert_golden
from vdc_runtime.cli import build_parser, fault_body
from vdc_runtime.faults import plan as fp
from vdc_runtime.faults.manager import describe
from vdc_runtime.spec.faults import FaultError, parse_fault

TOPO = fp.Topology(
    table="vdc_golden",
    namespaces={
        "ns1": (fp.Port("ns1", 0, "lan", "vdc-ns1-0", netns="ns1", inner="eth0"),
                fp.Port("ns1", 1, "wan", "vdc-ns1-1", netns="ns1", inner="eth1")),
        "ns2": (fp.Port("ns2", 0, "lan", "vdc-ns2-0", netns="ns2", inner="eth0"),),
    },
    nodes={
        "w1": (fp.Port("w1", 0, "lan", "vdct-w1-0", device="nic0"),
               fp.Port("w1", 1, "lan", "vdct-w1-1", device="nic1")),
    },
    volumes={"w1": ("root", "data")},
    bmcs={"w1": "10.72.0.11"},
    bmc_ports=(623, 443),
)  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"kind": "link", "target": "w1:eth0", "loss": "101%"}, "loss", "0–100"),
        ({"kind": "link", "target": "w1:eth0", "loss": "0%"}, "loss", "0–100"),
        ({"kind": "link", "target": "w1:eth0", "loss": "lots"}, "loss", "not a percentage"),
        ({"kind": "link", "target": "w1:eth0", "loss": 5, "for": "0s"}, "for", "more than zero"),
        ({"kind": "link", "target": "w1:eth0", "loss": 5, "for": "-1m"}, "for", "zero"),
        ({"kind": "link", "target": "w1:eth0", "loss": 5, "for": "8d"}, "for", "week"),
        ({"kind": "link", "target": "w1:eth0", "loss": 5, "for": "soon"}, "for", "duration"),
        ({"kind": "link", "target": "w1:eth0", "rate": "fast"}, "rate", "10mbit"),
        ({"kind": "link", "target": "w1:eth0", "rate": "1kbit"}, "rate", "8kbit"),
        ({"kind": "link", "target": "w1"}, "target", "NAME:INTERFACE"),
        ({"kind": "link", "target": "w1:eth0"}, "link", "nothing to do"),
        ({"kind": "link", "target": "w1:eth0", "down": True, "loss": 3}, "down", "alone"),
        ({"kind": "link", "target": "w1:eth0", "jitter": "5ms"}, "jitter", "give delay"),
        (
            {
                "kind": "link",
                "target": "w1:eth0",
                "delay": "5ms",
                "jitter": "9ms",
                "direction": "in",
            },
            "jitter",
            "more than the delay",
        ),
        ({"kind": "link", "target": "w1:eth0", "delay": "5ms"}, "direction", "in"),
        ({"kind": "link", "target": "w1:eth0", "loss": 5, "colour": "red"}, "colour", "Extra"),
        ({"kind": "partition", "between": [], "and": ["a"]}, "between", "at least 1"),
        ({"kind": "partition", "between": ["a"], "and": ["a"]}, "and", "both sides"),
        ({"kind": "machine", "target": "w1", "effect": "melt"}, "effect", "power-loss"),
        ({"kind": "machine", "target": "w1", "effect": "slow-disk"}, "volume", "volume"),
        ({"kind": "machine", "target": "w1", "effect": "hang", "iops": 3}, "iops", "slow-disk"),
        ({"kind": "bmc", "target": "w1", "effect": "errors", "delay": "1s"}, "delay", "slow"),
        ({"kind": "bmc", "target": "w1", "effect": "slow", "delay": "2m"}, "delay", "60s"),
        ({"kind": "volcano"}, "kind", "one of"),
        ([1, 2], "fault", "JSON object"),
    ],
)
def test_bad_faults_name_their_field(body: object, field: str, words: str) -> None:
    with pytest.raises(FaultError) as caught:
        parse_fault(body)
    assert caught.value.field == field, caught.value
    assert words in caught.value.message, caught.value


@pytest.mark.parametrize(
    ("target", "host_link"),
    [("w1:eth1", "vdct-w1-1"), ("ns1:wan", "vdc-ns1-1"), ("ns1:eth0", "vdc-ns1-0")],
)
def test_ports_by_index_or_network(target: str, host_link: str) -> None:
    assert fp.find_port(TOPO, target).host_link == host_link


@pytest.mark.parametrize(
    ("target", "words"),
    [("nobody:eth0", "no node or network namespace named 'nobody'"),
     ("ns1:eth5", "no interface 'eth5'; it has eth0 (lan), eth1 (wan)"),
     ("w1:lan", "2 interfaces on lan")],
)  # fmt: skip
def test_unknown_ports(target: str, words: str) -> None:
    with pytest.raises(FaultError, match=re.escape(words)):
        fp.find_port(TOPO, target)


def test_unknown_volume_and_silent_bmc() -> None:
    disk = parse_fault({"kind": "machine", "target": "w1", "effect": "slow-disk", "volume": "x"})
    with pytest.raises(FaultError, match="no block volume 'x' \\(root, data\\)"):
        fp.disk_index(TOPO, disk)  # type: ignore[arg-type]
    topo = fp.Topology(table="t", nodes=TOPO.nodes)
    with pytest.raises(FaultError, match="not listening"):
        fp.bmc_address(topo, parse_fault({"kind": "bmc", "target": "w1", "effect": "errors"}))  # type: ignore[arg-type]


def _link(**fields: object) -> tuple[fp.Port, object]:
    fault = parse_fault({"kind": "link", **fields})
    return fp.find_port(TOPO, fault.target), fault  # type: ignore[union-attr]


def test_plans_golden() -> None:
    """Every kind of fault's changes, in one file to read side by side."""
    out = []

    def section(title: str, text: str) -> None:
        out.append(f"## {title}\n{text.rstrip()}\n")

    cases = {
        "namespace loss 30% both ways": {"target": "ns1:eth0", "loss": "30%"},
        "node loss 12.5% towards it": {"target": "w1:eth1", "loss": "12.5%",
                                                 "direction": "in"},
        "namespace total loss out": {"target": "ns2:eth0", "loss": 100, "direction": "out"},
        "namespace rate both ways": {"target": "ns1:eth1", "rate": "20mbit"},
        "node rate both ways (what it sends is policed)": {"target": "w1:eth0", "rate": "1gbit"},
        "delay with jitter and rate": {"target": "ns2:eth0", "delay": "100ms", "jitter": "10ms",
                                       "rate": "5mbit", "direction": "in"},
        "namespace down": {"target": "ns2:eth0", "down": True},
        "node down": {"target": "w1:eth0", "down": True},
    }  # fmt: skip
    for number, (title, fields) in enumerate(cases.items(), start=1):
        port, fault = _link(**fields)
        nft = (
            fp.nft_apply(TOPO, number, fp.link_rules(port, fault))
            if fp.link_rules(port, fault)
            else ""
        )  # type: ignore[arg-type]
        commands = fp.link_commands(TOPO, port, fault)  # type: ignore[arg-type]
        text = nft + "".join(f"$ {' '.join(c.apply)}\nundo: {' '.join(c.undo)}\n" for c in commands)
        if port.device is not None and fault.down:  # type: ignore[attr-defined]
            text += f"qmp: {fp.link_qmp(port, up=False)}\nundo qmp: {fp.link_qmp(port, up=True)}\n"
        rules = fp.link_rules(port, fault)  # type: ignore[arg-type]
        if rules:
            text += "undo nft:\n" + fp.delete_chains(TOPO.table, number, list(rules))
        section(f"{describe(fault)}: {title}", text)  # type: ignore[arg-type]
    partition = parse_fault({"kind": "partition", "between": ["ns1", "w1"], "and": ["ns2"]})
    section(describe(partition), fp.nft_apply(TOPO, 9, fp.partition_rules(TOPO, partition)))  # type: ignore[arg-type]
    section("bmc w1 unresponsive", fp.bmc_drop(TOPO, 10, "10.72.0.11") + fp.bmc_undrop(TOPO, 10))
    section("bmc on IPv6", fp.bmc_drop(TOPO, 11, "fd00::11"))
    section("slow disk data", str(fp.throttle_qmp("drive1", fp.DEFAULT_SLOW_IOPS, None)))
    assert_golden("faults.txt", "\n".join(out))


@pytest.mark.parametrize(
    ("argv", "body"),
    [
        (["link", "w1:eth0", "--loss", "30%", "--for", "60s"],
         {"kind": "link", "target": "w1:eth0", "loss": "30%", "for": "60s"}),
        (["link", "ns1:eth0", "--down"], {"kind": "link", "target": "ns1:eth0", "down": True}),
        (["link", "w1:eth0", "--delay", "50ms", "--jitter", "5ms", "--direction", "in"],
         {"kind": "link", "target": "w1:eth0", "delay": "50ms", "jitter": "5ms",
          "direction": "in"}),
        (["partition", "--between", "A,B", "--and", "C"],
         {"kind": "partition", "between": ["A", "B"], "and": ["C"]}),
        (["machine", "w1", "--power-loss"],
         {"kind": "machine", "target": "w1", "effect": "power-loss"}),
        (["machine", "w1", "--slow-disk", "data", "--iops", "5"],
         {"kind": "machine", "target": "w1", "effect": "slow-disk", "volume": "data", "iops": 5}),
        (["bmc", "w1", "--unresponsive", "--for", "2m"],
         {"kind": "bmc", "target": "w1", "effect": "unresponsive", "for": "2m"}),
        (["bmc", "w1", "--slow"], {"kind": "bmc", "target": "w1", "effect": "slow"}),
        (["bmc", "w1", "--slow", "3s"],
         {"kind": "bmc", "target": "w1", "effect": "slow", "delay": "3s"}),
        (["bmc", "w1", "--errors"], {"kind": "bmc", "target": "w1", "effect": "errors"}),
    ],
)  # fmt: skip
def test_cli_bodies(argv: list[str], body: dict[str, object]) -> None:
    args: argparse.Namespace = build_parser().parse_args(["fault", "add", *argv])
    assert fault_body(args) == body
    parse_fault(body)  # what the CLI sends, the API reads
