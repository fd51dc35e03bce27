"""Benchmark (not a test): vdc's fabric build/teardown beside `ip -batch` making the same objects.

    sudo /var/cache/vdc/venv/bin/python bench/fabric_build.py [--repeat 3] [--sizes 10,50,200]

A generated spine-leaf data center is built and torn down by `vdc_runtime.fabric` and, in the
same run, the very same kernel objects (bridges, named network namespaces with their sysctls
and lo up, veth pairs enslaved to the bridges, addresses, the nftables table, the host NAT
sysctl) are created and deleted with iproute2 (`ip -batch`), `nsenter` and `nft` as the
baseline. Each measurement is repeated, vdc and baseline alternating, and the median is shown.
The target (printed, not asserted) is a vdc build within 1.5x of the baseline.

Also measured, to show where hand-encoded netlink is worth its code: the build's netlink
requests alone, vdc's pipelined batches beside pyroute2's request API making the same links
and addresses, and the MTU probe (the one netlink read on `vdc run`'s start-up path) in a
fresh interpreter, vdc's beside the same rule through pyroute2.

Isolation: the script re-executes itself under `unshare --net --mount` and mounts a private
tmpfs on /run/netns, so its bridges, nftables table and sysctls live in a throw-away network
namespace and its named namespaces are invisible to the rest of the machine; they all vanish
when the process exits, whatever way it exits. The names still carry a per-run prefix
(`bn<tag>`) and are removed explicitly at the end, on errors and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vdc_runtime.fabric import FabricPlan, build, nft, plan_fabric, run_identity, teardown
from vdc_runtime.fabric import netns as nsutil

# The build's phases, timed one by one against pyroute2 doing the same requests.
from vdc_runtime.fabric.build import (
    _configure_namespaces,
    _create_bridges,
    _create_namespaces,
    _create_veths,
)
from vdc_runtime.fabric.plan import NETNS_SYSCTLS
from vdc_runtime.ledger import Ledger

INNER_ENV = "VDC_BENCH_ISOLATED"
NETNS_DIR = Path("/run/netns")
TARGET_RATIO = 1.5
MAX_NAME = 15

# (spines, racks, hosts per rack) -> networks + namespaces = R*(S+2+H) + S + 2
SIZES: dict[int, tuple[int, int, int]] = {
    10: (2, 1, 2),  # 10
    50: (2, 5, 5),  # 49
    200: (4, 12, 10),  # 198
}


class BenchError(RuntimeError):
    pass


# -- topology (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class NetSpec:
    name: str
    type: str  # internal / external / bmc
    use_nat: bool
    address: str | None


@dataclass(frozen=True)
class IfaceSpec:
    network: str
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class NsSpec:
    name: str
    interfaces: tuple[IfaceSpec, ...]


@dataclass(frozen=True)
class Topology:
    spines: int
    racks: int
    hosts: int
    networks: tuple[NetSpec, ...]
    netns: tuple[NsSpec, ...]

    @property
    def size(self) -> int:
        return len(self.networks) + len(self.netns)

    @property
    def label(self) -> str:
        return f"S{self.spines} R{self.racks} H{self.hosts}"


def spine_leaf(spines: int, racks: int, hosts: int, prefix: str) -> Topology:
    """S spines, R racks of one ToR and H hosts; 10.x and fd00:: addresses only.

    Networks: one /31 internal network per (ToR, spine) pair, one internal network per rack,
    one external network (use-nat, with a bridge address) and one bmc network (with a bridge
    address); every spine has a leg on the external and the bmc network.
    """
    if spines > 100 or racks > 250 or hosts > 200:
        raise ValueError("topology too large for the address plan")
    ext, bmc = f"{prefix}ext", f"{prefix}bmc"
    networks = [
        NetSpec(ext, "external", True, "10.0.0.1/24"),
        NetSpec(bmc, "bmc", False, "10.3.0.1/24"),
    ]
    spine_ifaces: list[list[IfaceSpec]] = [
        [
            IfaceSpec(ext, (f"10.0.0.{10 + s}/24",)),
            IfaceSpec(bmc, (f"10.3.0.{10 + s}/24",)),
        ]
        for s in range(spines)
    ]
    tors: list[NsSpec] = []
    host_ns: list[NsSpec] = []
    for r in range(racks):
        tor_ifaces: list[IfaceSpec] = []
        for s in range(spines):
            link = f"{prefix}l{r}x{s}"
            networks.append(NetSpec(link, "internal", False, None))
            spine_ifaces[s].append(IfaceSpec(link, (f"10.1.{r}.{2 * s}/31",)))
            tor_ifaces.append(IfaceSpec(link, (f"10.1.{r}.{2 * s + 1}/31",)))
        rack = f"{prefix}r{r}"
        networks.append(NetSpec(rack, "internal", False, None))
        tor_ifaces.append(IfaceSpec(rack, (f"10.2.{r}.1/24", f"fd00:2:{r:x}::1/64")))
        tors.append(NsSpec(f"{prefix}t{r}", tuple(tor_ifaces)))
        for h in range(hosts):
            host_ns.append(
                NsSpec(f"{prefix}h{r}x{h}", (IfaceSpec(rack, (f"10.2.{r}.{10 + h}/24",)),))
            )
    spine_ns = [NsSpec(f"{prefix}s{s}", tuple(ifaces)) for s, ifaces in enumerate(spine_ifaces)]
    netns = (*spine_ns, *tors, *host_ns)
    for name in [n.name for n in networks] + [n.name for n in netns]:
        if len(name) > MAX_NAME:
            raise ValueError(f"name {name!r} is longer than {MAX_NAME} characters")
    return Topology(spines, racks, hosts, tuple(networks), netns)


def placemat_yaml(topo: Topology) -> str:
    docs: list[dict[str, Any]] = []
    for net in topo.networks:
        doc: dict[str, Any] = {"kind": "Network", "name": net.name, "type": net.type}
        doc["use-nat"] = net.use_nat
        if net.address is not None:
            doc["address"] = net.address
        docs.append(doc)
    for ns in topo.netns:
        interfaces = [{"network": i.network, "addresses": list(i.addresses)} for i in ns.interfaces]
        docs.append({"kind": "NetworkNamespace", "name": ns.name, "interfaces": interfaces})
    return yaml.safe_dump_all(docs, sort_keys=False)


def load_datacenter(topo: Topology) -> tuple[Any, str]:
    """The generated topology as Placemat YAML, through vdc's own spec loader."""
    from vdc_runtime.spec import load_text

    dc = load_text(placemat_yaml(topo), source="bench.yml", base_dir=Path("."))
    return dc, "Placemat YAML through vdc_runtime.spec.load_text"


