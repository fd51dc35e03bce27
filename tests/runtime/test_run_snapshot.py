"""Whole-data-center snapshots (issue 2-6): `vdc snapshot save` on a running data center,
then `vdc run --restore`, with a real guest whose RAM and disk hold tokens it wrote."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.guest.build import GuestPaths
from tests.runtime.conftest import write
from tests.runtime.guests import Console, console, node_yaml
from tests.runtime.harness import HostNetns, VdcRun

pytestmark = [pytest.mark.root, pytest.mark.slow]


def lab(guest: GuestPaths, memory: str = "256M") -> str:
    text = node_yaml("sn1", guest, extra="volumes:\n- {kind: raw, name: data, size: 16M}\n")
    return text.replace("memory: 256M", f"memory: {memory}")


def type_line(run: VdcRun, node: str, line: str) -> None:
    """Type a line into the guest's shell on its serial console."""
    path = run.api(f"/nodes/{node}")[1]["socket_path"]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(line.encode() + b"\r")
        time.sleep(0.5)


def answer(con: Console, pattern: str, after: int) -> re.Match[str]:
    """The first match of `pattern` in what the console printed past offset `after`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(pattern, con.text[after:])
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not seen:\n{con.text[after:][-2000:]}")


def test_a_saved_data_center_is_restored_where_it_was(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    spec = write(tmp_path / "lab.yml", lab(guest))
    run = VdcRun(host, [spec], tmp_path / "run").start()
    running.append(run)
    run.wait_ready(120)
    con = console(run, "sn1")
    con.wait_for("VDC-GUEST-DONE")
    time.sleep(1)
    # One token in RAM only (the initramfs), one on the disk.
    mark = len(con.text)
    type_line(run, "sn1", "echo ram-41517 > /tmp/token; echo disk-82635 | dd of=/dev/vda"
              " conv=fsync 2>/dev/null; echo SAVED-$(cut -d' ' -f1 /proc/uptime)-END")  # fmt: skip
    saved_uptime = float(answer(con, r"SAVED-([0-9.]+)-END", mark)[1])

    status, body = run.api("/snapshots", "POST", body={"name": "first", "stop": True})
    assert status == 201, body
    assert body["machines"] == ["sn1"] and body["size"] > 0, body
    assert run.wait(120) == 0, run.output  # --stop: the run ends once saved
    running.remove(run)
    assert "stopping, as the snapshot asked" in run.output

    # Another spec's machine does not fit the snapshot: refused, naming the difference.
    changed = write(tmp_path / "changed.yml", lab(guest, memory="384M"))
    refused = VdcRun(host, [changed], tmp_path / "run", "--restore", "first")
    assert refused.run_to_exit(120) == 1
    assert 'nodes[sn1].memory: "256M" -> "384M"' in refused.output, refused.output

    restored = VdcRun(host, [spec], tmp_path / "run", "--restore", "first").start()
    running.append(restored)
    restored.wait_ready(120)
    node = restored.api("/nodes/sn1")[1]
    assert node["power_status"] == "On" and node["ready"] is True, node
    mark = len(con.text)
    type_line(restored, "sn1", "echo GOT-$(cat /tmp/token)-$(dd if=/dev/vda bs=10 count=1"
              " 2>/dev/null)-UP-$(cut -d' ' -f1 /proc/uptime)-END")  # fmt: skip
    got = answer(con, r"GOT-(\S*?)-(disk-\S*)-UP-([0-9.]+)-END", mark)
    assert (got[1], got[2]) == ("ram-41517", "disk-82635"), got[0]
    # The guest went on where it was paused: the same boot, its uptime running on.
    assert float(got[3]) >= saved_uptime
    assert con.count("VDC-GUEST-READY") == 1
    assert restored.stop() == 0, restored.output
    running.remove(restored)


def test_a_save_killed_halfway_leaves_no_partial_snapshot(
    host: HostNetns, tmp_path: Path, guest: GuestPaths, running: list[VdcRun]
) -> None:
    spec = write(tmp_path / "lab.yml", lab(guest))
    run = VdcRun(host, [spec], tmp_path / "run").start()
    running.append(run)
    run.wait_ready(120)
    con = console(run, "sn1")
    con.wait_for("VDC-GUEST-DONE")
    time.sleep(1)
    # A save without --stop: the machines run on at once.
    status, body = run.api("/snapshots", "POST", body={"name": "one"})
    assert status == 201, body
    assert run.api("/nodes/sn1")[1]["power_status"] == "On"
    mark = len(con.text)
    type_line(run, "sn1", "echo STILL-$((40+2))-RUNNING")
    answer(con, r"STILL-42-RUNNING", mark)
    assert [s["name"] for s in run.api("/snapshots")[1]] == ["one"]

    # The next save, killed with the run as soon as it has begun writing.
    snapshots = tmp_path / "data" / "snapshots"

    def save_two() -> None:
        with contextlib.suppress(OSError):  # the run is killed under it
            run.api("/snapshots", "POST", body={"name": "two"})

    saving = threading.Thread(target=save_two, daemon=True)
    saving.start()
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".two.") for p in snapshots.iterdir()):
        assert time.monotonic() < deadline, "the second save never began"
        time.sleep(0.005)
    run.signal(signal.SIGKILL)
    run.wait()
    running.remove(run)
    assert not (snapshots / "two").exists()

    # The next run restores the last complete snapshot, and the killed save's files go.
    restored = VdcRun(host, [spec], tmp_path / "run", "--force", "--restore", "one").start()
    running.append(restored)
    restored.wait_ready(120)
    assert [p.name for p in snapshots.iterdir()] == ["one"], list(snapshots.iterdir())
    mark = len(con.text)
    type_line(restored, "sn1", "echo BACK-$((40+3))-AGAIN")
    answer(con, r"BACK-43-AGAIN", mark)
    assert con.count("VDC-GUEST-READY") == 1
    assert restored.stop() == 0, restored.output
    running.remove(restored)
