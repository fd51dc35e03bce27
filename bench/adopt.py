"""Benchmark (not a test): the gap a killed `vdc run` leaves, adopted or built again.

    sudo PYTHONPATH=runtime:. /var/cache/vdc/venv/bin/python bench/adopt.py [--nodes 4] [--repeat 3]

A spec of N nodes (the cached test guest, 1 vCPU, 256 MiB), each with a BMC at a static
address on a BMC network. Once every guest has booted, `vdc run` is killed with SIGKILL and
run again with the same run dir, two ways, alternating:

- adopt: `vdc run --adopt` takes over the QEMUs that kept running (issue 2-5);
- rebuild (the baseline, what a restart did before): `vdc run --force` removes what the
  killed run left and builds it all again; the guests boot from scratch.

From the SIGKILL, each is timed until: its REST API answers (`GET /health`, phase running),
the first node's BMC answers IPMI (`ipmitool power status`) and Redfish (`GET
/redfish/v1/Systems/...`), and every guest is ready (its console shows the marker once more
than before the kill for a rebuild; for an adoption, the API reports every node ready). The
boots column counts the markers the kill and restart cost. Median of `--repeat`; the table
ends with adopt / rebuild ratios.

Isolation: as the runtime tests, in a network namespace of its own (`tests.runtime.harness`);
on every exit path the last run is stopped with SIGTERM, which removes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.guest.build import GuestPaths, build_guest
from tests.runtime.guests import Console, node_yaml
from tests.runtime.harness import HostNetns, VdcRun

ADMIN = ("admin", "bench-pw")
MARKER = "VDC-GUEST-READY"
POLL = 0.05
LIMIT = 300.0


def spec(nodes: int, guest: GuestPaths) -> str:
    docs = [
        "kind: Network\nname: bmc\ntype: bmc\naddress: 10.72.16.1/20\n",
        f"kind: BMC\nusers:\n- {{name: {ADMIN[0]}, password: {ADMIN[1]}}}\n",
    ]
    for i in range(nodes):
        docs.append(node_yaml(f"ab{i}", guest, extra=f"bmc: {{address: {bmc_address(i)}}}\n"))
    return "---\n".join(docs)


def bmc_address(i: int) -> str:
    return f"10.72.16.{21 + i}"


@dataclass
class Gap:
    api: float | None = None
    ipmi: float | None = None
    redfish: float | None = None
    ready: float | None = None
    boots: int = 0


@dataclass
class Side:
    name: str
    gaps: list[Gap] = field(default_factory=list)

    def median(self, attr: str) -> float | None:
        values = [getattr(g, attr) for g in self.gaps if getattr(g, attr) is not None]
        return statistics.median(values) if values else None


def ipmi_answers(host: HostNetns, address: str) -> bool:
    argv = ["ipmitool", "-I", "lanplus", "-H", address, "-U", ADMIN[0], "-P", ADMIN[1],
            "-C", "17", "-N", "1", "-R", "1", "power", "status"]  # fmt: skip
    done = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.name}", "--", *argv],
        capture_output=True, text=True, timeout=10,
    )  # fmt: skip
    return done.returncode == 0 and "Chassis Power is on" in done.stdout


def redfish_answers(host: HostNetns, address: str) -> bool:
    argv = ["curl", "-sk", "--max-time", "2", "-o", "/dev/null", "-w", "%{http_code}",
            "-u", ":".join(ADMIN), f"https://{address}/redfish/v1/Systems"]  # fmt: skip
    done = subprocess.run(["nsenter", f"--net=/run/netns/{host.name}", "--", *argv],
                          capture_output=True, text=True, timeout=10)  # fmt: skip
    return done.stdout.strip() == "200"


def api_running(run: VdcRun) -> bool:
    try:
        status, body = run.api("/health")
    except OSError:
        return False
    return status == 200 and body.get("phase") == "running"


def all_ready(run: VdcRun, consoles: list[Console], before: list[int], rebuilt: bool) -> bool:
    if rebuilt:
        return all(c.count(MARKER) > b for c, b in zip(consoles, before, strict=True))
    try:
        status, nodes = run.api("/nodes")
    except OSError:
        return False
    return status == 200 and all(n.get("ready") for n in nodes)


def measure(
    host: HostNetns, files: list[Path], run_dir: Path, old: VdcRun, consoles: list[Console],
    way: str,
) -> tuple[VdcRun, Gap]:  # fmt: skip
    before = [c.count(MARKER) for c in consoles]
    old.signal(signal.SIGKILL)
    killed = time.monotonic()
    old.wait()
    run = VdcRun(host, files, run_dir, "--adopt" if way == "adopt" else "--force").start()
    gap = Gap()
    address = bmc_address(0)
    while None in (gap.api, gap.ipmi, gap.redfish, gap.ready):
        now = time.monotonic() - killed
        if now > LIMIT:
            run.stop()
            raise RuntimeError(f"{way}: not back after {LIMIT:.0f} s ({gap}):\n{run.output}")
        assert run.proc is not None
        if run.proc.poll() is not None:
            raise RuntimeError(f"{way}: vdc run exited with {run.proc.returncode}:\n{run.output}")
        if gap.api is None and api_running(run):
            gap.api = now
        if gap.ipmi is None and gap.api is not None and ipmi_answers(host, address):
            gap.ipmi = time.monotonic() - killed
        if gap.redfish is None and gap.api is not None and redfish_answers(host, address):
            gap.redfish = time.monotonic() - killed
        if (
            gap.ready is None
            and gap.api is not None
            and all_ready(run, consoles, before, way == "rebuild")
        ):
            gap.ready = time.monotonic() - killed
        time.sleep(POLL)
    gap.boots = sum(c.count(MARKER) for c in consoles) - sum(before)
    return run, gap


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    guest = build_guest()
    sides = {"adopt": Side("adopt"), "rebuild": Side("rebuild (--force)")}
    with tempfile.TemporaryDirectory(prefix="vdc-bench-adopt.") as tmp, HostNetns() as host:
        root = Path(tmp)
        files = [root / "lab.yml"]
        files[0].write_text(spec(args.nodes, guest))
        run_dir = root / "run"
        run = VdcRun(host, files, run_dir).start()
        try:
            run.wait_ready(LIMIT)
            consoles = []
            for i in range(args.nodes):
                consoles.append(Console(Path(run.api(f"/nodes/ab{i}")[1]["console_log"])))
            deadline = time.monotonic() + LIMIT
            while not all(c.count(MARKER) for c in consoles):
                assert time.monotonic() < deadline, "the guests did not boot"
                time.sleep(0.2)
            for i in range(args.repeat):
                for way in ("adopt", "rebuild") if i % 2 == 0 else ("rebuild", "adopt"):
                    time.sleep(1.5)  # the run state follows within a second
                    run, gap = measure(host, files, run_dir, run, consoles, way)
                    sides[way].gaps.append(gap)
                    print(
                        f"  {way:8} api {fmt(gap.api)} s, ipmi {fmt(gap.ipmi)} s, redfish"
                        f" {fmt(gap.redfish)} s, ready {fmt(gap.ready)} s, boots {gap.boots}"
                    )
        finally:
            with contextlib.suppress(Exception):
                run.stop()
    print(f"\n{args.nodes} nodes, median of {args.repeat}; seconds from the SIGKILL of vdc run")
    header = f"{'way':18} {'API':>7} {'IPMI':>7} {'Redfish':>8} {'all ready':>10} {'boots':>6}"
    print(header)
    print("-" * len(header))
    for side in sides.values():
        boots = statistics.median(g.boots for g in side.gaps)
        print(
            f"{side.name:18} {fmt(side.median('api')):>7} {fmt(side.median('ipmi')):>7}"
            f" {fmt(side.median('redfish')):>8} {fmt(side.median('ready')):>10} {boots:>6.0f}"
        )
    ratios = []
    for attr in ("api", "ipmi", "redfish", "ready"):
        a, r = sides["adopt"].median(attr), sides["rebuild"].median(attr)
        ratios.append(f"{a / r:.2f}x" if a is not None and r else "-")
    print(f"{'adopt / rebuild':18} {ratios[0]:>7} {ratios[1]:>7} {ratios[2]:>8} {ratios[3]:>10}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
