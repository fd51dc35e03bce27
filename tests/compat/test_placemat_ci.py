"""Placemat's commands as its users' CI jobs drive them (placemat-ci.sh), in a test netns."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.prereqs import require
from tests.runtime.conftest import write
from tests.runtime.guests import node_yaml
from tests.runtime.harness import HostNetns, assert_no_leftovers, snapshot

pytestmark = [pytest.mark.root, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("placemat-ci.sh")


@pytest.fixture
def host() -> Iterator[HostNetns]:
    with HostNetns() as h:
        yield h


def test_a_placemat_ci_job_runs_unchanged(host: HostNetns, tmp_path: Path) -> None:
    guest: GuestPaths = require.guest()
    cluster = write(
        tmp_path / "cluster.yml",
        "kind: Network\nname: pm-net\ntype: internal\n---\n"
        "kind: NetworkNamespace\nname: pm-web\n"
        "interfaces: [{network: pm-net, addresses: [10.9.0.2/24]}]\n"
        "apps:\n- name: web\n  command: [python3, -m, http.server, 8000, --bind, 10.9.0.2]\n"
        "---\n" + node_yaml("n1", guest, extra="interfaces: [pm-net]\n"),
    )
    before = snapshot(host)
    # The commands are found on PATH, as `pip install` leaves them.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(
        ["nsenter", f"--net=/run/netns/{host.name}", "--", "bash", str(SCRIPT), str(cluster),
         str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    log = tmp_path / "placemat2.log"
    detail = result.stdout + result.stderr + (log.read_text() if log.exists() else "")
    assert result.returncode == 0, detail
    assert result.stdout.strip().endswith("OK"), detail
    assert result.stdout.count("== ") == 7, result.stdout  # every step ran
    assert_no_leftovers(before, host, markers=("qemu-system", "placemat2", "socat"))
