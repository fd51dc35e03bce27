"""Benchmark (not a test): `kubectl apply` → Ready of the quick start split in two groups
(two pods, its network stretched between them) beside the same VDC in one pod.

    sudo PYTHONPATH=. /var/cache/vdc/venv/bin/python bench/groups.py [--repeat 3]

Runs against the e2e cluster of tests/e2e/cluster (brought up, the images built and
imported, the operator installed with its Helm chart). The two-group VDC is the one of
tests/e2e/test_groups.py: the boot server, worker-1 and a BIRD router in rack-a on the
first node; worker-2 and the other router in rack-b on the second node (`cluster.py
add-node`, started for the run and removed after), worker-2 PXE-booting from rack-a's boot
server across the tunnel. The one-pod side is that VDC without its groups. Each run,
alternating the sides: from just before `kubectl apply` until `kubectl wait
--for=condition=Ready` returns, then the deletion's time. Median of `--repeat`; the ratio
is two groups / one pod. Both nodes share this machine's CPUs: this measures what
splitting costs (a second agent, tunnels, the status merge), not what more CPUs gain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.cluster import cluster, config, images  # noqa: E402
from tests.e2e.conftest import OPERATOR_NAMESPACE, Kube, operator_cluster  # noqa: E402
from tests.e2e.test_groups import RUNTIME_IMAGE  # noqa: E402
from tests.e2e.test_groups import manifests as two_groups  # noqa: E402

NS = "default"
NAME = "grouped"
TIMEOUT = 900


def one_pod() -> str:
    """The same data center with its groups taken away: one pod on the first node."""
    docs = [json.loads(d) for d in two_groups().split("\n---\n")]
    for doc in docs:
        if doc["kind"] == "VirtualDataCenter":
            spec = doc["spec"]
            spec.pop("groups")
            for member in [*spec["nodes"], *spec["networkNamespaces"]]:
                member.pop("group", None)
    return "\n---\n".join(json.dumps(d) for d in docs)


def run(kube: Kube, manifest: str) -> tuple[float, float]:
    t0 = time.monotonic()
    kube.apply(manifest)
    done = kube.call("wait", "-n", NS, "--for=condition=Ready", f"vdc/{NAME}",
                     f"--timeout={TIMEOUT}s")  # fmt: skip
    ready = time.monotonic() - t0
    if done.returncode != 0:
        raise RuntimeError(f"not Ready: {done.stderr}")
    t1 = time.monotonic()
    kube.run("delete", "vdc", NAME, "-n", NS, "--wait=true", f"--timeout={TIMEOUT}s")
    if kube.get("pods", "-n", NS, "-l", f"vdc.dev/name={NAME}")["items"]:
        raise RuntimeError("pods left after deleting the VDC")
    return ready, time.monotonic() - t1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/groups.py: run as root (it runs the e2e cluster)")
    kube = operator_cluster()
    cluster.add_node(kube.layout)
    cluster.import_image(kube.layout, images.archive_path(RUNTIME_IMAGE), config.SECOND)
    sides = {"one pod": one_pod(), "two groups": two_groups()}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    try:
        run(kube, sides["one pod"])  # warm-up: page the images and the guest in
        for rep in range(args.repeat):
            order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
            for name in order:
                ready, delete = run(kube, sides[name])
                samples[name].append((ready, delete))
                print(f"  {name}: Ready {ready:.1f} s, deleted {delete:.1f} s", flush=True)
    finally:
        kube.call("delete", "vdc", NAME, "-n", NS, "--wait=true", "--timeout=300s")
        kube.helm("uninstall", "vdc", "--namespace", OPERATOR_NAMESPACE, "--wait")
        cluster.remove_node(kube.layout)
    base = statistics.median(r for r, _ in samples["one pod"])
    print(f"\nkubectl apply -> Ready, the quick start (median of {args.repeat})")
    print("| | apply -> Ready | ratio | delete |")
    print("|---|---|---|---|")
    for name, runs in samples.items():
        ready = statistics.median(r for r, _ in runs)
        delete = statistics.median(d for _, d in runs)
        print(f"| {name} | {ready:.1f} s | {ready / base:.2f} | {delete:.1f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