# -- counting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    bridges: int
    netns: int
    veths: int
    addresses: int

    @property
    def total(self) -> int:
        return self.bridges + self.netns + self.veths + self.addresses

    def __str__(self) -> str:
        return f"{self.bridges}/{self.netns}/{self.veths}/{self.addresses}"


def count(plan: FabricPlan) -> Counts:
    veths = [v for ns in plan.namespaces for v in ns.veths]
    addresses = sum(len(v.addresses) for v in veths) + sum(
        1 for b in plan.bridges if b.address is not None
    )
    return Counts(len(plan.bridges), len(plan.namespaces), len(veths), addresses)


# -- shell helpers -----------------------------------------------------------------------------


def run(argv: list[str], stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(argv[:4])}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctls(keys: list[str]) -> dict[str, str]:
    return {k: sysctl_path(k).read_text().strip() for k in keys}


def net_namespace_objects() -> int | None:
    try:
        for line in Path("/proc/slabinfo").read_text().splitlines():
            if line.startswith("net_namespace "):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def settle(minimum: float) -> None:
    """Let the kernel finish freeing deleted namespaces (it does so asynchronously) so that
    the next measurement does not pay for this one."""
    time.sleep(minimum)
    last, stable, deadline = net_namespace_objects(), 0, time.monotonic() + 5
    while last is not None and stable < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
        now = net_namespace_objects()
        stable = stable + 1 if now == last else 0
        last = now


# -- baseline: iproute2 ------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """The commands that make the plan's objects without vdc; built from the same plan."""

    host_first: str  # ip -batch: bridges (up, grouped), bridge addresses, netns add
    sysctls: tuple[tuple[str, str], ...]  # (netns, sh script) run through nsenter
    host_veths: str  # ip -batch: veth pairs, peer into its netns, host end mastered and up
    netns_batches: tuple[tuple[str, str], ...]  # (netns, ip -batch): lo/eth up, addresses
    nft_ruleset: str
    host_sysctls: tuple[tuple[str, str], ...]
    teardown: str  # ip -batch: link del group, netns del


