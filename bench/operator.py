"""Benchmark (not a test): `kubectl apply` of VirtualDataCenters until every QEMU runs in
their pods, beside bare pods of the same image on the same cluster; and the operator at
scale (bench/operator_scale.py says what that part measures).

    sudo PYTHONPATH=. /var/cache/vdc/venv/bin/python bench/operator.py \\
        [--mode start|scale|all] [--counts 1,10] [--repeat 3] \\
        [--scale 100,500] [--running 20] [--idle 30] [--rates kubectl,0,20] [--floor]

Runs against the e2e cluster of tests/e2e/cluster (brought up, the images built and
imported, the operator installed with its Helm chart). For each count N, alternating the
two sides from run to run, median of `--repeat` runs:

- vdc: N VirtualDataCenters in one `kubectl apply`, each one network and one node booting
  the runtime image's demo kernel directly (`smp: 1`, `memory: 128M`, the pod's requests
  lowered to 50m CPU so ten fit on a 2-core node); time = from just
  before `kubectl apply` until N QEMU processes of theirs exist on this machine (the pods
  run here: the cluster has one node). The time the first of their agents started splits
  it into "apply -> agent" (the operator, the scheduler, the kubelet, containerd) and
  "agent -> QEMU" (the agent's start-up: Python, reading its VDC, building the fabric).
- bare: N pods of the same image in one `kubectl apply`, each running `sleep`; time = until
  N of those processes exist.

The target (printed, not asserted): vdc within 3 s of bare for the same N. Everything the
bench creates is deleted after each run (and checked gone) and the operator uninstalled at
the end; the cluster itself is left as `cluster.py up` leaves it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import OPERATOR_NAMESPACE, Kube, operator_cluster  # noqa: E402

import operator_scale  # noqa: E402
from vdc_runtime.launch import process_start_time, process_started_at  # noqa: E402

NS = "vdc-bench"
IMAGE = "vdc.local/vdc-runtime:dev"
TARGET = 3.0


def process_start(pid: int) -> float | None:
    """Wall-clock start of a process, from /proc (10 ms resolution)."""
    return process_started_at(process_start_time(pid))


def pids(pattern: str) -> list[int]:
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    return [int(p) for p in done.stdout.split()]


def wait_count(pattern: str, count: int, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while len(pids(pattern)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(pids(pattern))}/{count} processes matching {pattern!r}")
        time.sleep(0.02)
    return time.monotonic()


def vdc_manifests(tag: str, count: int) -> str:
    docs = []
    for i in range(count):
        docs.append({
            "apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
            "metadata": {"name": f"bench-{tag}-{i}", "namespace": NS},
            "spec": {
                "networks": [{"name": "benchnet", "type": "internal"}],
                "images": [{"name": "k", "file": "/usr/share/vdc/demo/vmlinuz"},
                           {"name": "i", "file": "/usr/share/vdc/demo/initrd.gz"}],
                "nodes": [{"name": f"b{tag}n{i}", "smp": {"cpus": 1}, "memory": "128M",
                           "kernel": {"image": "k"}, "initrd": {"image": "i"},
                           "cmdline": "console=ttyS0 quiet",
                           "interfaces": [{"network": "benchnet"}]}],
                # Ten VDCs with the default requests (200m each) do not fit a 2-core node
                # beside the cluster's own pods; the bare pods request nothing.
                "pod": {"resources": {"cpu": "50m", "memory": "256Mi"}},
            },
        })  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def pod_manifests(tag: str, count: int) -> str:
    docs = []
    for i in range(count):
        docs.append({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"bare-{tag}-{i}", "namespace": NS},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "bare", "image": IMAGE,
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sleep", f"86400.{tag}{i:03d}"]}]},
        })  # fmt: skip
    return "\n---\n".join(json.dumps(d) for d in docs)


def agents(tag: str) -> list[tuple[float, float]]:
    """(start time, CPU seconds so far) of the agents of this run's VDCs (told apart by
    their VDC_NAME)."""
    found = []
    for pid in pids("vdc agent"):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(e.startswith(f"VDC_NAME=bench-{tag}-".encode()) for e in environ):
            start = process_start(pid)
            with contextlib.suppress(OSError):
                if start is not None:
                    found.append((start, operator_scale.cpu_seconds(pid)))
    return found


def run_vdc(kube: Kube, count: int) -> dict[str, float]:
    tag = f"{uuid.uuid4().int % 10**6:06d}"  # digits: sleep takes it as a number
    wall0, t0 = time.time(), time.monotonic()
    kube.apply(vdc_manifests(tag, count))
    t1 = wait_count(f"qemu-system.*guest=b{tag}n", count)
    seen = agents(tag)
    result = {"total": t1 - t0}
    if seen:
        result["to_agent"] = min(start for start, _ in seen) - wall0
        result["agent_to_qemu"] = (t1 - t0) - result["to_agent"]
        result["agent_cpu"] = statistics.mean(cpu for _, cpu in seen)
    t2 = time.monotonic()
    kube.run("delete", "vdc", "-n", NS, "--all", "--wait=true", "--timeout=300s")
    result["delete"] = time.monotonic() - t2
    if pids(f"qemu-system.*guest=b{tag}n"):
        raise RuntimeError("QEMUs left after deleting the VDCs")
    return result


def run_bare(kube: Kube, count: int) -> dict[str, float]:
    tag = f"{uuid.uuid4().int % 10**6:06d}"  # digits: sleep takes it as a number
    t0 = time.monotonic()
    kube.apply(pod_manifests(tag, count))
    t1 = wait_count(f"sleep 86400.{tag}", count)
    kube.run("delete", "pods", "-n", NS, "--all", "--wait=true", "--timeout=300s")
    return {"total": t1 - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("start", "scale", "all"), default="all")
    parser.add_argument("--counts", default="1,10", help="start: VDCs per apply")
    parser.add_argument("--repeat", type=int, default=3, help="start: runs per count")
    parser.add_argument("--scale", default="100,500", help="scale: parked VDCs per run")
    parser.add_argument("--running", type=int, default=20, help="scale: VDCs that run")
    parser.add_argument("--idle", type=float, default=30, help="scale: seconds idle")
    parser.add_argument("--rates", default="kubectl,0,20",
                        help="scale: VDCs created per second (0: at full speed; kubectl: one"
                             " `kubectl apply -f` of them all)")  # fmt: skip
    parser.add_argument(
        "--floor",
        action="store_true",
        help="scale: also by the floor controller (bench/operator_floor.py)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/operator.py: run as root (it runs the e2e cluster)")
    kube = operator_cluster()
    try:
        if args.mode in ("start", "all"):
            start(kube, [int(c) for c in args.counts.split(",")], args.repeat)
        if args.mode in ("scale", "all"):
            scales = [int(c) for c in args.scale.split(",")]
            rates = [
                operator_scale.KUBECTL if r == "kubectl" else float(r)
                for r in args.rates.split(",")
            ]
            operator_scale.run(kube, scales, args.running, args.idle, rates, args.floor)
    finally:
        if "vdc" in kube.helm("list", "--namespace", OPERATOR_NAMESPACE, "--short").split():
            kube.helm("uninstall", "vdc", "--namespace", OPERATOR_NAMESPACE, "--wait")
    return 0


def start(kube: Kube, counts: list[int], repeat: int) -> None:
    """kubectl apply -> every QEMU running, beside bare pods."""
    kube.call("create", "namespace", NS)
    # Warm-up: the first pod of an image on a node pays for unpacking its layers.
    run_bare(kube, 1)
    run_vdc(kube, 1)

    rows = []
    try:
        for count in counts:
            vdc: list[dict[str, float]] = []
            bare: list[dict[str, float]] = []
            for rep in range(repeat):
                sides = [("vdc", vdc, run_vdc), ("bare", bare, run_bare)]
                for name, samples, fn in sides if rep % 2 == 0 else sides[::-1]:
                    sample = fn(kube, count)
                    samples.append(sample)
                    shown = ", ".join(f"{k} {v:.2f}" for k, v in sample.items())
                    print(f"  N={count} {name}: {shown}", flush=True)

            def med(samples: list[dict[str, float]], key: str) -> float:
                values = [s[key] for s in samples if key in s]
                return statistics.median(values) if values else float("nan")

            rows.append((count, med(bare, "total"), med(vdc, "total"), med(vdc, "to_agent"),
                         med(vdc, "agent_to_qemu"), med(vdc, "agent_cpu"),
                         med(vdc, "delete")))  # fmt: skip
    finally:
        kube.call("delete", "vdc", "-n", NS, "--all", "--wait=true", "--timeout=300s")
        kube.call("delete", "namespace", NS, "--wait=true", "--timeout=300s")

    print()
    print(f"kubectl apply -> every QEMU running (median of {repeat}; target: within"
          f" {TARGET:.0f} s of bare pods)")  # fmt: skip
    print("| N | bare pods | vdc | vdc - bare | ratio | apply -> agent | agent -> QEMU |"
          " CPU per agent | delete |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for count, bare_s, vdc_s, to_agent, agent_qemu, cpu, delete in rows:
        print(f"| {count} | {bare_s:.2f} s | {vdc_s:.2f} s | {vdc_s - bare_s:+.2f} s |"
              f" {vdc_s / bare_s:.2f}x | {to_agent:.2f} s | {agent_qemu:.2f} s |"
              f" {cpu:.2f} s | {delete:.1f} s |")  # fmt: skip
    print("(apply -> agent: to the first agent's start; CPU per agent: user + system time"
          " of each agent when the last QEMU started)")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
