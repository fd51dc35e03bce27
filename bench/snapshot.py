"""Benchmark (not a test): a data center started cold against one restored from a snapshot.

    sudo PYTHONPATH=runtime:. /var/cache/vdc/venv/bin/python bench/snapshot.py \\
        [--nodes 2] [--provision 60] [--repeat 1]

Two labs of N nodes (the cached test guest, 1 vCPU, 256 MiB, a 16 MiB disk):

- boot: a node is ready when its guest has booted (`VDC-GUEST-DONE` on its console);
- provisioned: after booting, each guest runs a provisioning step of `--provision`
  seconds (typed into its shell, as a provisioner's agent would run) before it prints
  the marker its readiness rule waits for.

For each, in the same run: cold = `vdc run` until the API reports every node ready; save
= `POST /snapshots {"stop": true}` until it answers; restored = `vdc run --restore` until
every node is ready. The table shows the medians, the speed-up (cold / restored: the
target for the provisioned lab is at least 5x) and the snapshot's size per GiB of guest
RAM.

Isolation: as the runtime tests, in a network namespace of its own
(`tests.runtime.harness`) and a temporary directory; every run is stopped with SIGTERM,
which removes everything.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.guest.build import GuestPaths, build_guest
from tests.runtime.guests import Console, node_yaml
from tests.runtime.harness import HostNetns, VdcRun

LIMIT = 600.0
MEMORY_GIB = 0.25
TARGET = 5.0


def spec(nodes: int, guest: GuestPaths, marker: str) -> str:
    extra = (
        f"volumes:\n- {{kind: raw, name: data, size: 16M}}\nreadiness: {{console: '{marker}'}}\n"
    )
    return "---\n".join(node_yaml(f"sb{i}", guest, extra=extra) for i in range(nodes))


def all_ready(run: VdcRun) -> bool:
    try:
        status, nodes = run.api("/nodes")
    except OSError:
        return False
    return status == 200 and bool(nodes) and all(n.get("ready") for n in nodes)


def wait(what: str, predicate, limit: float = LIMIT) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {limit:.0f} s")
        time.sleep(0.05)


def type_line(run: VdcRun, node: str, line: str) -> None:
    path = run.api(f"/nodes/{node}")[1]["socket_path"]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(line.encode() + b"\r")


@dataclass
class Case:
    name: str
    provision: int
    cold: list[float] = field(default_factory=list)
    save: list[float] = field(default_factory=list)
    restored: list[float] = field(default_factory=list)
    size: list[int] = field(default_factory=list)


def one(host: HostNetns, root: Path, case: Case, nodes: int, guest: GuestPaths, i: int) -> None:
    # The marker is computed by the guest's shell, so the typed command's echo on the
    # console does not match it.
    marker = "VDC-BENCH-2-PROVISIONED" if case.provision else "VDC-GUEST-DONE"
    work = root / f"{case.name}-{i}"
    work.mkdir()
    lab = work / "lab.yml"
    lab.write_text(spec(nodes, guest, marker))
    t0 = time.monotonic()
    run = VdcRun(host, [lab], work / "run").start()
    try:
        run.wait_ready(LIMIT)
        if case.provision:
            consoles = [Console(Path(run.api(f"/nodes/sb{n}")[1]["console_log"]))
                        for n in range(nodes)]  # fmt: skip
            wait("the guests booted", lambda: all(c.count("VDC-GUEST-DONE") for c in consoles))
            time.sleep(0.5)
            for n in range(nodes):
                type_line(
                    run, f"sb{n}", f"sleep {case.provision}; echo VDC-BENCH-$((1+1))-PROVISIONED"
                )
        wait("the cold lab ready", lambda: all_ready(run))
        case.cold.append(time.monotonic() - t0)
        t1 = time.monotonic()
        status, body = run.api("/snapshots", "POST", body={"name": "bench", "stop": True})
        if status != 201:
            raise RuntimeError(f"save: {status} {body}")
        case.save.append(time.monotonic() - t1)
        case.size.append(int(body["size"]))
        run.wait(120)
    finally:
        with contextlib.suppress(Exception):
            run.stop()
    t2 = time.monotonic()
    restored = VdcRun(host, [lab], work / "run", "--restore", "bench").start()
    try:
        restored.wait_ready(LIMIT)
        wait("the restored lab ready", lambda: all_ready(restored))
        case.restored.append(time.monotonic() - t2)
    finally:
        restored.stop()
    print(
        f"  {case.name:12} cold {case.cold[-1]:6.1f} s  save {case.save[-1]:5.1f} s"
        f"  restored {case.restored[-1]:5.1f} s  size {case.size[-1] / (1 << 20):6.1f} MiB"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--provision", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    guest = build_guest()
    cases = [Case("boot", 0), Case("provisioned", args.provision)]
    with tempfile.TemporaryDirectory(prefix="vdc-bench-snapshot.") as tmp, HostNetns() as host:
        for i in range(args.repeat):
            for case in cases:
                one(host, Path(tmp), case, args.nodes, guest, i)
    ram = args.nodes * MEMORY_GIB
    print(f"\n{args.nodes} nodes of 256 MiB, median of {args.repeat}; seconds")
    header = (f"{'lab':12} {'cold':>7} {'save':>6} {'restored':>9} {'speed-up':>9}"
              f" {'MiB':>7} {'MiB/GiB RAM':>12}")  # fmt: skip
    print(header)
    print("-" * len(header))
    for case in cases:
        cold, restored = statistics.median(case.cold), statistics.median(case.restored)
        size = statistics.median(case.size) / (1 << 20)
        print(
            f"{case.name:12} {cold:7.1f} {statistics.median(case.save):6.1f} {restored:9.1f}"
            f" {cold / restored:8.1f}x {size:7.1f} {size / ram:12.1f}"
        )
    provisioned = cases[1]
    speedup = statistics.median(provisioned.cold) / statistics.median(provisioned.restored)
    verdict = "met" if speedup >= TARGET else "missed"
    print(f"target: the provisioned lab restored >= {TARGET:.0f}x faster than cold: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
