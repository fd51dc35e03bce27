"""The real cluster the e2e tests run against (tests/e2e/cluster), and ways to use it.

The first e2e test brings the cluster up from the binaries and images `make deps-e2e`
built (it fails, naming that target, where they are missing or stale) and the last one
takes it down, so the other suites run without it and CI leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import cluster, config
from tests.prereqs import require


class Kube:
    """kubectl against the e2e cluster, as the admin."""

    def __init__(self, layout: config.Layout) -> None:
        self.layout = layout

    @property
    def kubectl(self) -> list[str]:
        return [str(self.layout.bin / "kubectl"), "--kubeconfig", str(self.layout.kubeconfig)]

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = self.call(*args, stdin=stdin)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def call(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl, whatever it answers (for refusals a test expects)."""
        return subprocess.run([*self.kubectl, *args], input=stdin, capture_output=True, text=True)

    def helm(self, *args: str) -> str:
        argv = [str(self.layout.bin / "helm"), "--kubeconfig", str(self.layout.kubeconfig)]
        done = subprocess.run([*argv, *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", stdin=manifest)

    def get(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json"))

    def wait_for(self, predicate, what: str, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(1)

    def diagnostics(self) -> str:
        """What a failed wait needs to be understood from CI's output alone: the operator's
        recent log and the cluster's recent events."""
        parts = []
        for title, args in (
            ("operator log", ("logs", "-n", OPERATOR_NAMESPACE, "deploy/vdc", "--tail=60")),
            ("events", ("get", "events", "-A", "--sort-by=.lastTimestamp")),
            ("VDC status", ("get", "vdc", "-A", "-o",
                            "jsonpath={range .items[*]}{.metadata.name}: {.status}{'\\n'}{end}")),
        ):  # fmt: skip
            done = self.call(*args)
            text = (done.stdout or done.stderr).strip().splitlines()[-40:]
            parts.append(f"--- {title} ---\n" + "\n".join(text))
        return "\n".join(parts)


@pytest.fixture(scope="package")
def kube() -> Iterator[Kube]:
    archives = require.image_archives()
    try:
        layout = cluster.up(build_missing=False)
    except cluster.ClusterError as exc:
        pytest.fail(str(exc))
    for archive in archives.values():
        cluster.import_image(layout, archive)
    try:
        yield Kube(layout)
    finally:
        # VDC_E2E_KEEP=1 leaves the cluster up for the next run (a developer's loop).
        if not os.environ.get("VDC_E2E_KEEP"):
            cluster.down(layout)


ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "deploy" / "crds" / "virtualdatacenters.vdc.dev.yaml"
CHART = ROOT / "deploy" / "helm" / "vdc"
OPERATOR_NAMESPACE = "vdc-system"


def operator_cluster() -> Kube:
    """For the benchmarks: the cluster up, the images built and imported, the CRD and the
    operator's chart installed (`helm uninstall vdc` takes the operator away again)."""
    from tests.e2e.cluster import images

    layout = cluster.up()
    for archive in images.build_images().values():
        cluster.import_image(layout, archive)
    kube = Kube(layout)
    kube.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))
    # An upgrade with unchanged values keeps the running operator, of the image as it was.
    if "vdc" in kube.helm("list", "--namespace", OPERATOR_NAMESPACE, "--short").split():
        kube.helm("uninstall", "vdc", "--namespace", OPERATOR_NAMESPACE, "--wait")
    kube.helm("upgrade", "--install", "vdc", str(CHART), "--namespace", OPERATOR_NAMESPACE,
              "--create-namespace", "--wait", "--timeout", "5m")  # fmt: skip
    return kube


@pytest.fixture(scope="package")
def crd(kube: Kube) -> Kube:
    """The CRD alone: what the API server refuses without the operator's webhook."""
    kube.run("apply", "--server-side", "--force-conflicts", "-f", str(CRD))

    # Polled rather than `kubectl wait --for=condition=Established`, which fails at once
    # ("status.conditions accessor error") when it reads a CRD whose status has no
    # conditions yet, as a CRD just created on a new cluster can have.
    def established() -> bool:
        status = kube.get("crd", "virtualdatacenters.vdc.dev").get("status") or {}
        return any(
            c.get("type") == "Established" and c.get("status") == "True"
            for c in status.get("conditions") or []
        )

    kube.wait_for(established, "the CRD to be established", timeout=60)
    return kube


@pytest.fixture(scope="package")
def operator(crd: Kube) -> Iterator[Kube]:
    """The operator installed by its Helm chart, its webhook answering."""
    kube = crd
    # A release an interrupted run left behind has pods of the image tag as it was then,
    # which an upgrade with unchanged values would keep: start from a fresh install.
    if "vdc" in kube.helm("list", "--namespace", OPERATOR_NAMESPACE, "--short").split():
        kube.call("delete", "vdc", "--all", "--all-namespaces", "--wait=true", "--timeout=120s")
        kube.helm("uninstall", "vdc", "--namespace", OPERATOR_NAMESPACE, "--wait")
    kube.helm("upgrade", "--install", "vdc", str(CHART), "--namespace", OPERATOR_NAMESPACE,
              "--create-namespace", "--wait", "--timeout", "5m")  # fmt: skip

    def webhook_answers() -> bool:
        node = {"name": "n", "cpu": 1, "interfaces": [{"network": "x"}]}
        probe = {"apiVersion": "vdc.dev/v1alpha1", "kind": "VirtualDataCenter",
                 "metadata": {"name": "webhook-probe", "namespace": "default"},
                 "spec": {"nodes": [node]}}  # fmt: skip
        done = kube.call("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(probe))
        return "no Network named 'x'" in done.stderr

    kube.wait_for(webhook_answers, "the operator's admission webhook", timeout=120)
    try:
        yield kube
    finally:
        kube.call("delete", "vdc", "--all", "--all-namespaces", "--wait=true", "--timeout=120s")
        kube.helm("uninstall", "vdc", "--namespace", OPERATOR_NAMESPACE, "--wait")
