"""The QEMU argv: complete golden command lines, plus properties over generated nodes.

Goldens live in golden/<case>.args, one argument per line; UPDATE_GOLDEN=1 rewrites them.
"""

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.nodes.conftest import (
    KVM,
    OVMF_CODE,
    OVMF_SECURE_CODE,
    OVMF_VARS,
    TCG,
    layout_of,
    make_node,
)
from tests.nodes.conftest import volume_drive as drive
from vdc_runtime.nodes.layout import DriveLayout, HostFacts, NodeLayout
from vdc_runtime.nodes.qemu_args import boot_indexes, escape, qemu_argv
from vdc_runtime.spec import Node

GOLDEN = Path(__file__).parent / "golden"


def assert_golden(name: str, argv: list[str]) -> None:
    assert all("\n" not in arg for arg in argv)
    text = "\n".join(argv) + "\n"
    path = GOLDEN / f"{name}.args"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with UPDATE_GOLDEN=1 if intended"


def argv_of(node: Node, **kw: Any) -> list[str]:
    return qemu_argv(layout_of(node, **kw), node)


# --- goldens -------------------------------------------------------------------------------


def test_minimal() -> None:
    assert_golden("minimal", argv_of(make_node(name="minimal")))


def test_placemat_e2e_node1() -> None:
    # Placemat's e2e node1: 2 vCPUs, NUMA 2, 1G, 4 queues, TPM, CoW root, localds seed,
    # raw qcow2, raw raw, raw writeback, writable hostPath.
    node = make_node(
        name="node1",
        cpu=None,
        smp={"cpus": 2, "cores": 1, "threads": 1, "sockets": 2},
        numa={"nodes": 2},
        memory="1G",
        tpm=True,
        interfaces=["ext-net"],
        **{"network-device-queue": 4},
        volumes=[
            {"kind": "image", "name": "root", "image": "ubuntu", "copy-on-write": True},
            {"kind": "localds", "name": "seed", "user-data": "/e2e/seed.yml"},
            {"kind": "raw", "name": "data1", "size": "10G"},
            {"kind": "raw", "name": "data2", "size": "10G", "format": "raw"},
            {"kind": "raw", "name": "data3", "size": "10G", "cache": "writeback"},
            {"kind": "hostPath", "name": "host-data", "path": "/mnt/host", "writable": True},
        ],
    )
    drives = (
        drive("node1", "root", "image", "qcow2"),
        drive("node1", "seed", "localds", "raw"),
        drive("node1", "data1", "raw", "qcow2"),
        drive("node1", "data2", "raw", "raw"),
        drive("node1", "data3", "raw", "qcow2", cache="writeback"),
    )
    assert_golden("placemat_node1", argv_of(node, drives=drives))


def test_uefi_tpm_q35() -> None:
    node = make_node(
        name="cs1",
        cpu=None,
        smp={"cpus": 2},
        memory="2G",
        machine="q35",
        uefi=True,
        tpm=True,
        interfaces=["r0-node1"],
        smbios={"manufacturer": "QEMU", "product": "cs", "serial": "00c0ffee"},
        volumes=[{"kind": "raw", "name": "ssd", "size": "20G", "format": "raw"}],
    )
    drives = (drive("cs1", "ssd", "raw", "raw"),)
    assert_golden("uefi_tpm_q35", argv_of(node, drives=drives))


def test_uefi_secure_boot() -> None:
    node = make_node(
        name="sb", memory="512M", machine="q35", uefi=True, **{"uefi-secure-boot": True}
    )
    argv = argv_of(node)
    assert_golden("uefi_secure_boot", argv)
    assert argv[argv.index("-machine") + 1] == "q35,smm=on,graphics=off"
    assert "driver=cfi.pflash01,property=secure,value=on" in argv
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECURE_CODE}" in argv
    plain = argv_of(make_node(name="sb", machine="q35", uefi=True))
    assert "-global" not in plain and "q35,graphics=off" in plain


def test_secure_boot_without_its_firmware_is_a_clear_error() -> None:
    node = make_node(name="u", machine="q35", uefi=True, **{"uefi-secure-boot": True})
    host = HostFacts("tcg", False, None, OVMF_CODE, OVMF_VARS)
    with pytest.raises(ValueError, match="node u wants UEFI but no Secure Boot OVMF firmware"):
        argv_of(node, host=host)


