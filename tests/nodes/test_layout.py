"""plan_node: paths, identities and derived values of a node, without touching the host."""

import hashlib
import re
from pathlib import Path

import pytest

from tests.nodes.conftest import RUN, TCG, layout_of, make_node, volume_drive
from vdc_runtime.nodes.layout import (
    SUN_PATH_MAX,
    NicLayout,
    NumaNodeLayout,
    ShareLayout,
    memory_bytes,
)


def test_paths_follow_placemat() -> None:
    layout = layout_of(make_node(name="node1", uefi=True, tpm=True))
    assert layout.run_dir == RUN
    assert layout.console_socket == Path("/run/vdc/node1.socket")
    assert layout.serial_socket == Path("/run/vdc/node1.serial")
    assert layout.qmp_socket == Path("/run/vdc/node1.qmp")
    assert layout.guest_socket == Path("/run/vdc/node1.guest")
    assert layout.tpm_dir == Path("/run/vdc/node1")
    assert layout.tpm_socket == Path("/run/vdc/node1/swtpm.socket")
    assert layout.nvram == Path("/var/lib/vdc/nvram/node1.fd")
    assert layout.console_log == Path("/var/lib/vdc/logs/node1.console.log")
    assert layout.sockets == (
        layout.console_socket,
        layout.serial_socket,
        layout.qmp_socket,
        layout.guest_socket,
        layout.tpm_socket,
    )


def test_no_tpm_or_uefi_paths_unless_asked() -> None:
    layout = layout_of(make_node(name="n"))
    assert (layout.tpm_dir, layout.tpm_socket, layout.nvram) == (None, None, None)
    assert len(layout.sockets) == 4


def test_secure_boot_has_its_own_variable_store() -> None:
    # Its store is made from the template with keys: the plain one would boot in Setup
    # Mode, and turning Secure Boot off again finds the plain store's boot entries.
    secure = layout_of(make_node(name="n", uefi=True, machine="q35", **{"uefi-secure-boot": True}))
    assert (secure.secure_boot, secure.nvram) == (True, Path("/var/lib/vdc/nvram/n.secboot.fd"))
    plain = layout_of(make_node(name="n", uefi=True, machine="q35"))
    assert (plain.secure_boot, plain.nvram) == (False, Path("/var/lib/vdc/nvram/n.fd"))


def test_serial_defaults_to_sha1_of_the_name() -> None:
    assert layout_of(make_node(name="boot-0")).serial == hashlib.sha1(b"boot-0").hexdigest()
    node = make_node(name="boot-0", smbios={"serial": "abc"})
    assert layout_of(node).serial == "abc"
    # An smbios block without a serial still gets the default, never an empty serial.
    assert layout_of(make_node(name="x", smbios={"product": "p"})).serial == (
        hashlib.sha1(b"x").hexdigest()
    )


def test_nics_taps_macs_and_queues() -> None:
    node = make_node(
        name="n1",
        interfaces=["a", {"network": "b", "mac": "52:54:00:AA:00:01", "queues": 2}, "a"],
        **{"network-device-queue": 4},
    )
    nics = layout_of(node).nics
    digest = [hashlib.sha1(f"n1/{i}".encode()).digest() for i in range(3)]
    assert nics == (
        NicLayout(0, "a", "vdt" + digest[0].hex()[:11], "52:54:00:" + _mac3(digest[0]), 4, "net0"),
        NicLayout(1, "b", "vdt" + digest[1].hex()[:11], "52:54:00:aa:00:01", 2, "net1"),
        NicLayout(2, "a", "vdt" + digest[2].hex()[:11], "52:54:00:" + _mac3(digest[2]), 4, "net2"),
    )
    for nic in nics:
        assert len(nic.tap) <= 15 and re.fullmatch(r"vdt[0-9a-f]{11}", nic.tap)


def _mac3(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest[:3])


@pytest.mark.parametrize(("queue", "expected"), [(None, 1), (0, 1), (1, 1), (8, 8)])
def test_queues_default_to_one(queue: int | None, expected: int) -> None:
    node = make_node(name="n", interfaces=["a"], **{"network-device-queue": queue})
    assert layout_of(node).nics[0].queues == expected


def test_identity_is_stable_across_runs() -> None:
    node = make_node(name="n", interfaces=["a", "b"])
    first, second = layout_of(node), layout_of(node, run_dir=Path("/elsewhere"))
    assert [(n.tap, n.mac) for n in first.nics] == [(n.tap, n.mac) for n in second.nics]
    assert first.serial == second.serial