def baseline_for(plan: FabricPlan) -> Baseline:
    mtu = f" mtu {plan.mtu}" if plan.mtu else ""
    first = [f"link add name {b.name} group {plan.group}{mtu} up type bridge" for b in plan.bridges]
    first += [f"addr add {b.address} dev {b.name}" for b in plan.bridges if b.address is not None]
    first += [f"netns add {ns.name}" for ns in plan.namespaces]
    script = "; ".join(f"echo {v} >{sysctl_path(k)}" for k, v in NETNS_SYSCTLS)
    veths, batches = [], []
    for ns in plan.namespaces:
        lines = ["link set lo up"]
        for v in ns.veths:
            veths.append(
                f"link add name {v.host} group {plan.group}{mtu} master {v.bridge} up"
                f" type veth peer name {v.peer}{mtu} netns {ns.name}"
            )
            lines.append(f"link set {v.peer} up")
            for a in v.addresses:
                lines.append(f"addr add {a} dev {v.peer}" + (" nodad" if a.version == 6 else ""))
        batches.append((ns.name, "\n".join(lines) + "\n"))
    down = [f"link del group {plan.group}"] + [f"netns del {ns.name}" for ns in plan.namespaces]
    return Baseline(
        host_first="\n".join(first) + "\n",
        sysctls=tuple((ns.name, script) for ns in plan.namespaces),
        host_veths="\n".join(veths) + "\n",
        netns_batches=tuple(batches),
        nft_ruleset=nft.ruleset(plan),
        host_sysctls=plan.host_sysctls,
        teardown="\n".join(down) + "\n",
    )


def baseline_build(b: Baseline) -> dict[str, str]:
    """Same order as vdc: namespaces get their sysctls before any veth exists."""
    run(["ip", "-batch", "-"], b.host_first)
    for name, script in b.sysctls:
        run(["nsenter", f"--net={NETNS_DIR / name}", "sh", "-c", script])
    if b.host_veths.strip():
        run(["ip", "-batch", "-"], b.host_veths)
    for name, batch in b.netns_batches:
        run(["ip", "-n", name, "-batch", "-"], batch)
    run(["nft", "-f", "-"], b.nft_ruleset)
    old = {}
    for key, value in b.host_sysctls:
        old[key] = sysctl_path(key).read_text().strip()
        if old[key] != value:
            sysctl_path(key).write_text(value)
    return old


def baseline_teardown(b: Baseline, table: str, old_sysctls: dict[str, str]) -> None:
    run(["nft", "delete", "table", "inet", table])
    run(["ip", "-batch", "-"], b.teardown)
    for key, value in old_sysctls.items():
        sysctl_path(key).write_text(value)


def baseline_process_count(b: Baseline) -> int:
    return 1 + len(b.sysctls) + bool(b.host_veths.strip()) + len(b.netns_batches) + 1


# -- vdc ---------------------------------------------------------------------------------------


async def vdc_build(plan: FabricPlan, ledger: Ledger) -> float:
    t0 = time.perf_counter()
    try:
        await build(plan, ledger)
    except BaseException:
        await teardown(ledger.entries)
        raise
    return time.perf_counter() - t0


async def vdc_teardown(ledger: Ledger) -> float:
    t0 = time.perf_counter()
    problems = await teardown(ledger.entries)
    elapsed = time.perf_counter() - t0
    if problems:
        raise BenchError("vdc teardown reported: " + "; ".join(problems[:5]))
    ledger.close(remove=True)
    return elapsed


# -- checks ------------------------------------------------------------------------------------


def ip_json(*args: str) -> list[dict[str, Any]]:
    return json.loads(run(["ip", "-j", *args]) or "[]")


def nft_tables() -> list[str]:
    out = json.loads(run(["nft", "-j", "list", "tables"]))
    return [i["table"]["name"] for i in out.get("nftables", []) if "table" in i]


def check_clean(after: str, prefix: str, host_sysctls: dict[str, str]) -> None:
    """Nothing of a run may be left: abort otherwise (this whole netns is ours)."""
    left = [f"link {link['ifname']}" for link in ip_json("link", "show") if link["ifname"] != "lo"]
    left += [f"netns {n}" for n in sorted(nsutil.list_netns()) if n.startswith(prefix)]
    left += [f"nft table {t}" for t in nft_tables()]
    now = read_sysctls(list(host_sysctls))
    left += [f"sysctl {k}={now[k]} (was {v})" for k, v in host_sysctls.items() if now[k] != v]
    if left:
        raise BenchError(f"objects left after {after}: " + ", ".join(left[:10]))