def test_direct_kernel_boot_with_boot_order() -> None:
    node = make_node(
        name="pxe",
        memory="512M",
        kernel="/boot/vmlinuz",
        initrd="/boot/initrd.gz",
        cmdline="console=ttyS0,115200 root=/dev/vda rw",
        **{"boot-order": ["network", "disk"]},
        interfaces=["boot", "data"],
        volumes=[
            {"kind": "raw", "name": "a", "size": "1G"},
            {"kind": "raw", "name": "b", "size": "1G"},
        ],
    )
    drives = (drive("pxe", "a", "raw", "qcow2"), drive("pxe", "b", "raw", "qcow2"))
    argv = argv_of(node, drives=drives)
    assert_golden("direct_kernel_boot_order", argv)
    # -append is verbatim: its comma must not be doubled.
    assert argv[argv.index("-append") + 1] == "console=ttyS0,115200 root=/dev/vda rw"


def test_two_interfaces_on_one_network_with_explicit_mac() -> None:
    node = make_node(
        name="dual",
        interfaces=["net0", {"network": "net0", "mac": "52:54:00:12:34:56", "queues": 2}],
    )
    argv = argv_of(node)
    assert_golden("two_nics_one_network", argv)
    assert (
        "virtio-net-pci,id=nic1,netdev=net1,mac=52:54:00:12:34:56,addr=0x4,mq=on,vectors=6" in argv
    )


@pytest.mark.parametrize("host", [TCG, KVM], ids=["tcg", "kvm"])
def test_host_facts(host: HostFacts) -> None:
    node = make_node(name="h", interfaces=["net0"], **{"network-device-queue": 2})
    argv = argv_of(node, host=host)
    assert_golden(f"host_{host.accel}", argv)
    accel = argv[argv.index("-accel") + 1]
    cpu = argv[argv.index("-cpu") + 1]
    assert (accel, cpu) == (("kvm", "host") if host.accel == "kvm" else ("tcg,thread=multi", "max"))


def test_comma_in_paths() -> None:
    # A node name and every path with commas: QEMU option values double them.
    node = make_node(
        name="a,b",
        ignition="/specs,v1/ign.json",
        uefi=True,
        kernel="/boot,x/vmlinuz",
        initrd="/boot,x/initrd",
        smbios={"manufacturer": "Acme, Inc.", "serial": "s,1"},
        volumes=[{"kind": "hostPath", "name": "sh,are", "path": "/srv/a,b"}],
    )
    drives = (
        DriveLayout("d", "raw", Path("/var/lib/vdc,x/volumes/a,b/d.img"), "raw", "none", False),
    )
    host = HostFacts("tcg", False, None, Path("/fw,x/CODE.fd"), OVMF_VARS)
    argv = argv_of(node, drives=drives, host=host, run_dir=Path("/run/vdc,1"))
    assert_golden("comma_paths", argv)
    assert "guest=a,,b,debug-threads=on" in argv
    assert "socket,id=qmp,path=/run/vdc,,1/a,,b.qmp,server=on,wait=off" in argv
    assert "type=1,manufacturer=Acme,, Inc.,serial=s,,1" in argv
    assert "local,path=/srv/a,,b,mount_tag=sh,,are,id=fs0,security_model=none,readonly=on" in argv
    # -kernel and -initrd are not option strings: verbatim.
    assert argv[argv.index("-kernel") + 1] == "/boot,x/vmlinuz"
    assert argv[argv.index("-initrd") + 1] == "/boot,x/initrd"


# --- details -------------------------------------------------------------------------------


def test_escape() -> None:
    assert escape("/a,b,,c") == "/a,,b,,,,c"
    assert escape(Path("/x")) == "/x"


def test_uefi_without_firmware_is_a_clear_error() -> None:
    node = make_node(name="u", uefi=True)
    host = HostFacts("tcg", False, None, None, None)
    with pytest.raises(ValueError, match="node u wants UEFI but no OVMF firmware was found"):
        argv_of(node, host=host)


def test_boot_indexes() -> None:
    drives = (drive("n", "a", "raw", "raw"), drive("n", "b", "raw", "raw"))
    node = make_node(
        name="n", interfaces=["x", "y"], **{"boot-order": ["disk", "cdrom", "network"]}
    )
    assert boot_indexes(layout_of(node, drives=drives)) == ({0: 4, 1: 5}, {0: 1, 1: 2}, 3)
    empty = boot_indexes(layout_of(make_node(name="n", interfaces=["x"]), drives=drives))
    assert empty == ({}, {}, None)


