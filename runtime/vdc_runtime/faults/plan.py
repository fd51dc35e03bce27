"""From a checked fault and the run's topology to what changes where: nftables scripts,
tc and ip argv, QMP commands. Pure (golden- and table-tested); `manager` carries them out.

Frames are cut, dropped and policed on the bridges, where every node's tap and every
namespace's veth is a port: one bridge-family table per run, each fault in chains of its
own (`f<ID>_...`), so clearing a fault deletes its chains and nothing else, and deleting
the table at teardown deletes every fault's. A BMC that does not answer is a chain in the
run's inet table, whose input hook sees what is sent to the BMC's address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from vdc_runtime.spec.faults import BmcFault, FaultError, LinkFault, MachineFault, PartitionFault

TBF_LATENCY = "50ms"
"""How long tbf queues a frame before dropping it: long enough for TCP to settle at the
rate, short enough to stay a rate limit rather than a delay."""
MIN_BURST = 32 * 1024
LOSS_SCALE = 10000
"""Loss is drawn per frame out of 10000: 0.01 % steps."""


@dataclass(frozen=True)
class Port:
    """One interface of a node or a namespace, and the bridge port that carries it."""

    endpoint: str
    index: int
    network: str
    host_link: str
    """The port on the bridge: a namespace's veth host end, or a node's tap."""
    netns: str | None = None
    """The namespace whose interface this is (None for a node's NIC)."""
    inner: str | None = None
    """The interface's name inside the namespace."""
    device: str | None = None
    """A node's NIC: its QEMU device id."""

    @property
    def name(self) -> str:
        return f"{self.endpoint}:eth{self.index}"


@dataclass(frozen=True)
class Topology:
    """What faults can name in one run."""

    table: str
    namespaces: dict[str, tuple[Port, ...]] = field(default_factory=dict)
    nodes: dict[str, tuple[Port, ...]] = field(default_factory=dict)
    volumes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Each node's block volumes, in drive order."""
    bmcs: dict[str, str] = field(default_factory=dict)
    """Each node's BMC address, once it listens."""
    bmc_ports: tuple[int, int] = (623, 443)
    netns_dir: Path = Path("/run/netns")

    def ports(self, name: str, where: str) -> tuple[Port, ...]:
        found = self.nodes.get(name, self.namespaces.get(name))
        if found is None:
            raise FaultError(where, f"no node or network namespace named {name!r}")
        return found


def find_port(topo: Topology, target: str) -> Port:
    """`NAME:ethI` (the I-th interface in the spec) or `NAME:NETWORK`."""
    name, _, iface = target.partition(":")
    ports = topo.ports(name, "target")
    for port in ports:
        if iface in (f"eth{port.index}", port.inner):
            return port
    on_network = [p for p in ports if p.network == iface]
    if len(on_network) == 1:
        return on_network[0]
    names = ", ".join(f"eth{p.index} ({p.network})" for p in ports) or "none"
    if len(on_network) > 1:
        raise FaultError(
            "target", f"{name} has {len(on_network)} interfaces on {iface}: name one ({names})"
        )
    raise FaultError("target", f"{name} has no interface {iface!r}; it has {names}")


def node_of(topo: Topology, name: str) -> str:
    if name not in topo.nodes:
        known = ", ".join(sorted(topo.nodes)) or "none"
        raise FaultError("target", f"no node named {name!r} (nodes: {known})")
    return name


# -- nftables --------------------------------------------------------------------------


def chain_names(fault_id: int) -> dict[str, str]:
    """A fault's bridge chains, by hook."""
    return {hook: f"f{fault_id}_{hook}" for hook in ("forward", "input", "output")}


def create_table(table: str) -> str:
    """The run's bridge table, created if missing (adding an existing table is no error)."""
    return f"add table bridge {table}\n"


def _chains_script(table: str, fault_id: int, rules: dict[str, list[str]]) -> str:
    lines = []
    for hook, chain in chain_names(fault_id).items():
        if not rules.get(hook):
            continue
        lines.append(
            f"add chain bridge {table} {chain}"
            f" {{ type filter hook {hook} priority filter; policy accept; }}"
        )
        lines += [f"add rule bridge {table} {chain} {rule}" for rule in rules[hook]]
    return "\n".join(lines) + "\n" if lines else ""


def delete_chains(table: str, fault_id: int, hooks: list[str]) -> str:
    return "".join(f"delete chain bridge {table} {chain_names(fault_id)[hook]}\n" for hook in hooks)


def _names(links: list[str]) -> str:
    quoted = ", ".join(f'"{link}"' for link in sorted(set(links)))
    return f"{{ {quoted} }}"


def link_rules(port: Port, fault: LinkFault) -> dict[str, list[str]]:
    """Loss, and the rate of frames a node sends (tc cannot shape a tap's ingress here)."""
    rules: dict[str, list[str]] = {"forward": [], "input": [], "output": []}
    link = f'"{port.host_link}"'
    if fault.loss is not None:
        share = round(fault.loss * LOSS_SCALE / 100)
        drop = "drop" if share >= LOSS_SCALE else f"numgen random mod {LOSS_SCALE} < {share} drop"
        if fault.direction in ("both", "out"):
            rules["forward"].append(f"iifname {link} {drop}")
            rules["input"].append(f"iifname {link} {drop}")
        if fault.direction in ("both", "in"):
            rules["forward"].append(f"oifname {link} {drop}")
            rules["output"].append(f"oifname {link} {drop}")
    if fault.rate is not None and fault.direction in ("both", "out") and port.netns is None:
        # A namespace's own end shapes what it sends (tbf, below); a tap's sending side is
        # QEMU, so what the node sends is policed on the bridge instead.
        police = (
            f"limit rate over {fault.rate // 8} bytes/second burst {_burst(fault.rate)} bytes drop"
        )
        rules["forward"].append(f"iifname {link} {police}")
        rules["input"].append(f"iifname {link} {police}")
    return {hook: r for hook, r in rules.items() if r}


def partition_rules(topo: Topology, fault: PartitionFault) -> dict[str, list[str]]:
    sides = []
    for where, names in (("between", fault.between), ("and", fault.and_)):
        sides.append([p.host_link for name in names for p in topo.ports(name, where)])
    a, b = sides
    if not a or not b:
        raise FaultError("between" if not a else "and", "no interface on any network")
    return {
        "forward": [
            f"iifname {_names(a)} oifname {_names(b)} drop",
            f"iifname {_names(b)} oifname {_names(a)} drop",
        ]
    }


def nft_apply(topo: Topology, fault_id: int, rules: dict[str, list[str]]) -> str:
    return create_table(topo.table) + _chains_script(topo.table, fault_id, rules)


def bmc_chain(fault_id: int) -> str:
    return f"f{fault_id}_bmc"


def bmc_drop(topo: Topology, fault_id: int, address: str) -> str:
    """Drop what is sent to the BMC's IPMI and Redfish ports: clients time out."""
    family = "ip" if ipaddress.ip_address(address).version == 4 else "ip6"
    chain = bmc_chain(fault_id)
    ipmi, redfish = topo.bmc_ports
    return (
        f"add chain inet {topo.table} {chain}"
        " { type filter hook input priority filter; policy accept; }\n"
        f"add rule inet {topo.table} {chain} {family} daddr {address} udp dport {ipmi} drop\n"
        f"add rule inet {topo.table} {chain} {family} daddr {address} tcp dport {redfish} drop\n"
    )


def bmc_undrop(topo: Topology, fault_id: int) -> str:
    return f"delete chain inet {topo.table} {bmc_chain(fault_id)}\n"


# -- tc and ip ---------------------------------------------------------------------------


def _burst(rate: int) -> int:
    """Ten milliseconds at the rate, and never under a few full frames."""
    return max(rate // 8 // 100, MIN_BURST)


def _in_netns(topo: Topology, netns: str | None, argv: list[str]) -> list[str]:
    if netns is None:
        return argv
    return ["nsenter", f"--net={topo.netns_dir / netns}", *argv]


def qdisc_argv(rate: int | None, delay: float | None, jitter: float | None) -> list[str]:
    """The root qdisc's kind and options: netem when delayed (it paces a rate too), tbf for
    a rate alone."""
    if delay is not None:
        argv = ["netem", "delay", f"{delay * 1000:g}ms"]
        if jitter is not None:
            argv.append(f"{jitter * 1000:g}ms")
        if rate is not None:
            argv += ["rate", f"{rate}bit"]
        return argv
    assert rate is not None
    return ["tbf", "rate", f"{rate}bit", "burst", str(_burst(rate)), "latency", TBF_LATENCY]


@dataclass(frozen=True)
class Command:
    """One argv to apply a fault's part, and the one that undoes it."""

    apply: tuple[str, ...]
    undo: tuple[str, ...]


def link_commands(topo: Topology, port: Port, fault: LinkFault) -> list[Command]:
    """tc qdiscs for rate and delay, `ip link` for a namespace's link going down (a node's
    NIC goes down over QMP, see `link_qmp`)."""
    commands = []
    shaped_in = fault.rate is not None and fault.direction in ("both", "in")
    if shaped_in or fault.delay is not None:
        qdisc = qdisc_argv(fault.rate if shaped_in else None, fault.delay, fault.jitter)
        commands.append(
            Command(
                ("tc", "qdisc", "replace", "dev", port.host_link, "root", *qdisc),
                ("tc", "qdisc", "del", "dev", port.host_link, "root"),
            )
        )
    if fault.rate is not None and fault.direction in ("both", "out") and port.netns is not None:
        assert port.inner is not None
        tc = ["tc", "qdisc"]
        commands.append(
            Command(
                tuple(_in_netns(topo, port.netns, [*tc, "replace", "dev", port.inner, "root",
                                                   *qdisc_argv(fault.rate, None, None)])),
                tuple(_in_netns(topo, port.netns, [*tc, "del", "dev", port.inner, "root"])),
            )
        )  # fmt: skip
    if fault.down and port.netns is not None:
        # The host end down: the namespace's end loses its carrier, as with a cable pulled,
        # and its own settings stay as its scripts left them.
        commands.append(
            Command(
                ("ip", "link", "set", "dev", port.host_link, "down"),
                ("ip", "link", "set", "dev", port.host_link, "up"),
            )
        )
    return commands


def link_qmp(port: Port, up: bool) -> tuple[str, dict[str, object]]:
    """A node's NIC losing (or getting back) its carrier, as its guest sees it."""
    assert port.device is not None
    return "set_link", {"name": port.device, "up": up}


def throttle_qmp(drive: str, iops: int | None, bps: int | None) -> dict[str, object]:
    """`block_set_io_throttle` for one `-drive` (its block backend's name); all zero lifts
    every limit."""
    return {
        "device": drive,
        "bps": bps or 0, "bps_rd": 0, "bps_wr": 0,
        "iops": iops or 0, "iops_rd": 0, "iops_wr": 0,
    }  # fmt: skip


DEFAULT_SLOW_IOPS = 10


def disk_index(topo: Topology, fault: MachineFault) -> int:
    node = node_of(topo, fault.target)
    volumes = topo.volumes.get(node, ())
    if fault.volume not in volumes:
        known = ", ".join(volumes) or "none"
        raise FaultError("volume", f"node {node} has no block volume {fault.volume!r} ({known})")
    return volumes.index(fault.volume)


def bmc_address(topo: Topology, fault: BmcFault) -> str:
    node = node_of(topo, fault.target)
    address = topo.bmcs.get(node)
    if address is None:
        raise FaultError("target", f"node {node}'s BMC is not listening (no address yet)")
    return address


__all__ = [
    "Command", "Port", "Topology", "bmc_address", "bmc_drop", "bmc_undrop", "chain_names",
    "create_table", "delete_chains", "disk_index", "find_port", "link_commands", "link_qmp",
    "link_rules", "nft_apply", "node_of", "partition_rules", "qdisc_argv", "throttle_qmp",
]  # fmt: skip
