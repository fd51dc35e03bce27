"""The QEMU command line of a node: a pure function of its layout, golden-tested.

The order and meaning follow Placemat's QEMU command line builder so guests see
the same machine, with these deliberate differences:

- acceleration is chosen per host (`-accel kvm -cpu host` or `-accel tcg,thread=multi
  -cpu max`) instead of always KVM;
- `-nodefaults -display none -vga none` instead of `-nographic`, with
  `-machine <type>,graphics=off` so SeaBIOS and iPXE still print to the serial console;
  NICs sit at fixed PCI slots 3, 4, ... so guests keep Placemat's names (ens3, ens4, ...)
  although the VGA card that held slot 2 is gone;
- `-no-shutdown`, so a guest that powers itself off can be powered on again;
- the serial console is a chardev with a log file, readable with no client attached;
- netdev ids are per NIC (`net<i>`), so a node may have two NICs on one network;
- every drive states its format (Placemat let QEMU probe images and declared seeds
  qcow2 even when they were raw) and is a `virtio-blk-pci` device, so it can take a
  `bootindex` when the node has a `boot-order`;
- every node has a CD drive, empty unless the spec names an image, so a BMC's virtual
  media can change the medium without a reboot: an `ide-cd` on the machine's built-in
  controller's second bus (PIIX IDE on `pc`, ICH9 AHCI on `q35`, both named `ide.1`),
  which SeaBIOS and OVMF both boot from, and which adds no PCI device;
- NUMA nodes get explicit memory backends: QEMU 5.1+ refuses Placemat's `-numa node`
  without memory for current machine types;
- a Secure Boot node runs OVMF's SMM build (`smm=on`, flash writable from SMM only),
  which Placemat never offered;
- modern `=on`/`=off` booleans and `name=` for fw_cfg, instead of deprecated short forms;
- every path and name in an option string has its commas doubled, and none sits in an
  implied-key position, so any character in a file name is safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from vdc_runtime.nodes.layout import NodeLayout
from vdc_runtime.spec import Node
from vdc_runtime.spec.identity import system_uuid

FIRST_NIC_SLOT = 3
"""Placemat's guests found their first NIC at PCI slot 3 (after VGA at 2): ens3."""

REBOOT_TIMEOUT_MS = 30000
"""With nothing to boot, retry every 30 s (e.g. until a PXE server is up), as Placemat."""


def escape(value: object) -> str:
    """A value for a QEMU `key=value,...` option string: QEMU reads `,,` as one comma."""
    return str(value).replace(",", ",,")


def _opts(*parts: str | None) -> str:
    return ",".join(p for p in parts if p is not None)


def nic_device_id(index: int) -> str:
    """The QOM id of a NIC, so its `bootindex` can be changed while QEMU runs."""
    return f"nic{index}"


def drive_id(position: int) -> str:
    """The block backend of the `position`th drive (QMP names it so: throttling)."""
    return f"drive{position}"


def disk_device_id(position: int) -> str:
    """The QOM id of a disk, so its `bootindex` can be changed while QEMU runs."""
    return f"disk{position}"


CD_DEVICE_ID = "cd0"
"""The QOM id of the CD drive: its medium is changed and its `bootindex` set by this id."""
CD_DRIVE_ID = "cdrom0"
CD_BUS = "ide.1"


class BootIndexes(NamedTuple):
    nics: dict[int, int]
    """NIC index -> bootindex."""
    drives: dict[int, int]
    """Drive position -> bootindex."""
    cdrom: int | None
    """The CD drive's bootindex."""