def test_cd_drive_always_there() -> None:
    # Empty and without a bootindex unless asked for: the firmware's default order stands.
    for machine in ("pc", "q35"):
        argv = argv_of(make_node(name="n", machine=machine))
        assert "if=none,id=cdrom0,media=cdrom,readonly=on" in argv
        assert "ide-cd,id=cd0,drive=cdrom0,bus=ide.1" in argv
    node = make_node(name="n", **{"boot-order": ["cdrom", "network"]}, interfaces=["x"])
    layout = dataclasses.replace(layout_of(node), cdrom=Path("/cache/a,b.iso"))
    argv = qemu_argv(layout, node)
    assert "if=none,id=cdrom0,media=cdrom,readonly=on,file=/cache/a,,b.iso,format=raw" in argv
    assert "ide-cd,id=cd0,drive=cdrom0,bus=ide.1,bootindex=1" in argv


def test_tpm_device_follows_the_machine() -> None:
    assert "tpm-tis,tpmdev=tpm0" in argv_of(make_node(name="t", tpm=True))
    assert "tpm-crb,tpmdev=tpm0" in argv_of(make_node(name="t", tpm=True, machine="q35"))


def test_aio_native_only_with_cache_none() -> None:
    for cache in ("none", "writeback", "writethrough", "directsync", "unsafe"):
        argv = argv_of(make_node(name="n"), drives=(drive("n", "d", "raw", "raw", cache=cache),))
        (spec,) = [a for a in argv if a.startswith("if=none,id=drive")]
        assert f"cache={cache},aio={'native' if cache == 'none' else 'threads'}" in spec


# --- properties ----------------------------------------------------------------------------

