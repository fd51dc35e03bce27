"""Builds are all or nothing: a build killed halfway is redone, never taken for finished.

The Go sets (the cluster's binaries, skaffold) go through `build.build_set`; here it
builds a small program of our own with a real `go build` and is SIGKILLed in the middle.
The test guest has its own staging (a temporary directory renamed into place); it is
killed while it unpacks the kernel package and resumes from the package it downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.guest import build as guest_build
from tests.prereqs import atomic, require

ROOT = Path(__file__).resolve().parents[2]


# -- the manifest -------------------------------------------------------------------------------


def test_published_set_verifies_and_a_truncated_one_does_not(tmp_path: Path) -> None:
    out = tmp_path / "bin"
    staging = atomic.partial(out)
    (staging / "tool").write_bytes(b"x" * 1000)
    (staging / "sub").mkdir()
    (staging / "sub" / "data").write_text("data")
    atomic.publish(staging, out, info={"seconds": 1})
    assert not staging.exists()
    assert atomic.verify(out, required=("tool", "sub/data"), full=True)
    assert not atomic.verify(out, required=("other",))
    record = json.loads((out / atomic.STAMP).read_text())
    assert record["seconds"] == 1 and record["files"]["tool"]["size"] == 1000

    (out / "tool").write_bytes(b"x" * 10)  # truncated after the fact
    assert not atomic.verify(out)
    (out / "tool").write_bytes(b"y" * 1000)  # same size, other bytes: only a rehash sees it
    assert atomic.verify(out) and not atomic.verify(out, full=True)
    (out / "tool").unlink()
    assert not atomic.verify(out)


def test_a_directory_without_its_stamp_is_not_a_build(tmp_path: Path) -> None:
    out = tmp_path / "bin"
    out.mkdir()
    (out / "tool").write_text("looks built")
    assert not atomic.verify(out, required=("tool",))
    (out / atomic.STAMP).write_text("built in 3 s\n")  # the stamp of older versions
    assert not atomic.verify(out, required=("tool",))


def test_partial_starts_from_an_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "bin"
    leftover = atomic.partial(out)
    (leftover / "half").write_text("half")
    again = atomic.partial(out)
    assert again == leftover and list(again.iterdir()) == []


# -- a Go build killed halfway ---------------------------------------------------------------------

HELLO = """package main

import (
	"fmt"
	"net/http"
)

func main() {
	fmt.Println("hello", http.StatusOK)
}
"""

CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests.e2e.cluster import build

src, out = Path(sys.argv[2]), Path(sys.argv[3])

def steps(staging):
    (staging / "first").write_text("written before the compiler ran")
    build.run(["go", "build", "-o", str(staging / "hello"), "."], src, "hello")

build.build_set(out, ("first", "hello"), steps)
"""


def _descendants(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    try:
        kids = [int(p) for p in children.read_text().split()]
    except OSError:
        return []
    return kids + [d for k in kids for d in _descendants(k)]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill_while(child: subprocess.Popen[bytes], commands: tuple[str, ...]) -> None:
    """SIGKILL the build (its whole session) as soon as one of `commands` runs under it."""
    try:
        deadline = time.monotonic() + 120
        while not any(_comm(p) in commands for p in _descendants(child.pid)):
            assert child.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, f"none of {commands} ever ran"
            time.sleep(0.02)
        os.killpg(child.pid, signal.SIGKILL)
    finally:
        child.wait()


@pytest.mark.slow
def test_go_set_killed_mid_build_is_rebuilt(tmp_path: Path) -> None:
    if shutil.which("go") is None:
        pytest.fail("the Go toolchain is missing: it is part of these machines' image")
    src = tmp_path / "src"
    src.mkdir()
    (src / "go.mod").write_text("module vdc.invalid/hello\n\ngo 1.22\n")
    (src / "main.go").write_text(HELLO)
    out = tmp_path / "out" / "bin"
    # An empty build cache: net/http takes the compiler long enough to be caught at work.
    env = os.environ | {"VDC_CACHE_DIR": str(tmp_path / "cache"), "GOFLAGS": ""}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(ROOT), str(src), str(out)],
        env=env,
        start_new_session=True,
    )
    _kill_while(child, ("compile",))
    staging = out.with_name("bin.partial")
    assert (staging / "first").exists(), "the kill came before the build had started"
    assert not out.exists() and not atomic.verify(out, required=("first", "hello"))

    env_now = {"VDC_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(src), str(out)],
        env=os.environ | env_now,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert atomic.verify(out, required=("first", "hello"), full=True)
    assert not staging.exists()
    assert subprocess.run([out / "hello"], capture_output=True, text=True).stdout == "hello 200\n"


# -- the guest build killed halfway ---------------------------------------------------------------


@pytest.mark.slow
def test_guest_build_killed_while_unpacking_resumes(tmp_path: Path) -> None:
    built = require.guest()
    base = tmp_path / "guest"
    (base / "downloads").mkdir(parents=True)
    # The package the machine's build downloaded, so this test downloads nothing.
    debs = list((built.dir.parent / "downloads").glob(f"{built.kernel_package}_*.deb"))
    assert debs, f"no downloaded kernel package beside {built.dir}"
    shutil.copy(debs[0], base / "downloads" / debs[0].name)
    argv = [sys.executable, str(ROOT / "tests/guest/build.py"), "--cache-dir", str(base)]
    child = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    _kill_while(child, ("dpkg-deb", "depmod"))
    assert guest_build.newest_build(base) is None, "a killed build must not count as built"
    assert list(base.glob(".tmp-*")), "the kill came before the build had started"

    done = subprocess.run([*argv, "--print-paths"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "downloading" not in done.stderr  # resumed from the package it had
    paths = guest_build.newest_build(base)
    assert paths is not None and json.loads(done.stdout)["dir"] == str(paths.dir)
    assert paths.kernel_package == built.kernel_package
    assert not list(base.glob(".tmp-*")), "the next build removes the killed one's staging"
    for kind in ("vmlinuz", "vmlinux", "initrd", "disk"):
        assert getattr(paths, kind).stat().st_size == getattr(built, kind).stat().st_size