def check_built(plan: FabricPlan, who: str) -> None:
    """The build made every planned object (so both sides really do the same work)."""
    wrong: list[str] = []
    bridges = {link["ifname"] for link in ip_json("link", "show", "type", "bridge")}
    if bridges != {b.name for b in plan.bridges}:
        wrong.append(f"bridges {sorted(bridges)[:5]}")
    veths = {
        link["ifname"]: (link.get("master"), link.get("group"), "UP" in link["flags"])
        for link in ip_json("-d", "link", "show", "type", "veth")
    }
    for ns in plan.namespaces:
        for v in ns.veths:
            if veths.get(v.host, (None, None, False))[0::2] != (v.bridge, True):
                wrong.append(f"veth {v.host}: {veths.get(v.host)}")
    bridge_addrs = {
        (a["ifname"], f"{i['local']}/{i['prefixlen']}")
        for a in ip_json("addr", "show", "type", "bridge")
        for i in a.get("addr_info", [])
        if i.get("scope") == "global"
    }
    want = {(b.name, str(b.address)) for b in plan.bridges if b.address is not None}
    if bridge_addrs != want:
        wrong.append(f"bridge addresses {sorted(bridge_addrs)}")
    if not {ns.name for ns in plan.namespaces} <= nsutil.list_netns():
        wrong.append("named netns missing")
    keys = [k for k, _ in NETNS_SYSCTLS]
    for ns in plan.namespaces:
        script = f"cat {' '.join(str(sysctl_path(k)) for k in keys)}; ip -j addr show"
        out = run(["nsenter", f"--net={NETNS_DIR / ns.name}", "sh", "-c", script]).splitlines()
        values = dict(zip(keys, out[: len(keys)], strict=True))
        if values != dict(NETNS_SYSCTLS):
            wrong.append(f"{ns.name} sysctls {values}")
        links = {a["ifname"]: a for a in json.loads("\n".join(out[len(keys) :]))}
        if "UP" not in links.get("lo", {}).get("flags", []):
            wrong.append(f"{ns.name}/lo down")
        for v in ns.veths:
            link = links.get(v.peer, {})
            got = {
                f"{i['local']}/{i['prefixlen']}"
                for i in link.get("addr_info", [])
                if i.get("scope") == "global"
            }
            if "UP" not in link.get("flags", []) or got != {str(a) for a in v.addresses}:
                wrong.append(f"{ns.name}/{v.peer}: {link.get('flags')} {sorted(got)}")
    if plan.table not in nft_tables():
        wrong.append(f"nft table {plan.table} missing")
    if wrong:
        raise BenchError(f"{who} build is incomplete: " + "; ".join(wrong[:8]))


# -- isolation and cleanup ---------------------------------------------------------------------


