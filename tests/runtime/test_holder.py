"""The holder (`vdc holder`): a real holder process, asked over its socket as the agent
asks it, starting real processes and holding real network namespaces."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.holder import protocol
from vdc_runtime.holder.client import HolderClient, HolderError, close_quietly
from vdc_runtime.holder.namespaces import HeldNamespaces
from vdc_runtime.holder.server import child_argv
from vdc_runtime.launch import HolderLauncher, running

# -- pure ---------------------------------------------------------------------------------------


def test_a_command_is_started_as_given_unless_it_enters_a_namespace_or_a_directory() -> None:
    assert child_argv(["qemu", "-m", "1G"], False, None) == ["qemu", "-m", "1G"]
    assert child_argv(["dnsmasq", "-k"], True, None) == [
        "nsenter", "--net=/proc/self/fd/3", "--", "dnsmasq", "-k"
    ]  # fmt: skip
    assert child_argv(["./run.sh"], True, "/srv/lab") == [
        "nsenter", "--net=/proc/self/fd/3", "--wd=/srv/lab", "--", "./run.sh"
    ]  # fmt: skip
    assert child_argv(["pwd"], False, "/tmp") == ["nsenter", "--wd=/tmp", "--", "pwd"]


def test_the_wire_format_refuses_what_is_not_a_message() -> None:
    assert protocol.decode(protocol.encode({"op": "state"})) == {"op": "state"}
    for bad in (b"[1]", b"\xff", b"{"):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(bad)
    with pytest.raises(protocol.ProtocolError, match="over"):
        protocol.encode({"x": "y" * protocol.MAX_MESSAGE})


# -- a real holder ------------------------------------------------------------------------------


@pytest.fixture
def holder_socket(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    path = tmp_path / "holder.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vdc_runtime.cli", "holder", "--socket", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "holder.log").open("wb"),
    )
    try:
        yield path, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
async def launcher(
    holder_socket: tuple[Path, subprocess.Popen[bytes]],
) -> AsyncIterator[HolderLauncher]:
    client = HolderClient(holder_socket[0])
    await client.wait_ready(within=20)
    yield HolderLauncher(client)


async def test_a_process_the_holder_starts_is_not_ours_and_its_exit_status_is_known(
    launcher: HolderLauncher, tmp_path: Path
) -> None:
    out = tmp_path / "out.log"
    proc = await launcher.spawn(
        ["sh", "-c", "echo started in $(pwd) with $VDC_HOLDER_TEST; exit 3"],
        out, label="test/exit3", cwd=tmp_path,
    )  # fmt: skip
    assert proc.pid > 0
    with pytest.raises(ChildProcessError):
        os.waitpid(proc.pid, os.WNOHANG)  # noqa: ASYNC222 - the holder's child, not ours
    assert await asyncio.wait_for(proc.wait(), 10) == 3
    assert proc.exited and proc.returncode == 3
    assert out.read_text() == f"started in {tmp_path} with\n"


async def test_the_callers_environment_goes_with_the_command(
    launcher: HolderLauncher, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VDC_HOLDER_TEST", "from-the-agent")
    out = tmp_path / "env.log"
    proc = await launcher.spawn(["sh", "-c", "echo $VDC_HOLDER_TEST"], out, label="env")
    assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert out.read_text() == "from-the-agent\n"


async def test_a_process_killed_by_a_signal_reports_it_and_a_missing_program_is_an_oserror(
    launcher: HolderLauncher, tmp_path: Path
) -> None:
    proc = await launcher.spawn(["sleep", "60"], tmp_path / "sleep.log", label="sleep")
    assert running(proc.pid, proc.start)
    assert os.getpgid(proc.pid) == proc.pid  # its own session and group
    os.killpg(proc.pid, signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGTERM
    with pytest.raises(FileNotFoundError):
        await launcher.spawn(["no-such-program-vdc"], tmp_path / "x.log", label="missing")


async def test_a_process_outlives_its_caller_and_is_adopted_with_its_exit_status(
    holder_socket: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    first = HolderLauncher(HolderClient(holder_socket[0]))
    await first.client.wait_ready(within=20)
    proc = await first.spawn(["sh", "-c", "sleep 1; exit 7"], tmp_path / "o.log", label="x")
    proc.close()  # the caller goes away (an agent killed)
    second = HolderLauncher(HolderClient(holder_socket[0]))
    adopted = second.adopt(proc.pid, proc.start)
    assert not adopted.exited
    assert await asyncio.wait_for(adopted.wait(), 10) == 7


async def test_the_holder_leaves_on_sigterm_only_once_nothing_it_holds_runs(
    holder_socket: tuple[Path, subprocess.Popen[bytes]], launcher: HolderLauncher, tmp_path: Path
) -> None:
    path, holder = holder_socket
    proc = await launcher.spawn(["sleep", "60"], tmp_path / "s.log", label="s")
    holder.send_signal(signal.SIGTERM)
    await asyncio.sleep(1.5)
    assert holder.poll() is None, "the holder left its child behind"
    state = await launcher.client.state()
    assert state["terminating"] and [c["pid"] for c in state["children"]] == [proc.pid]
    os.killpg(proc.pid, signal.SIGTERM)
    assert await asyncio.to_thread(holder.wait, 10) == 0
    assert not path.exists()


async def test_a_bad_request_is_answered_with_an_error(launcher: HolderLauncher) -> None:
    with pytest.raises(HolderError, match="unknown request"):
        await launcher.client.call({"op": "dance"})
    with pytest.raises(HolderError, match="needs a command"):
        await launcher.client.call({"op": "spawn", "argv": ["true"]})
    # A connection that says nothing does not stop the holder answering the next.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(launcher.client.path))
    sock.close()
    assert (await launcher.client.state())["children"] == []


# -- namespaces (root) --------------------------------------------------------------------------


def _inode(name: str) -> int:
    return os.stat(nsutil.netns_path(name)).st_ino


@pytest.mark.root
async def test_a_held_namespace_outlives_its_mount_and_can_be_mounted_again(
    launcher: HolderLauncher, tmp_path: Path
) -> None:
    name = f"vdc-hold-{os.getpid()}"
    fd, _ = await asyncio.to_thread(nsutil.create, name, lambda: None)
    try:
        inode = os.fstat(fd).st_ino
        await launcher.client.hold(name, fd)
        out = tmp_path / "links.log"
        proc = await launcher.spawn(["ip", "-o", "link"], out, label="links", netns=name)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
        assert [line.split(":")[1].strip() for line in out.read_text().splitlines()] == ["lo"]
        os.close(fd)
        fd = -1
        # The mount goes, as it does with an agent's container; the holder keeps it alive.
        assert nsutil.remove(name)
        held = await launcher.client.held()
        assert list(held) == [name]
        try:
            assert os.fstat(held[name]).st_ino == inode
            assert nsutil.attach(name, held[name])
            assert not nsutil.attach(name, held[name])  # once is enough
        finally:
            for f in held.values():
                os.close(f)
        assert _inode(name) == inode
        await launcher.client.release()
        assert await launcher.client.held() == {}
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(OSError):
            nsutil.remove(name)


@pytest.mark.root
async def test_a_restarted_holder_is_handed_the_namespaces_again(
    holder_socket: tuple[Path, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    path, first = holder_socket
    name = f"vdc-rehold-{os.getpid()}"
    fd, _ = await asyncio.to_thread(nsutil.create, name, lambda: None)
    os.close(fd)
    second: subprocess.Popen[bytes] | None = None
    try:
        held = HeldNamespaces(HolderClient(path))
        await held.client.wait_ready(within=20)
        await held.hold([name])
        await held.check([name])  # the same holder: nothing to do
        first.kill()
        first.wait()
        second = subprocess.Popen(  # noqa: ASYNC220 - started once, not awaited
            [sys.executable, "-m", "vdc_runtime.cli", "holder", "--socket", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await held.client.wait_ready(within=20)
        assert await held.client.held() == {}
        await held.check([name])
        again = await held.client.held()
        try:
            assert list(again) == [name]
        finally:
            close_quietly(again)
        assert await held.release() == []
    finally:
        if second is not None:
            second.kill()
            second.wait()
        with contextlib.suppress(OSError):
            nsutil.remove(name)
