"""The real QEMU 7.2 accepts the argv we build: start it, talk QMP, quit.

Taps cannot be opened without the fabric, so these nodes have no NICs (the goldens cover
NIC syntax). Everything else runs for real: drives, 9p shares, OVMF with an NVRAM copy,
and a TPM served by a real swtpm.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nodes.conftest import make_node
from vdc_runtime.nodes.host import find_ovmf
from vdc_runtime.nodes.layout import DriveLayout, HostFacts, NodeLayout, plan_node
from vdc_runtime.nodes.qemu_args import qemu_argv
from vdc_runtime.spec import Node

pytestmark = pytest.mark.slow

QEMU = "qemu-system-x86_64"
START_TIMEOUT = 10.0

if shutil.which(QEMU) is None:
    pytest.skip(f"{QEMU} is not installed", allow_module_level=True)


def _host() -> HostFacts:
    ovmf = find_ovmf()
    return HostFacts(
        accel="tcg",
        vhost=False,
        mtu=None,
        ovmf_code=ovmf[0] if ovmf else None,
        ovmf_vars_template=ovmf[1] if ovmf else None,
    )


class QMP:
    """Just enough of QMP: one JSON object per line, events skipped."""

    def __init__(self, path: Path, deadline: float) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(max(deadline - time.monotonic(), 1.0))
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rw", encoding="utf-8")
        greeting = json.loads(self.file.readline())
        assert "QMP" in greeting

    def execute(self, command: str, **arguments: Any) -> Any:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message) + "\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            assert "error" not in reply, reply
            return reply["return"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            pytest.fail(f"{what} exited with {proc.returncode}: {output}")
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            probe.connect(str(path))
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not create {path} within {START_TIMEOUT} s")


@contextlib.contextmanager
def _process(argv: list[str], what: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout:
            proc.stdout.close()


@contextlib.contextmanager
def _swtpm(layout: NodeLayout) -> Iterator[None]:
    if layout.tpm_socket is None or layout.tpm_dir is None:
        yield
        return
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed")
    layout.tpm_dir.mkdir(parents=True)
    argv = [
        "swtpm", "socket", "--tpm2",
        "--tpmstate", f"dir={layout.tpm_dir}",
        "--ctrl", f"type=unixio,path={layout.tpm_socket}",
    ]  # fmt: skip
    with _process(argv, "swtpm") as proc:
        # A connect would consume swtpm's only control connection; wait for the file.
        deadline = time.monotonic() + START_TIMEOUT
        while not layout.tpm_socket.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"swtpm did not start: {proc.returncode}")
            time.sleep(0.05)
        yield


def run_node(
    node: Node, tmp_path: Path, drives: tuple[DriveLayout, ...] = (), run_dir: Path | None = None
) -> dict[str, Any]:
    """Start the node's QEMU, ask it a few things over QMP, quit; returns the answers."""
    run_dir = run_dir or tmp_path / "run"
    data_dir = tmp_path / "data"
    layout = plan_node(
        node,
        run_dir=run_dir,
        data_dir=data_dir,
        log_dir=data_dir / "logs",
        drives=drives,
        host=_host(),
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    layout.console_log.parent.mkdir(parents=True, exist_ok=True)
    if layout.nvram is not None:
        assert layout.host.ovmf_vars_template is not None, "OVMF is not installed"
        layout.nvram.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(layout.host.ovmf_vars_template, layout.nvram)
    answers: dict[str, Any] = {"layout": layout}
    with _swtpm(layout), _process(qemu_argv(layout, node), "QEMU") as proc:
        deadline = time.monotonic() + START_TIMEOUT
        _wait_for_socket(layout.qmp_socket, proc, "QEMU")
        qmp = QMP(layout.qmp_socket, deadline)
        try:
            assert qmp.execute("qmp_capabilities") == {}
            answers["status"] = qmp.execute("query-status")
            answers["block"] = qmp.execute("query-block")
            answers["chardev"] = qmp.execute("query-chardev")
            answers["tpm"] = qmp.execute("query-tpm")
            answers["console_log"] = _wait_for_console(layout, node)
            qmp.execute("quit")
        finally:
            qmp.close()
        assert proc.wait(10) == 0
    return answers


def _wait_for_console(layout: NodeLayout, node: Node) -> str:
    # graphics=off makes SeaBIOS print to the serial port, i.e. to our log; OVMF's banner
    # takes seconds under TCG, so only the BIOS case waits for text.
    deadline = time.monotonic() + START_TIMEOUT
    text = ""
    while not node.uefi and time.monotonic() < deadline:
        text = layout.console_log.read_text(errors="replace") if layout.console_log.exists() else ""
        if "SeaBIOS" in text:
            break
        time.sleep(0.1)
    return text


def _block_devices(answers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["device"]: b for b in answers["block"] if b.get("inserted")}


def _o_direct_works(directory: Path) -> bool:
    probe = directory / ".o_direct"
    probe.write_bytes(b"")
    try:
        fd = os.open(probe, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        return False
    finally:
        probe.unlink()
    os.close(fd)
    return True


def test_minimal_node_runs_and_prints_seabios_to_the_log(tmp_path: Path) -> None:
    answers = run_node(make_node(name="minimal"), tmp_path)
    assert answers["status"]["running"] is True
    assert "SeaBIOS" in answers["console_log"]
    labels = {c["label"] for c in answers["chardev"]}
    assert {"console", "guest", "qmp"} <= labels


def test_drives_share_smp_and_numa(tmp_path: Path) -> None:
    volumes = tmp_path / "volumes"
    volumes.mkdir()
    (volumes / "data.img").write_bytes(b"\0" * (1 << 20))
    (volumes / "seed.img").write_bytes(b"\0" * (64 << 10))  # localds seeds are raw now
    share = tmp_path / "share"
    share.mkdir()
    # cache=none means O_DIRECT, which e.g. tmpfs refuses; the argv is the same otherwise.
    cache = "none" if _o_direct_works(volumes) else "writeback"
    drives = (
        DriveLayout("data", "raw", volumes / "data.img", "raw", cache, False),
        DriveLayout("seed", "localds", volumes / "seed.img", "raw", "writeback", True),
    )
    node = make_node(
        name="disks",
        cpu=None,
        smp={"cpus": 2, "cores": 1, "threads": 1, "sockets": 2},
        numa={"nodes": 2},
        memory="256M",
        volumes=[{"kind": "hostPath", "name": "share", "path": str(share), "writable": True}],
    )
    answers = run_node(node, tmp_path, drives)
    blocks = _block_devices(answers)
    assert set(blocks) == {"drive0", "drive1"}
    assert blocks["drive0"]["inserted"]["file"] == str(volumes / "data.img")
    assert blocks["drive0"]["inserted"]["ro"] is False
    assert blocks["drive1"]["inserted"]["ro"] is True


@pytest.mark.parametrize("machine", ["pc", "q35"])
def test_uefi_with_nvram_copy(tmp_path: Path, machine: str) -> None:
    answers = run_node(make_node(name="uefi", uefi=True, machine=machine, memory="256M"), tmp_path)
    assert answers["status"]["running"] is True
    nvram: Path = answers["layout"].nvram
    assert nvram.stat().st_size == answers["layout"].host.ovmf_vars_template.stat().st_size


@pytest.mark.parametrize(("machine", "model"), [("pc", "tpm-tis"), ("q35", "tpm-crb")])
def test_tpm_with_a_real_swtpm(tmp_path: Path, machine: str, model: str) -> None:
    answers = run_node(make_node(name="tpm", tpm=True, machine=machine), tmp_path)
    (tpm,) = answers["tpm"]
    assert (tpm["id"], tpm["model"], tpm["options"]["type"]) == ("tpm0", model, "emulator")


def test_uefi_and_tpm_on_q35(tmp_path: Path) -> None:
    node = make_node(name="cs", uefi=True, tpm=True, machine="q35", memory="256M")
    answers = run_node(node, tmp_path)
    assert answers["status"]["running"] is True
    assert answers["tpm"][0]["model"] == "tpm-crb"


def test_commas_and_equals_in_names_and_paths(tmp_path: Path) -> None:
    odd = tmp_path / "a,b=c"
    odd.mkdir()
    disk = odd / "d,1.img"
    disk.write_bytes(b"\0" * (1 << 20))
    share = odd / "sh,are"
    share.mkdir()
    drives = (DriveLayout("d", "raw", disk, "raw", "writeback", False),)
    node = make_node(
        name="n,1=x",
        ignition=str(odd / "ign,1.json"),
        smbios={"manufacturer": "Acme, Inc.", "serial": "s,1"},
        volumes=[{"kind": "hostPath", "name": "t,ag", "path": str(share)}],
    )
    (odd / "ign,1.json").write_text("{}")
    answers = run_node(node, tmp_path, drives, run_dir=odd / "run")
    assert _block_devices(answers)["drive0"]["inserted"]["file"] == str(disk)
    layout: NodeLayout = answers["layout"]
    assert layout.qmp_socket.exists() is False  # QEMU removes its sockets on quit
    assert layout.console_log.exists()


def test_equals_sign_in_the_tpm_path(tmp_path: Path) -> None:
    # swtpm cannot take commas (plan_node refuses them) but takes '='.
    answers = run_node(make_node(name="t=1", tpm=True), tmp_path, run_dir=tmp_path / "r=1")
    assert answers["tpm"][0]["model"] == "tpm-tis"