def reexec_isolated() -> None:
    if os.geteuid() != 0:
        sys.exit("fabric_build: run as root (it creates bridges and network namespaces)")
    # The inner process checks that it really left the namespaces it was started in.
    origin = ",".join(os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "mnt"))
    env = dict(os.environ, **{INNER_ENV: origin})
    env.pop("VDC_NETNS_DIR", None)  # ip(8) only knows /run/netns
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--"]
    argv += [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    try:
        os.execvpe("unshare", argv, env)
    except FileNotFoundError:
        sys.exit("fabric_build: unshare(1) not found (util-linux)")


def enter_private_netns_dir() -> None:
    """Refuse to run outside a private network and mount namespace; hide /run/netns."""
    origin = os.environ.get(INNER_ENV, "").split(",")
    for ns, started_in in zip(("net", "mnt"), origin, strict=False):
        if os.readlink(f"/proc/self/ns/{ns}") == started_in:
            sys.exit(f"fabric_build: not in a private {ns} namespace; refusing to run")
    if len(origin) != 2:
        sys.exit(f"fabric_build: {INNER_ENV} is malformed; run the script without it")
    if nsutil.NETNS_DIR != NETNS_DIR:
        sys.exit(f"fabric_build: vdc uses {nsutil.NETNS_DIR}, ip(8) uses {NETNS_DIR}")
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", "mode=0755", "vdc-bench-netns", str(NETNS_DIR)])


class Janitor:
    """Removes whatever the bench may have made, on every exit path."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.groups: set[int] = set()

    def sweep(self) -> list[str]:
        problems = []
        with contextlib.suppress(BenchError):
            for table in nft_tables():
                subprocess.run(["nft", "delete", "table", "inet", table], check=False)
        lines = [f"link del group {g}" for g in sorted(self.groups)]
        lines += [
            f"netns del {n}" for n in sorted(nsutil.list_netns()) if n.startswith(self.prefix)
        ]
        if lines:
            subprocess.run(
                ["ip", "-force", "-batch", "-"],
                input="\n".join(lines) + "\n",
                text=True,
                capture_output=True,
                check=False,
            )
        left = [f"netns {n}" for n in sorted(nsutil.list_netns()) if n.startswith(self.prefix)]
        with contextlib.suppress(BenchError):
            left += [f"link {i['ifname']}" for i in ip_json("link", "show") if i["ifname"] != "lo"]
            left += [f"nft table {t}" for t in nft_tables()]
        if left:
            problems.append("still present: " + ", ".join(left[:10]))
        return problems


# -- measurement -------------------------------------------------------------------------------


@dataclass
class Samples:
    vdc_build: list[float]
    ip_build: list[float]
    vdc_down: list[float]
    ip_down: list[float]


@dataclass(frozen=True)
class Case:
    size: int
    topo: Topology
    plan: FabricPlan
    baseline: Baseline
    counts: Counts


def make_case(size: int, prefix: str, group: int, table: str) -> tuple[Case, str]:
    spines, racks, hosts = SIZES[size]
    topo = spine_leaf(spines, racks, hosts, prefix)
    dc, source = load_datacenter(topo)
    plan = plan_fabric(dc, mtu=None, group=group, table=table)
    return Case(size, topo, plan, baseline_for(plan), count(plan)), source


def measure(
    case: Case,
    *,
    repeat: int,
    run_dir: Path,
    runner: asyncio.Runner,
    janitor: Janitor,
    pause: float,
    verify: bool,
    first_vdc: bool,
) -> Samples:
    host_keys = [k for k, _ in case.plan.host_sysctls]
    host_before = read_sysctls(host_keys)
    samples = Samples([], [], [], [])
    janitor.groups.add(case.plan.group)

    def vdc_once(check: bool) -> None:
        ledger = Ledger(run_dir)
        samples.vdc_build.append(runner.run(vdc_build(case.plan, ledger)))
        if check:
            check_built(case.plan, "vdc")
        samples.vdc_down.append(runner.run(vdc_teardown(ledger)))
        check_clean(f"vdc teardown (size {case.size})", janitor.prefix, host_before)

    def ip_once(check: bool) -> None:
        t0 = time.perf_counter()
        old = baseline_build(case.baseline)
        samples.ip_build.append(time.perf_counter() - t0)
        if check:
            check_built(case.plan, "ip -batch")
        t0 = time.perf_counter()
        baseline_teardown(case.baseline, case.plan.table, old)
        samples.ip_down.append(time.perf_counter() - t0)
        check_clean(f"ip -batch teardown (size {case.size})", janitor.prefix, host_before)

    for i in range(repeat):
        order: list[Callable[[bool], None]] = [vdc_once, ip_once]
        if (i % 2 == 1) != (not first_vdc):
            order.reverse()
        for step in order:
            step(verify and i == 0)
            settle(pause)
    return samples


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


def report(cases: list[Case], results: dict[int, Samples], repeat: int, source: str) -> None:
    med = statistics.median
    print()
    print(
        f"vdc fabric vs ip -batch, same objects, median of {repeat}; "
        f"target: vdc build <= {TARGET_RATIO}x ip -batch (not asserted)"
    )
    print(f"spec input: {source}")
    print(
        f"kernel {platform.release()}, {os.cpu_count()} cpus, {run(['ip', '-V']).strip()}, "
        f"python {platform.python_version()}"
    )
    print("objects = bridges/netns/veths/addresses; size = networks + namespaces")
    header = (
        f"{'size':>5} {'topology':<12} {'objects':<16} {'vdc build s':>11} {'ip build s':>10} "
        f"{'ratio':>6} {'vdc tdown s':>11} {'ip tdown s':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        s = results[case.size]
        vb, ib, vd, idn = med(s.vdc_build), med(s.ip_build), med(s.vdc_down), med(s.ip_down)
        print(
            f"{case.topo.size:>5} {case.topo.label:<12} {case.counts!s:<16} {vb:>11.3f} "
            f"{ib:>10.3f} {fmt_ratio(vb, ib):>6} {vd:>11.3f} {idn:>10.3f} {fmt_ratio(vd, idn):>6}"
        )
    print()
    for case in cases:
        s, n = results[case.size], case.counts.total
        vb, ib = med(s.vdc_build) / n * 1e3, med(s.ip_build) / n * 1e3
        vd, idn = med(s.vdc_down) / n * 1e3, med(s.ip_down) / n * 1e3
        verdict = "meets" if med(s.vdc_build) <= TARGET_RATIO * med(s.ip_build) else "MISSES"
        print(
            f"build per object   size {case.topo.size:>3} ({n:>4} objects): vdc {vb:.3f} ms, "
            f"ip -batch {ib:.3f} ms; teardown vdc {vd:.3f} ms, ip -batch {idn:.3f} ms; "
            f"{verdict} {TARGET_RATIO}x"
        )
    print()
    print("samples (s):")
    for case in cases:
        s = results[case.size]
        for name, values in vars(s).items():
            print(f"  {case.topo.size:>3} {name:<10} " + " ".join(f"{v:.3f}" for v in values))
    nproc = {case.size: baseline_process_count(case.baseline) for case in cases}
    print(
        "baseline = ip -batch (bridges, addresses, netns add) + nsenter sh per netns (sysctls) "
        "+ ip -batch (veths) + ip -n NS -batch per netns (lo/eth up, addresses) + nft -f; "
        "teardown = nft delete table + ip -batch (link del group, netns del); processes per "
        "build: " + ", ".join(f"{k}: {v}" for k, v in nproc.items())
    )


# -- netlink: vdc's hand-encoded requests beside pyroute2 ---------------------------------------


@dataclass
class NetlinkSamples:
    vdc: list[float]
    pyroute2: list[float]


def _links_with_vdc(plan: FabricPlan, fds: dict[str, int], ledger: Ledger) -> None:
    _create_bridges(plan, ledger)
    _create_veths(plan, fds, ledger)
    _configure_namespaces(plan, fds)


def _links_with_pyroute2(plan: FabricPlan, fds: dict[str, int]) -> None:
    """The same requests as vdc's, through pyroute2's request API (one at a time, each
    acknowledged before the next, as that API works)."""
    from pyroute2 import IPRoute

    mtu = {"mtu": plan.mtu} if plan.mtu else {}
    with IPRoute() as ipr:
        for bridge in plan.bridges:
            ipr.link("add", ifname=bridge.name, kind="bridge", group=plan.group, **mtu)
            (index,) = ipr.link_lookup(ifname=bridge.name)
            ipr.link("set", index=index, state="up")
            if bridge.address is not None:
                ipr.addr("add", index=index, address=str(bridge.address.ip),
                         prefixlen=bridge.address.network.prefixlen)  # fmt: skip
        for ns in plan.namespaces:
            for veth in ns.veths:
                (master,) = ipr.link_lookup(ifname=veth.bridge)
                ipr.link("add", ifname=veth.host, kind="veth", group=plan.group,
                         peer={"ifname": veth.peer, "net_ns_fd": fds[ns.name]}, **mtu)  # fmt: skip
                (index,) = ipr.link_lookup(ifname=veth.host)
                ipr.link("set", index=index, master=master, state="up")
    for ns in plan.namespaces:
        if not ns.veths:
            continue
        with nsutil.entered(fds[ns.name]), IPRoute() as ipr:
            for veth in ns.veths:
                (index,) = ipr.link_lookup(ifname=veth.peer)
                ipr.link("set", index=index, state="up")
                for address in veth.addresses:
                    ipr.addr("add", index=index, address=str(address.ip),
                             prefixlen=address.network.prefixlen)  # fmt: skip


def measure_netlink(
    case: Case, *, repeat: int, run_dir: Path, runner: asyncio.Runner, janitor: Janitor
) -> NetlinkSamples:
    """Time only the netlink requests of a build (bridges, veths, addresses, links up),
    namespaces made beforehand the same way for both sides; alternating, checked once."""
    samples = NetlinkSamples([], [])
    host_before = read_sysctls([k for k, _ in case.plan.host_sysctls])
    for i in range(repeat):
        sides = ["vdc", "pyroute2"] if i % 2 == 0 else ["pyroute2", "vdc"]
        for side in sides:
            ledger = Ledger(run_dir)
            fds = _create_namespaces(case.plan, ledger)
            try:
                t0 = time.perf_counter()
                if side == "vdc":
                    _links_with_vdc(case.plan, fds, ledger)
                else:
                    ledger.record("links", group=case.plan.group,
                                  names=case.plan.links)  # fmt: skip
                    _links_with_pyroute2(case.plan, fds)
                getattr(samples, side).append(time.perf_counter() - t0)
            finally:
                for fd in fds.values():
                    os.close(fd)
            if i == 0:
                check_links(case.plan, side)
            runner.run(vdc_teardown(ledger))
            check_clean(f"netlink {side} (size {case.size})", janitor.prefix, host_before)
            settle(0.1)
    return samples


def check_links(plan: FabricPlan, who: str) -> None:
    present = {i["ifname"]: i for i in ip_json("-d", "link", "show")}
    for name in plan.links:
        link = present.get(name)
        if link is None or str(link.get("group")) != str(plan.group):
            raise BenchError(f"{who}: link {name} missing or not in group {plan.group}")


# Each prints its own elapsed time: the probe alone, imports it needs included, in a fresh
# interpreter (vdc's netlink module is imported beforehand: start-up needs it anyway).
MTU_PROBES = {
    "vdc (hand-decoded dump)": (
        "import time; from vdc_runtime.fabric.mtu import detect_mtu\n"
        "t = time.perf_counter(); detect_mtu(); print(time.perf_counter() - t)"
    ),
    "pyroute2 (import included)": (
        "import time; t = time.perf_counter()\n"
        "from pyroute2 import IPRoute, NetlinkError\n"
        "with IPRoute() as i:\n"
        "    links = i.get_links()\n"
        "    try: i.route('get', dst='192.0.0.10')\n"
        "    except NetlinkError: pass\n"  # the bench's namespace has no route
        "print(time.perf_counter() - t)"
    ),
}


def measure_mtu_probe(repeat: int) -> dict[str, float]:
    """What the MTU probe adds to `vdc run`'s start-up, each way."""
    times: dict[str, list[float]] = {label: [] for label in MTU_PROBES}
    for _ in range(repeat):
        for label, code in MTU_PROBES.items():
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
            times[label].append(float(out.stdout))
    return {label: statistics.median(v) for label, v in times.items()}


def report_netlink(
    cases: list[Case],
    results: dict[int, NetlinkSamples],
    repeat: int,
    probe: dict[str, float],
    probes: int,
) -> None:
    med = statistics.median
    print()
    print(
        "netlink requests of a build, vdc (hand-encoded, pipelined) vs pyroute2, "
        f"median of {repeat}"
    )
    header = f"{'size':>5} {'links':>6} {'vdc s':>8} {'pyroute2 s':>10} {'pyroute2/vdc':>12}"
    print(header)
    print("-" * len(header))
    for case in cases:
        s = results[case.size]
        v, p = med(s.vdc), med(s.pyroute2)
        print(
            f"{case.topo.size:>5} {len(case.plan.links):>6} {v:>8.3f} {p:>10.3f} "
            f"{fmt_ratio(p, v):>12}"
        )
    print()
    print(f"MTU probe, the one netlink read on the start-up path, median of {probes}")
    for label, seconds in probe.items():
        print(f"  {label:<28} {seconds * 1e3:8.1f} ms")


# -- profiling ---------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled_threads(profiles: list[cProfile.Profile]) -> Iterator[None]:
    """cProfile sees one thread only: give each of the fabric's to_thread calls its own."""
    original = asyncio.to_thread

    async def to_thread(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        def profiled() -> Any:
            prof = cProfile.Profile()
            profiles.append(prof)
            return prof.runcall(func, *args, **kwargs)

        return await original(profiled)

    asyncio.to_thread = to_thread  # type: ignore[assignment]
    try:
        yield
    finally:
        asyncio.to_thread = original


def profile(case: Case, run_dir: Path, runner: asyncio.Runner, prefix: str) -> None:
    host_before = read_sysctls([k for k, _ in case.plan.host_sysctls])
    ledger = Ledger(run_dir)
    for phase in ("build", "teardown"):
        main_thread = cProfile.Profile()
        workers: list[cProfile.Profile] = []
        with profiled_threads(workers):
            coro = vdc_build(case.plan, ledger) if phase == "build" else vdc_teardown(ledger)
            elapsed = main_thread.runcall(runner.run, coro)
        print(
            f"\ncProfile of vdc {phase}, size {case.topo.size}: {elapsed:.3f} s wall; "
            f"event loop thread + {len(workers)} worker-thread calls merged (they overlap)"
        )
        stats = pstats.Stats(main_thread)
        for prof in workers:
            stats.add(prof)
        stats.strip_dirs()
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats(25)
    check_clean(f"profiled vdc teardown (size {case.size})", prefix, host_before)


# -- main --------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and side (median)")
    parser.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help=f"comma list out of {list(SIZES)}"
    )
    parser.add_argument(
        "--settle", type=float, default=0.3, help="pause after each teardown, seconds"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip checking the first build of each side"
    )
    parser.add_argument(
        "--profile",
        type=int,
        metavar="SIZE",
        help="also cProfile one vdc build and teardown of this size",
    )
    args = parser.parse_args()
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s]
    except ValueError:
        parser.error("--sizes takes integers")
    if not args.sizes or any(s not in SIZES for s in args.sizes) or args.repeat < 1:
        parser.error(f"--sizes must be out of {list(SIZES)} and --repeat >= 1")
    if args.profile is not None and args.profile not in SIZES:
        parser.error(f"--profile must be one of {list(SIZES)}")
    return args