def test_drives_are_taken_as_given_and_shares_come_from_hostpath_volumes() -> None:
    drives = (
        volume_drive("n", "root", "image", "qcow2"),
        volume_drive("n", "seed", "localds", "raw", read_only=True),
    )
    node = make_node(
        name="n",
        volumes=[
            {"kind": "image", "name": "root", "image": "ubuntu"},
            {"kind": "hostPath", "name": "ro", "path": "/srv/ro"},
            {"kind": "localds", "name": "seed", "user-data": "/u.yml"},
            {"kind": "hostPath", "name": "rw", "path": "/srv/rw", "writable": True},
        ],
    )
    layout = layout_of(node, drives=drives)
    assert layout.drives == drives
    assert layout.shares == (
        ShareLayout("ro", Path("/srv/ro"), False),
        ShareLayout("rw", Path("/srv/rw"), True),
    )


@pytest.mark.parametrize(
    ("spec", "smp"),
    [
        ({"cpu": 3}, "3"),
        ({"cpu": None, "smp": {"cpus": 2}}, "2"),
        (
            {"cpu": None, "smp": {"cpus": 8, "cores": 2, "threads": 2, "dies": 1, "sockets": 2}},
            "8,cores=2,threads=2,dies=1,sockets=2",
        ),
        ({"cpu": None, "smp": {"cpus": 2, "maxcpus": 4}}, "2,maxcpus=4"),
    ],
)
def test_smp(spec: dict[str, object], smp: str) -> None:
    assert layout_of(make_node(name="n", **spec)).smp == smp


def test_numa_splits_cpus_and_memory_evenly() -> None:
    node = make_node(name="n", cpu=None, smp={"cpus": 4}, numa={"nodes": 2}, memory="1G")
    assert layout_of(node).numa == (
        NumaNodeLayout("0-1", 512 << 20),
        NumaNodeLayout("2-3", 512 << 20),
    )
    node = make_node(name="n", cpu=3, numa={"nodes": 3}, memory="1G")
    numa = layout_of(node).numa
    assert [n.cpus for n in numa] == ["0-0", "1-1", "2-2"]
    assert sum(n.memory for n in numa) == 1 << 30
    assert all(n.memory % (1 << 20) == 0 for n in numa)
    # Without `memory`, QEMU's default of 128 MiB is what must be split.
    assert sum(n.memory for n in layout_of(make_node(name="n", cpu=2, numa={"nodes": 2})).numa) == (
        128 << 20
    )
    assert layout_of(make_node(name="n", numa={"nodes": 0})).numa == ()


@pytest.mark.parametrize(
    ("memory", "size"),
    [
        (None, 128 << 20),
        ("1024", 1 << 30),
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5G", 1536 << 20),
        ("1T", 1 << 40),
        ("64k", 65536),
        ("5k", 8192),
    ],
)
def test_memory_bytes(memory: str | None, size: int) -> None:
    assert memory_bytes(memory) == size


def test_too_long_socket_path_names_node_and_suggests_run_dir() -> None:
    name = "n" * 40
    # "/<run_dir>/<name>.socket"
    run_dir = Path("/" + "r" * (SUN_PATH_MAX - len(name) - len(".socket") - 2))
    layout_of(make_node(name=name), run_dir=run_dir)  # exactly 107 bytes: fine
    with pytest.raises(ValueError, match=rf"node {name}: socket path .* 109 bytes.*--run-dir"):
        layout_of(make_node(name=name), run_dir=run_dir / "x")
    # The TPM socket is the longest one: /run/<node>/swtpm.socket.
    short = Path("/" + "r" * (SUN_PATH_MAX - len(name) - len("/swtpm.socket") - 2))
    layout_of(make_node(name=name, tpm=True), run_dir=short)
    with pytest.raises(ValueError, match=r"swtpm\.socket"):
        layout_of(make_node(name=name, tpm=True), run_dir=short / "xx")


def test_layout_is_pure(tmp_path: Path) -> None:
    run_dir, data_dir = tmp_path / "run", tmp_path / "data"
    layout_of(make_node(name="n", tpm=True, uefi=True), run_dir=run_dir, data_dir=data_dir)
    assert list(tmp_path.iterdir()) == []


def test_host_facts_are_carried() -> None:
    assert layout_of(make_node(name="n")).host is TCG


def test_comma_in_the_tpm_directory_is_refused() -> None:
    layout_of(make_node(name="n"), run_dir=Path("/run/a,b"))  # fine without a TPM
    with pytest.raises(ValueError, match=r"node n: swtpm cannot use .*/run/a,b/n.*--run-dir"):
        layout_of(make_node(name="n", tpm=True), run_dir=Path("/run/a,b"))
