"""Everything about one node that the effects need, computed once and without side effects.

`plan_node` turns a validated Node plus facts the caller gathered (run/data/log dirs, the
prepared drives, the host's capabilities) into a frozen `NodeLayout`. It touches neither
the filesystem nor processes, so the same layout can be computed for a dry run or by
`--force` to find what an earlier run left behind, and it is what the QEMU argv, the taps,
the API and the BMC all read: one serial, one MAC and one tap name per NIC.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from vdc_runtime.spec import HostPathVolume, Node
from vdc_runtime.spec.fields import size_bytes
from vdc_runtime.spec.identity import default_serial, generated_mac, tap_name

SUN_PATH_MAX = 107
"""sockaddr_un.sun_path holds 108 bytes including the terminating NUL."""

DEFAULT_MEMORY_MIB = 128
"""QEMU's RAM size when -m is absent."""


@dataclass(frozen=True)
class NicLayout:
    """One NIC: the host tap it is plugged into and what the guest sees."""

    index: int
    network: str
    tap: str
    mac: str
    queues: int
    netdev_id: str


@dataclass(frozen=True)
class DriveLayout:
    """One block device, as prepared by the volume module (kinds image, localds, raw)."""

    name: str
    kind: str
    path: Path
    format: str | None
    cache: str
    read_only: bool


@dataclass(frozen=True)
class ShareLayout:
    """A hostPath volume: a host directory exported over virtio-9p, tagged with `name`."""

    name: str
    path: Path
    writable: bool


@dataclass(frozen=True)
class HostFacts:
    """What the host offers, probed once per run (see `nodes.host`)."""

    accel: Literal["kvm", "tcg"]
    vhost: bool
    mtu: int | None
    ovmf_code: Path | None
    ovmf_vars_template: Path | None
    qemu_binary: str = "qemu-system-x86_64"
    ovmf_secure_code: Path | None = None
    """OVMF's Secure Boot (SMM) build, for nodes with `uefi-secure-boot`."""
    ovmf_secure_vars_template: Path | None = None
    """Its variables template with the keys enrolled."""


@dataclass(frozen=True)
class NumaNodeLayout:
    """One guest NUMA node: its vCPU range (`0-1`) and its share of the RAM in bytes."""

    cpus: str
    memory: int


@dataclass(frozen=True)
class NodeLayout:
    name: str
    serial: str
    run_dir: Path
    console_socket: Path
    """The node's console for any number of clients, served by the runtime (Placemat's path)."""
    serial_socket: Path
    """QEMU's own serial chardev, which takes one client: the runtime's console hub."""
    console_log: Path
    output_log: Path
    """What QEMU and swtpm print: a file they write themselves, which outlives the run."""
    qmp_socket: Path
    guest_socket: Path
    tpm_dir: Path | None
    tpm_socket: Path | None
    nvram: Path | None
    nics: tuple[NicLayout, ...]
    drives: tuple[DriveLayout, ...]
    shares: tuple[ShareLayout, ...]
    kernel: Path | None
    initrd: Path | None
    cmdline: str | None
    boot_order: tuple[str, ...]
    machine: str
    smp: str | None
    """The -smp value, or None to leave QEMU's default of one vCPU."""
    memory: str | None
    """The -m value as written in the spec, or None for QEMU's default."""
    numa: tuple[NumaNodeLayout, ...]
    ignition: Path | None
    host: HostFacts
    cdrom: Path | None = None
    """The ISO image in the CD drive at start (`cdrom: {image: NAME}`); None: empty."""
    media_dir: Path | None = None
    """Where virtual media inserted through the BMC are downloaded to (None: nowhere)."""
    secure_boot: bool = False
    """OVMF's Secure Boot build with keys enrolled in `nvram` (UEFI nodes only)."""

    @property
    def swtpm_log(self) -> Path:
        return self.output_log.with_name(f"{self.name}.swtpm.log")

    @property
    def sockets(self) -> tuple[Path, ...]:
        """Every unix socket of the node (the runtime's, QEMU's and swtpm's)."""
        found = (
            self.console_socket,
            self.serial_socket,
            self.qmp_socket,
            self.guest_socket,
            self.tpm_socket,
        )
        return tuple(p for p in found if p is not None)