names = st.text(st.sampled_from("abcxyz019-_.,=:@+"), min_size=1, max_size=30).filter(
    lambda s: s not in {".", ".."}
)
path_parts = st.text(st.sampled_from("abc019-_.,= "), min_size=1, max_size=10).filter(
    lambda s: s not in {".", ".."}
)
abs_paths = st.lists(path_parts, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
macs = (
    st.tuples(st.integers(0, 127), st.binary(min_size=5, max_size=5))
    .map(lambda t: ":".join(f"{b:02x}" for b in bytes([t[0] * 2, *t[1]])))
    .filter(lambda mac: mac != "00:00:00:00:00:00")
)
interfaces = st.lists(
    st.one_of(
        names,
        st.fixed_dictionaries(
            {"network": names},
            optional={"mac": macs, "queues": st.integers(1, 16)},
        ),
    ),
    max_size=4,
)
sizes = st.sampled_from(["128M", "512", "1G", "1.5G", "3000M"])


@st.composite
def cpu_spec(draw: st.DrawFn) -> dict[str, Any]:
    cpus = draw(st.integers(1, 8))
    spec: dict[str, Any]
    if draw(st.booleans()):
        spec = {"cpu": cpus}
    else:
        smp: dict[str, int] = {"cpus": cpus}
        if draw(st.booleans()):
            smp.update(sockets=cpus, cores=1, threads=1)
        if draw(st.booleans()):
            smp["maxcpus"] = cpus * draw(st.integers(1, 2))
        spec = {"cpu": None, "smp": smp}
    divisors = [d for d in range(1, cpus + 1) if cpus % d == 0]
    if draw(st.booleans()):
        spec["numa"] = {"nodes": draw(st.sampled_from([0, *divisors]))}
    return spec


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    spec: dict[str, Any] = {"name": draw(names), **draw(cpu_spec())}
    spec["interfaces"] = draw(interfaces)
    optional = {
        "memory": sizes,
        "uefi": st.booleans(),
        "tpm": st.booleans(),
        "machine": st.sampled_from(["pc", "q35"]),
        "network-device-queue": st.integers(0, 8),
        "boot-order": st.permutations(["network", "disk", "cdrom"]).flatmap(
            lambda order: st.integers(0, 3).map(lambda n: order[:n])
        ),
        "ignition": abs_paths,
        "smbios": st.fixed_dictionaries(
            {}, optional={"manufacturer": st.text(max_size=8), "serial": names}
        ),
        "restart": st.sampled_from(["no", "on-failure"]),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            spec[key] = draw(strategy)
    if "," in spec["name"]:
        spec["tpm"] = False  # refused by validation: swtpm cannot take the comma
    if draw(st.booleans()):
        spec["kernel"] = draw(abs_paths)
        if draw(st.booleans()):
            spec["initrd"] = draw(abs_paths)
        if draw(st.booleans()):
            spec["cmdline"] = draw(st.text(max_size=20).filter(lambda s: "\0" not in s))
    shares = draw(st.lists(names.filter(lambda s: len(s) <= 31), max_size=2, unique=True))
    spec["volumes"] = [
        {"kind": "hostPath", "name": tag, "path": draw(abs_paths), "writable": draw(st.booleans())}
        for tag in shares
    ]
    return make_node(**spec)


drive_layouts = st.lists(
    st.builds(
        DriveLayout,
        name=names,
        kind=st.sampled_from(["image", "localds", "raw"]),
        path=abs_paths.map(Path),
        format=st.sampled_from([None, "raw", "qcow2"]),
        cache=st.sampled_from(["writeback", "none", "writethrough", "directsync", "unsafe"]),
        read_only=st.booleans(),
    ),
    max_size=3,
)
hosts = st.builds(
    HostFacts,
    accel=st.sampled_from(["kvm", "tcg"]),
    vhost=st.booleans(),
    mtu=st.sampled_from([None, 1460, 1500, 9000]),
    ovmf_code=st.just(OVMF_CODE),
    ovmf_vars_template=st.just(OVMF_VARS),
)


def split_opts(value: str) -> list[str]:
    """QEMU's reading of an option string: split at single commas, `,,` is a comma."""
    return [part.replace("\0", ",") for part in value.replace(",,", "\0").split(",")]


def options(argv: list[str], flag: str) -> list[dict[str, str]]:
    found = []
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            parts = split_opts(argv[i + 1])
            found.append(dict(p.split("=", 1) if "=" in p else ("", p) for p in parts))
    return found


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(node=nodes(), drives=drive_layouts, host=hosts, run=abs_paths)
def test_argv_is_consistent_for_any_valid_node(
    node: Node, drives: list[DriveLayout], host: HostFacts, run: str
) -> None:
    assume(not (node.tpm and "," in run))  # plan_node refuses it, as swtpm would
    layout: NodeLayout = layout_of(node, drives=tuple(drives), host=host, run_dir=Path(run))
    argv = qemu_argv(layout, node)
    assert argv[0] == host.qemu_binary
    assert all(isinstance(a, str) for a in argv)

    netdevs = [o["id"] for o in options(argv, "-netdev")]
    assert len(netdevs) == len(set(netdevs)) == len(layout.nics)
    devices = options(argv, "-device")
    nic_devices = [d for d in devices if d.get("") == "virtio-net-pci"]
    assert [d["netdev"] for d in nic_devices] == netdevs
    assert [d["mac"] for d in nic_devices] == [n.mac for n in layout.nics]
    assert len({d["addr"] for d in nic_devices}) == len(nic_devices)

    block = [
        o for o in options(argv, "-drive") if o.get("if") == "none" and o.get("media") != "cdrom"
    ]
    assert [Path(o["file"]) for o in block] == [d.path for d in drives]
    block_ids = {o["id"] for o in block}
    assert {d["drive"] for d in devices if d.get("") == "virtio-blk-pci"} == block_ids
    (cd,) = [d for d in devices if d.get("") == "ide-cd"]
    assert ("bootindex" in cd) == ("cdrom" in node.boot_order)

    shares = options(argv, "-virtfs")
    assert [(o["mount_tag"], Path(o["path"])) for o in shares] == [
        (s.name, s.path) for s in layout.shares
    ]
    (console,) = [o for o in options(argv, "-chardev") if o["id"] == "console"]
    assert Path(console["path"]) == layout.serial_socket
    (smbios,) = options(argv, "-smbios")
    assert smbios["serial"] == layout.serial
    (name,) = options(argv, "-name")
    assert name["guest"] == node.name
    (qmp,) = [o for o in options(argv, "-chardev") if o["id"] == "qmp"]
    assert Path(qmp["path"]) == layout.qmp_socket

    indexes = [int(d["bootindex"]) for d in devices if "bootindex" in d]
    assert len(indexes) == len(set(indexes))
    if not node.boot_order:
        assert indexes == []

    for flag in ("-kernel", "-initrd", "-append"):
        wanted = {"-kernel": node.kernel, "-initrd": node.initrd, "-append": node.cmdline}[flag]
        given_ = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
        expected = [] if wanted is None or node.kernel is None else [str(wanted)]
        assert given_ == expected
    # Only modern booleans: no bare `server`, `nowait`, `readonly` (Placemat's 9.2 #11).
    for arg in argv:
        for part in split_opts(arg):
            assert part not in {"server", "nowait", "readonly"}
    assert re.fullmatch(r"tcg,thread=multi|kvm", argv[argv.index("-accel") + 1])
