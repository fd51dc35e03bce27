import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.prereqs import require
from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, snapshot


@pytest.fixture
def host() -> Iterator[HostNetns]:
    with HostNetns() as h:
        yield h


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.fixture(scope="session")
def guest() -> GuestPaths:
    return require.guest()


@pytest.fixture
def running(host: HostNetns, tmp_path: Path) -> Iterator[list[VdcRun]]:
    """Runs started by a test; stopped and checked for leftovers afterwards."""
    before = snapshot(host)
    runs: list[VdcRun] = []
    yield runs
    for run in runs:
        if run.proc and run.proc.poll() is None:
            run.signal(signal.SIGTERM)
            run.wait(60)
    assert_no_leftovers(before, host, markers=("qemu-system", "swtpm"))
