"""Benchmark (not a test): one network, two namespaces, on one host or stretched over two.

    sudo /var/cache/vdc/venv/bin/python bench/stretch.py [--pings 200] [--seconds 5]

The same two namespaces (10.0.0.1 and 10.0.0.2 on network `bnet`) are measured twice:

- baseline: one `vdc run` builds both, on one bridge;
- stretched: the spec splits them in two groups, built by two `vdc run --group` on two
  hosts, and `bnet` is stretched over VXLAN between them.

The hosts are two network namespaces of this bench, joined by a veth (as two machines by a
cable; the kernel does the same work for a real NIC, minus the wire). Measured: ping's
round-trip time (median of the run's averages) and iperf3's TCP throughput from one
namespace to the other. Printed as a table with the ratio stretched / baseline; nothing is
asserted. Everything, iperf3's traffic included, stays inside the bench's namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

UNDERLAY = ("10.231.9.1", "10.231.9.2")

SPEC = """\
kind: Network
name: bnet{p}
type: internal
---
{groups}kind: NetworkNamespace
name: bsa{p}
{group_a}interfaces:
- network: bnet{p}
  addresses: [10.0.0.1/24]
---
kind: NetworkNamespace
name: bsb{p}
{group_b}interfaces:
- network: bnet{p}
  addresses: [10.0.0.2/24]
"""


def in_netns(ns: str, argv: list[str]) -> list[str]:
    # nsenter, not `ip netns exec`: that one enters a mount namespace of its own, where
    # the namespaces vdc mounts under /run/netns would stay invisible.
    return ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]


def sh(*argv: str, ns: str | None = None, check: bool = True) -> str:
    if ns is not None:
        argv = tuple(in_netns(ns, list(argv)))
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        sys.exit(f"stretch: {' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@contextlib.contextmanager
def hosts(tag: str) -> Iterator[tuple[str, str]]:
    names = (f"bha{tag}", f"bhb{tag}")
    try:
        for name in names:
            sh("ip", "netns", "add", name)
            sh("ip", "link", "set", "lo", "up", ns=name)
        sh("ip", "link", "add", f"ua{tag}", "netns", names[0], "type", "veth",
           "peer", "name", f"ub{tag}", "netns", names[1])  # fmt: skip
        for name, link, address in zip(names, (f"ua{tag}", f"ub{tag}"), UNDERLAY, strict=True):
            sh("ip", "address", "add", f"{address}/24", "dev", link, ns=name)
            sh("ip", "link", "set", link, "up", ns=name)
        yield names
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)


class Run:
    def __init__(self, host: str, spec: Path, work: Path, *extra: str) -> None:
        work.mkdir(parents=True)
        self.host, self.log = host, work / "vdc.log"
        argv = [sys.executable, "-m", "vdc_runtime.cli", "run", str(spec),
                f"--run-dir={work / 'run'}", f"--data-dir={work / 'data'}",
                f"--cache-dir={work / 'cache'}", *extra]  # fmt: skip
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(in_netns(host, argv), stdout=out,
                                         stderr=subprocess.STDOUT)  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"stretch: vdc run exited:\n{self.log.read_text()}")
            health = ["curl", "-sf", "http://127.0.0.1:10808/health"]
            probe = subprocess.run(in_netns(self.host, health), capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        sys.exit(f"stretch: vdc run not ready:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        if self.proc.wait(60) != 0:
            sys.exit(f"stretch: vdc run failed to stop cleanly:\n{self.log.read_text()}")


def rtt_ms(src: str, dst: str, count: int) -> float:
    out = sh("ping", "-q", "-c", str(count), "-i", "0.005", dst, ns=src)
    match = re.search(r"= [\d.]+/([\d.]+)/", out)
    if match is None:
        sys.exit(f"stretch: no RTT in ping's output: {out}")
    return float(match.group(1))


def throughput_gbps(src: str, dst_ns: str, dst: str, seconds: int) -> float:
    server = subprocess.Popen(in_netns(dst_ns, ["iperf3", "-s", "-1", "-B", dst]),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)
        out = sh("iperf3", "-c", dst, "-t", str(seconds), "-J", ns=src)
    finally:
        server.wait(30)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def measure(a: str, b: str, args: argparse.Namespace) -> tuple[float, float, float]:
    sh("ping", "-c", "3", "-W", "2", "10.0.0.2", ns=a)  # warm ARP and the FDBs
    rtts = sorted(rtt_ms(a, "10.0.0.2", args.pings) for _ in range(3))
    gbps = throughput_gbps(a, b, "10.0.0.2", args.seconds)
    mtu = int(json.loads(sh("ip", "-j", "link", "show", "eth0", ns=a))[0]["mtu"])
    return rtts[1], gbps, mtu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=200, help="pings per RTT sample")
    parser.add_argument("--seconds", type=int, default=5, help="iperf3's duration")
    args = parser.parse_args()
    for tool in ("iperf3", "curl", "ping"):
        if shutil.which(tool) is None:
            sys.exit(f"stretch: {tool} not found (make deps installs it)")
    tag = uuid.uuid4().hex[:5]
    results: dict[str, tuple[float, float, float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="vdc-bench-stretch-") as tmp_name,
        hosts(tag) as (
            host_a,
            host_b,
        ),
    ):
        tmp = Path(tmp_name)
        a, b = f"bsa{tag}", f"bsb{tag}"
        one = tmp / "one.yml"
        one.write_text(SPEC.format(p=tag, groups="", group_a="", group_b=""))
        run = Run(host_a, one, tmp / "one")
        try:
            run.wait_ready()
            results["one host"] = measure(a, b, args)
        finally:
            run.stop()
        two = tmp / "two.yml"
        groups = "kind: Group\nname: ga\n---\nkind: Group\nname: gb\n---\n"
        two.write_text(SPEC.format(p=tag, groups=groups, group_a="group: ga\n",
                                   group_b="group: gb\n"))  # fmt: skip
        runs = [
            Run(host_a, two, tmp / "a", "--group", "ga", f"--peer=gb={UNDERLAY[1]}"),
            Run(host_b, two, tmp / "b", "--group", "gb", f"--peer=ga={UNDERLAY[0]}"),
        ]
        try:
            for r in runs:
                r.wait_ready()
            results["stretched"] = measure(a, b, args)
        finally:
            for r in runs:
                r.stop()
    base_rtt, base_gbps, _ = results["one host"]
    print(f"\n{'':<12}{'RTT ms':>10}{'ratio':>8}{'TCP Gbit/s':>12}{'ratio':>8}{'MTU':>6}")
    for name, (rtt, gbps, mtu) in results.items():
        print(f"{name:<12}{rtt:>10.3f}{rtt / base_rtt:>8.2f}{gbps:>12.2f}"
              f"{gbps / base_gbps:>8.2f}{mtu:>6}")  # fmt: skip
    print("\n(two hosts emulated by network namespaces joined by a veth; ratio = / one host)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
