"""The real cluster the e2e tests run against (tests/e2e/cluster), and ways to use it.

The first e2e test brings the cluster up (building its binaries and images when they
are not cached yet: about 10 minutes on a fresh machine, seconds afterwards) and the
last one takes it down, so the other suites run without it and CI leaves nothing behind.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import cluster, config, images


class Kube:
    """kubectl against the e2e cluster, as the admin."""

    def __init__(self, layout: config.Layout) -> None:
        self.layout = layout

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        argv = [str(self.layout.bin / "kubectl"), "--kubeconfig", str(self.layout.kubeconfig)]
        done = subprocess.run([*argv, *args], input=stdin, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", stdin=manifest)

    def get(self, *args: str) -> Any:
        return json.loads(self.run("get", *args, "-o", "json"))

    def wait_for(self, predicate, what: str, timeout: float = 180) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(1)


@pytest.fixture(scope="package")
def kube() -> Iterator[Kube]:
    layout = cluster.up()
    for archive in images.build_images().values():
        cluster.import_image(layout, archive)
    try:
        yield Kube(layout)
    finally:
        cluster.down(layout)