def boot_indexes(layout: NodeLayout, order: Sequence[str] | None = None) -> BootIndexes:
    """`bootindex` per NIC index, per drive position and for the CD drive, following
    `order` (default: the node's `boot-order`; a BMC boot override passes its own).

    Each class of device in the order gets the next indexes, its devices in spec order.
    An empty order assigns nothing, so the firmware's default applies: disk first, then
    network (SeaBIOS with iPXE, OVMF), with the CD drive tried in between.
    """
    nics: dict[int, int] = {}
    drives: dict[int, int] = {}
    cdrom = None
    next_index = 1
    for device in layout.boot_order if order is None else order:
        if device == "network":
            for nic in layout.nics:
                nics[nic.index] = next_index
                next_index += 1
        elif device == "disk":
            for position in range(len(layout.drives)):
                drives[position] = next_index
                next_index += 1
        elif device == "cdrom" and cdrom is None:
            cdrom = next_index
            next_index += 1
    return BootIndexes(nics, drives, cdrom)


def qemu_argv(layout: NodeLayout, node: Node) -> list[str]:
    """The complete argv (binary first) that runs `node` as laid out in `layout`."""
    host = layout.host
    kvm = host.accel == "kvm"
    uefi = layout.nvram is not None
    machine = f"{layout.machine},smm=on" if layout.secure_boot else layout.machine
    argv = [
        host.qemu_binary,
        # `guest=` spelt out: QEMU would read a name containing '=' as a key otherwise.
        "-name", f"guest={escape(layout.name)},debug-threads=on",
        "-machine", f"{machine},graphics=off",
        "-accel", "kvm" if kvm else "tcg,thread=multi",
        "-nodefaults",
        "-display", "none",
        "-vga", "none",
        "-no-shutdown",
    ]  # fmt: skip

    if layout.ignition is not None:
        argv += ["-fw_cfg", f"name=opt/com.coreos/config,file={escape(layout.ignition)}"]
    if layout.smp is not None:
        argv += ["-smp", layout.smp]
    if layout.memory is not None:
        argv += ["-m", layout.memory]
    for i, numa in enumerate(layout.numa):
        argv += [
            "-object", f"memory-backend-ram,id=ram-node{i},size={numa.memory}",
            "-numa", f"node,cpus={numa.cpus},memdev=ram-node{i}",
        ]  # fmt: skip

    argv += [
        "-chardev",
        _opts(
            "socket,id=console",
            f"path={escape(layout.serial_socket)}",
            "server=on,wait=off",
            f"logfile={escape(layout.console_log)}",
            "logappend=on",
        ),
        "-serial", "chardev:console",
    ]  # fmt: skip

    if uefi:
        code = host.ovmf_secure_code if layout.secure_boot else host.ovmf_code
        if code is None:
            kind = "Secure Boot OVMF firmware" if layout.secure_boot else "OVMF firmware"
            raise ValueError(f"node {layout.name} wants UEFI but no {kind} was found")
        if layout.secure_boot and layout.machine != "q35":
            raise ValueError(f"node {layout.name}: Secure Boot needs machine q35 (SMM)")
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={escape(code)}",
            "-drive", f"if=pflash,format=raw,unit=1,file={escape(layout.nvram)}",
        ]  # fmt: skip
        if layout.secure_boot:
            # Only code running in SMM may write the flash: the guest OS cannot replace
            # the enrolled keys by writing the variable store directly.
            argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]

    manufacturer = node.smbios.manufacturer if node.smbios else None
    product = node.smbios.product if node.smbios else None
    argv += [
        "-smbios",
        _opts(
            "type=1",
            f"manufacturer={escape(manufacturer)}" if manufacturer else None,
            f"product={escape(product)}" if product else None,
            f"serial={escape(layout.serial)}",
        ),
        "-uuid", system_uuid(layout.name),
    ]  # fmt: skip

    nic_boot, drive_boot, cd_boot = boot_indexes(layout)
    for nic in layout.nics:
        multiqueue = nic.queues > 1
        argv += [
            "-netdev",
            _opts(
                f"tap,id={nic.netdev_id},ifname={nic.tap},script=no,downscript=no",
                "vhost=on" if host.vhost else None,
                f"queues={nic.queues}" if multiqueue else None,
            ),
            "-device",
            _opts(
                f"virtio-net-pci,id={nic_device_id(nic.index)},netdev={nic.netdev_id}",
                f"mac={nic.mac}",
                f"addr={FIRST_NIC_SLOT + nic.index:#x}",
                f"host_mtu={host.mtu}" if host.mtu else None,
                f"mq=on,vectors={2 * nic.queues + 2}" if multiqueue else None,
                # OVMF brings its own virtio-net driver; the iPXE BIOS ROM is in the way.
                "romfile=" if uefi else None,
                f"bootindex={nic_boot[nic.index]}" if nic.index in nic_boot else None,
            ),
        ]

    for position, drive in enumerate(layout.drives):
        argv += [
            "-drive",
            _opts(
                f"if=none,id={drive_id(position)}",
                f"file={escape(drive.path)}",
                f"format={drive.format}" if drive.format else None,
                f"cache={drive.cache}",
                # Placemat's rule (#115): native AIO needs O_DIRECT, which cache=none implies.
                f"aio={'native' if drive.cache == 'none' else 'threads'}",
                "readonly=on" if drive.read_only else None,
            ),
            "-device",
            _opts(
                f"virtio-blk-pci,id={disk_device_id(position)},drive={drive_id(position)}",
                f"bootindex={drive_boot[position]}" if position in drive_boot else None,
            ),
        ]

    argv += [
        "-drive",
        _opts(
            f"if=none,id={CD_DRIVE_ID},media=cdrom,readonly=on",
            f"file={escape(layout.cdrom)},format=raw" if layout.cdrom is not None else None,
        ),
        "-device",
        _opts(
            f"ide-cd,id={CD_DEVICE_ID},drive={CD_DRIVE_ID},bus={CD_BUS}",
            f"bootindex={cd_boot}" if cd_boot is not None else None,
        ),
    ]

    # After the NICs on purpose: Placemat notes cloud-init breaks when 9p comes first.
    for position, share in enumerate(layout.shares):
        argv += [
            "-virtfs",
            _opts(
                f"local,path={escape(share.path)}",
                f"mount_tag={escape(share.name)}",
                # Without an id QEMU uses the tag, which must then be a QEMU identifier.
                f"id=fs{position}",
                "security_model=none",
                None if share.writable else "readonly=on",
            ),
        ]

    if layout.tpm_socket is not None:
        tpm_device = "tpm-crb" if layout.machine == "q35" else "tpm-tis"
        argv += [
            "-chardev", f"socket,id=chrtpm,path={escape(layout.tpm_socket)}",
            "-tpmdev", "emulator,id=tpm0,chardev=chrtpm",
            "-device", f"{tpm_device},tpmdev=tpm0",
        ]  # fmt: skip

    # -kernel, -initrd and -append take their argument verbatim: no comma escaping.
    if layout.kernel is not None:
        argv += ["-kernel", str(layout.kernel)]
        if layout.initrd is not None:
            argv += ["-initrd", str(layout.initrd)]
        if layout.cmdline is not None:
            argv += ["-append", layout.cmdline]

    argv += [
        "-boot", f"reboot-timeout={REBOOT_TIMEOUT_MS}",
        "-device", "virtio-serial-pci,id=vserial0",
        "-chardev", f"socket,id=guest,path={escape(layout.guest_socket)},server=on,wait=off",
        "-device", "virtserialport,bus=vserial0.0,chardev=guest,name=placemat",
        # Same as `-qmp unix:<path>,server=on,wait=off`, but `-qmp unix:` reads a path
        # containing '=' as a key; a chardev takes any path.
        "-chardev", f"socket,id=qmp,path={escape(layout.qmp_socket)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", "virtio-rng-pci,rng=rng0",
        "-cpu", "host" if kvm else "max",
    ]  # fmt: skip
    return argv


__all__ = [
    "CD_DEVICE_ID",
    "FIRST_NIC_SLOT",
    "BootIndexes",
    "boot_indexes",
    "disk_device_id",
    "escape",
    "nic_device_id",
    "qemu_argv",
]
