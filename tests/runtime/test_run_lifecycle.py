"""Start-up failures, signals, SIGKILL and --force: a run never leaves anything behind."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.runtime.conftest import write
from tests.runtime.harness import HostNetns, VdcRun, assert_no_leftovers, sh, snapshot
from tests.runtime.test_run_spine_leaf import make_spine_leaf

pytestmark = [pytest.mark.root, pytest.mark.slow]

# An app that sleeps for a recognisable time, so a leftover process can be found.
SLEEPER = "31{n}7"


def small_dc(
    tmp_path: Path,
    prefix: str,
    *,
    init: str = "true",
    app_argv: str | None = None,
    restart: str = "no",
) -> Path:
    write(tmp_path / f"{prefix}-init.sh", f"#!/bin/sh\n{init}\n", 0o755)
    app = f"apps:\n- name: app\n  restart: {restart}\n  command: {app_argv}\n" if app_argv else ""
    text = f"""\
kind: Network
name: {prefix}net
type: internal
---
kind: NetworkNamespace
name: {prefix}a
interfaces:
- network: {prefix}net
  addresses: [10.5.0.1/24]
---
kind: NetworkNamespace
name: {prefix}b
interfaces:
- network: {prefix}net
  addresses: [10.5.0.2/24]
init-scripts: [{prefix}-init.sh]
{app}"""
    return write(tmp_path / f"{prefix}.yml", text)


def test_sigterm_removes_everything_and_exits_zero(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    marker = SLEEPER.format(n=1)
    run = VdcRun(
        host, [small_dc(tmp_path, "lc", app_argv=f"[sleep, '{marker}']")], tmp_path / "run"
    ).start()
    run.wait_ready()
    assert "1 received" in sh(
        ["ip", "netns", "exec", "lca", "ping", "-c", "1", "-W", "2", "10.5.0.2"]
    )
    assert run.stop() == 0, run.output
    assert "removed everything this run created" in run.output
    assert_no_leftovers(before, host, markers=(marker,))
    assert not (tmp_path / "run" / "vdc-ledger.jsonl").exists()


def test_sigint_works_like_sigterm(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    run = VdcRun(host, [small_dc(tmp_path, "li")], tmp_path / "run").start()
    run.wait_ready()
    run.signal(signal.SIGINT)
    assert run.wait() == 0, run.output
    assert_no_leftovers(before, host)


def test_failing_init_script_mid_startup_leaves_nothing(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    files = [small_dc(tmp_path, "fi", init="echo about to fail; exit 3")]
    run = VdcRun(host, files, tmp_path / "run")
    assert run.run_to_exit() == 1
    out = run.output
    assert "fi-init.sh in fib exited with 3" in out, out
    assert "about to fail" in out
    assert "everything created was removed" in out
    assert_no_leftovers(before, host)


def test_app_exit_stops_the_run_by_default(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    run = VdcRun(
        host, [small_dc(tmp_path, "ax", app_argv="[sh, -c, 'sleep 1; exit 4']")], tmp_path / "run"
    ).start()
    run.wait_ready()
    assert run.wait(30) == 1
    assert "app axb/app exited with 4" in run.output
    assert_no_leftovers(before, host)


def test_app_restart_on_failure(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    files = [
        small_dc(tmp_path, "ar", app_argv="[sh, -c, 'echo tick; exit 1']", restart="on-failure")
    ]
    run = VdcRun(host, files, tmp_path / "run").start()
    run.wait_ready()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        app = run.api("/netns/arb")[1]["apps"][0]
        if app["restarts"] >= 2:
            break
        time.sleep(0.3)
    assert app["restarts"] >= 2 and app["exit_code"] == 1, app
    assert run.api("/health")[0] == 200  # the run is still up
    assert run.stop() == 0
    assert Path(app["log"]).read_text().count("tick") >= 3  # every run of it, in one file
    assert_no_leftovers(before, host)


def test_sigkill_then_force_removes_leftovers(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    marker = SLEEPER.format(n=2)
    files = [small_dc(tmp_path, "fk", app_argv=f"[sleep, '{marker}']")]
    first = VdcRun(host, files, tmp_path / "run").start()
    first.wait_ready()
    first.signal(signal.SIGKILL)
    first.wait()
    assert "fka" in sh(["ip", "netns", "list"])  # the killed run left its objects

    refused = VdcRun(host, files, tmp_path / "run")
    assert refused.run_to_exit() == 1
    assert "--force" in refused.output and "did not clean up" in refused.output

    forced = VdcRun(host, files, tmp_path / "run", "--force").start()
    forced.wait_ready()
    # The killed run's app was stopped, and exactly one new one runs.
    sleepers = [
        line for line in sh(["ps", "-eo", "args"]).splitlines() if line == f"sleep {marker}"
    ]
    assert len(sleepers) == 1, sleepers
    assert forced.stop() == 0, forced.output
    assert_no_leftovers(before, host, markers=(marker,))


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie waits for its reaper only


def test_apps_outlive_a_killed_run_and_keep_writing_their_logs(
    host: HostNetns, tmp_path: Path
) -> None:
    """An app writes its output to its log file itself: through a pipe to `vdc run`, the
    first line after a SIGKILL of the run would kill it with SIGPIPE, and an adopting run
    would find nothing to adopt. `--force` still stops it."""
    before = snapshot(host)
    marker = SLEEPER.format(n=5)
    ticker = f"[sh, -c, 'while :; do echo tick {marker}; sleep 0.1; done']"
    files = [small_dc(tmp_path, "ak", app_argv=ticker)]
    first = VdcRun(host, files, tmp_path / "run").start()
    first.wait_ready()
    app = first.api("/netns/akb")[1]["apps"][0]
    log, pid = Path(app["log"]), app["pid"]
    first.signal(signal.SIGKILL)
    first.wait()
    forced = VdcRun(host, files, tmp_path / "run", "--force")
    try:
        time.sleep(0.5)
        size = log.stat().st_size
        time.sleep(1)
        assert _running(pid), "the app died with its run"
        assert log.stat().st_size > size, "the app stopped writing once its run was gone"
    finally:
        # Also when an assertion failed: what the killed run left must go.
        forced.start().wait_ready()
    assert not _running(pid)
    assert forced.stop() == 0, forced.output
    assert_no_leftovers(before, host, markers=(marker,))


def test_force_removes_same_named_objects_without_a_ledger(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    host.sh(["ip", "link", "add", "fnnet", "type", "bridge"])
    sh(["ip", "netns", "add", "fna"])
    files = [small_dc(tmp_path, "fn")]
    refused = VdcRun(host, files, tmp_path / "run")
    assert refused.run_to_exit() == 1
    assert "already exist: network namespace fna, link fnnet" in refused.output
    assert "fnnet" in host.sh(["ip", "link"])  # refusing touched nothing
    forced = VdcRun(host, files, tmp_path / "run", "--force").start()
    forced.wait_ready()
    assert forced.stop() == 0
    assert_no_leftovers(before, host)


def test_two_runs_with_own_run_dirs_coexist(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    one = VdcRun(host, [small_dc(tmp_path, "ca")], tmp_path / "run1").start()
    two = VdcRun(
        host,
        [make_spine_leaf(tmp_path, prefix="c")],
        tmp_path / "run2",
        "--listen-addr",
        "127.0.0.1:10809",
    ).start()
    one.wait_ready()
    two.wait_ready(60)
    assert one.stop() == 0
    # The second run is untouched by the first one's teardown.
    assert "2 received" in sh(
        ["ip", "netns", "exec", "chost0", "ping", "-c", "2", "-W", "2", "10.2.1.10"]
    )
    assert two.stop() == 0
    assert_no_leftovers(before, host, markers=("http.server",))


def test_second_run_on_same_run_dir_is_refused(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    one = VdcRun(host, [small_dc(tmp_path, "sa")], tmp_path / "run").start()
    one.wait_ready()
    two = VdcRun(
        host, [small_dc(tmp_path, "sb")], tmp_path / "run", "--listen-addr", "127.0.0.1:10809"
    )
    assert two.run_to_exit() == 1
    assert "is in use by another vdc run" in two.output
    assert one.api("/health")[0] == 200
    assert one.stop() == 0
    assert_no_leftovers(before, host)


def test_busy_api_port_fails_cleanly(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    blocker = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{host.name}", "--", sys.executable, "-c",
         "import socket,time; s=socket.socket(); s.bind(('127.0.0.1',10808)); s.listen(); "
         "time.sleep(60)"]
    )  # fmt: skip
    try:
        time.sleep(0.5)
        run = VdcRun(host, [small_dc(tmp_path, "bp")], tmp_path / "run")
        assert run.run_to_exit() == 1
        assert "cannot listen on 127.0.0.1:10808" in run.output
    finally:
        blocker.kill()
        blocker.wait()
    assert_no_leftovers(before, host)


def test_sigterm_during_startup_undoes_the_partial_build(host: HostNetns, tmp_path: Path) -> None:
    before = snapshot(host)
    files = [small_dc(tmp_path, "su", init="echo waiting; sleep 60")]
    run = VdcRun(host, files, tmp_path / "run").start()
    deadline = time.monotonic() + 20
    while "[sub/su-init.sh] waiting" not in run.output and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "sua" in sh(["ip", "netns", "list"])  # the fabric exists while the script runs
    run.signal(signal.SIGTERM)
    assert run.wait(30) == 0, run.output
    assert "signal received during start-up" in run.output
    assert_no_leftovers(before, host, markers=("sleep 60",))


# A plan the kernel refuses halfway: bridges and namespaces exist by then, and the veth
# with an over-long interface name fails. The ledger must undo exactly what was made.
FAULTY_BUILD = """
import asyncio, ipaddress, sys, tempfile
from pathlib import Path
from vdc_runtime import fabric
from vdc_runtime.fabric.plan import BridgePlan, FabricPlan, NetnsPlan, VethPlan
from vdc_runtime.ledger import Ledger

addr = ipaddress.ip_interface
plan = FabricPlan(
    mtu=None, group=777, table="vdc_faulty",
    bridges=(BridgePlan("fbr0", "internal", None, False),),
    namespaces=(
        NetnsPlan("fns0", (VethPlan("vdcfault0", "eth0", "fbr0", (addr("10.8.0.1/24"),)),)),
        NetnsPlan("fns1", (VethPlan("vdcfault1", "eth-name-too-long0", "fbr0", ()),)),
    ),
)

async def main():
    ledger = Ledger(Path(tempfile.mkdtemp()))
    try:
        await fabric.build(plan, ledger)
    except fabric.FabricError as exc:
        print("refused:", exc)
    print("problems:", await fabric.teardown(ledger.entries))

asyncio.run(main())
"""


def test_kernel_failure_mid_build_is_undone_by_the_ledger(host: HostNetns) -> None:
    before = snapshot(host)
    out = host.sh([sys.executable, "-c", FAULTY_BUILD])
    assert "refused: creating veth pairs: " in out and "eth-name-too-long0" in out, out
    assert "problems: []" in out
    assert_no_leftovers(before, host)