def bench(args: argparse.Namespace, janitor: Janitor, run_dir: Path) -> None:
    table, group = run_identity(str(run_dir))
    cases, sources = [], set()
    for size in args.sizes:
        case, source = make_case(size, janitor.prefix, group, table)
        cases.append(case)
        sources.add(source)
    janitor.groups.add(group)
    with asyncio.Runner() as runner:
        # Warm-up (not reported): page in binaries and modules, start the executor threads.
        warm, _ = make_case(min(SIZES), janitor.prefix, group, table)
        measure(
            warm,
            repeat=1,
            run_dir=run_dir,
            runner=runner,
            janitor=janitor,
            pause=args.settle,
            verify=not args.no_verify,
            first_vdc=True,
        )
        results: dict[int, Samples] = {}
        for n, case in enumerate(cases):
            print(
                f"size {case.topo.size} ({case.topo.label}, objects {case.counts}) ...",
                file=sys.stderr,
                flush=True,
            )
            results[case.size] = measure(
                case,
                repeat=args.repeat,
                run_dir=run_dir,
                runner=runner,
                janitor=janitor,
                pause=args.settle,
                verify=not args.no_verify,
                first_vdc=n % 2 == 0,
            )
        report(cases, results, args.repeat, "; ".join(sorted(sources)))
        netlink = {
            case.size: measure_netlink(
                case, repeat=args.repeat, run_dir=run_dir, runner=runner, janitor=janitor
            )
            for case in cases
        }
        probes = max(args.repeat, 5)
        report_netlink(cases, netlink, args.repeat, measure_mtu_probe(probes), probes)
        if args.profile is not None:
            case = next((c for c in cases if c.size == args.profile), None)
            if case is None:
                case, _ = make_case(args.profile, janitor.prefix, group, table)
            profile(case, run_dir, runner, janitor.prefix)


def main() -> int:
    args = parse_args()
    if INNER_ENV not in os.environ:
        reexec_isolated()
    enter_private_netns_dir()
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    tag = "".join(
        "0123456789abcdefghijklmnopqrstuvwxyz"[(os.getpid() // 36**i) % 36] for i in (1, 0)
    )
    janitor = Janitor(f"bn{tag}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="vdc-bench-") as tmp:
        try:
            bench(args, janitor, Path(tmp))
        except KeyboardInterrupt:
            print("\nfabric_build: interrupted; cleaning up", file=sys.stderr)
            status = 130
        except BenchError as exc:
            print(f"\nfabric_build: ABORTED: {exc}", file=sys.stderr)
            status = 1
        finally:
            with contextlib.suppress(KeyboardInterrupt):
                for problem in janitor.sweep():
                    print(f"fabric_build: cleanup: {problem}", file=sys.stderr)
                    status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