def memory_bytes(memory: str | None) -> int:
    """The RAM size QEMU gives for `-m <memory>`: a bare number is MiB."""
    if memory is None:
        return DEFAULT_MEMORY_MIB << 20
    size = size_bytes(memory, bare_unit=1 << 20)
    # QEMU rounds the RAM size up to 8 KiB; the NUMA shares must add up to exactly that.
    return -(-size // 8192) * 8192


def _smp(node: Node) -> str | None:
    if node.cpu is not None:
        return str(node.cpu)
    smp = node.smp
    if smp is None or smp.cpus <= 0:
        return None
    parts = [str(smp.cpus)]
    for key in ("cores", "threads", "dies", "sockets", "maxcpus"):
        value = getattr(smp, key)
        if value:
            parts.append(f"{key}={value}")
    return ",".join(parts)


def _numa(node: Node) -> tuple[NumaNodeLayout, ...]:
    count = node.numa.nodes if node.numa is not None else 0
    if count <= 0:
        return ()
    per_node = node.cpus // count
    total = memory_bytes(node.memory)
    # Equal shares rounded down to whole MiB; the last node takes what is left so the sum
    # is exactly the RAM size, which QEMU requires.
    share = (total // count) >> 20 << 20
    return tuple(
        NumaNodeLayout(
            cpus=f"{i * per_node}-{(i + 1) * per_node - 1}",
            memory=share if i < count - 1 else total - share * (count - 1),
        )
        for i in range(count)
    )


def _check_socket(node: str, path: Path) -> None:
    size = len(os.fsencode(path))
    if size > SUN_PATH_MAX:
        raise ValueError(
            f"node {node}: socket path {path} is {size} bytes, but unix socket paths can"
            f" have at most {SUN_PATH_MAX}; use a shorter --run-dir"
        )


def nvram_path(data_dir: Path, node: str, secure_boot: bool) -> Path:
    """The node's UEFI variable store. Secure Boot has its own, made from the template with
    the keys enrolled, so that turning it on or off never mixes the two: each keeps its
    boot entries."""
    return data_dir / "nvram" / (f"{node}.secboot.fd" if secure_boot else f"{node}.fd")


def with_secure_boot(layout: NodeLayout, enabled: bool) -> NodeLayout:
    """The layout of the same UEFI node with Secure Boot on or off: the other firmware and
    its own variable store."""
    if layout.nvram is None:
        raise ValueError(f"node {layout.name} boots a legacy BIOS, which has no Secure Boot")
    nvram = nvram_path(layout.nvram.parent.parent, layout.name, enabled)
    return replace(layout, secure_boot=enabled, nvram=nvram)


def plan_node(
    node: Node,
    *,
    run_dir: Path,
    data_dir: Path,
    log_dir: Path,
    drives: Sequence[DriveLayout],
    host: HostFacts,
    cdrom: Path | None = None,
    cache_dir: Path | None = None,
) -> NodeLayout:
    """The layout of `node`.

    Raises ValueError when a socket path would be too long for a unix socket, or the TPM
    directory has a comma swtpm cannot take.
    """
    name = node.name
    nics = tuple(
        NicLayout(
            index=i,
            network=iface.network,
            tap=tap_name(name, i),
            mac=iface.mac or generated_mac(name, i),
            queues=iface.queues or node.network_device_queue or 1,
            netdev_id=f"net{i}",
        )
        for i, iface in enumerate(node.interfaces)
    )
    shares = tuple(
        ShareLayout(name=v.name, path=v.path, writable=v.writable)
        for v in node.volumes
        if isinstance(v, HostPathVolume)
    )
    tpm_dir = run_dir / name if node.tpm else None
    layout = NodeLayout(
        name=name,
        serial=(node.smbios.serial if node.smbios is not None else None) or default_serial(name),
        run_dir=run_dir,
        console_socket=run_dir / f"{name}.socket",
        serial_socket=run_dir / f"{name}.serial",
        console_log=log_dir / f"{name}.console.log",
        output_log=log_dir / f"{name}.qemu.log",
        qmp_socket=run_dir / f"{name}.qmp",
        guest_socket=run_dir / f"{name}.guest",
        tpm_dir=tpm_dir,
        tpm_socket=tpm_dir / "swtpm.socket" if tpm_dir is not None else None,
        nvram=nvram_path(data_dir, name, node.uefi_secure_boot) if node.uefi else None,
        nics=nics,
        drives=tuple(drives),
        shares=shares,
        kernel=node.kernel,
        initrd=node.initrd,
        cmdline=node.cmdline,
        boot_order=tuple(node.boot_order),
        machine=node.machine,
        smp=_smp(node),
        memory=node.memory,
        numa=_numa(node),
        ignition=node.ignition,
        host=host,
        cdrom=cdrom,
        media_dir=cache_dir / "virtual-media" / name if cache_dir is not None else None,
        secure_boot=node.uefi and node.uefi_secure_boot,
    )
    for path in layout.sockets:
        _check_socket(name, path)
    if tpm_dir is not None and "," in str(tpm_dir):
        # swtpm splits its options at commas and has no escape for them (0.7).
        raise ValueError(
            f"node {name}: swtpm cannot use the TPM directory {tpm_dir} because it contains"
            " ','; use a --run-dir without commas"
        )
    return layout


__all__ = [
    "SUN_PATH_MAX",
    "DriveLayout",
    "HostFacts",
    "NicLayout",
    "NodeLayout",
    "NumaNodeLayout",
    "ShareLayout",
    "memory_bytes",
    "nvram_path",
    "plan_node",
    "with_secure_boot",
]
