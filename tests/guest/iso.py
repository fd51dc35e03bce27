"""A bootable ISO 9660 image of the test guest, for virtual media and CD boot tests.

ISOLINUX (Debian's `isolinux` package) as El Torito no-emulation boot image, with the
guest's kernel and initrd; built with pycdlib, so no mastering tool is needed. ISOLINUX
writes to the serial console and prints `ISO_MARKER` before it loads the kernel, so a
console that shows it booted from this image. BIOS only (SeaBIOS): there is no EFI boot
image on it.
"""

from __future__ import annotations

import io
from pathlib import Path

from tests.guest.build import GuestPaths

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
ISO_MARKER = "VDC-ISO-BOOT"


def build_iso(guest: GuestPaths, path: Path, *, cmdline: str = "console=ttyS0 quiet") -> Path:
    """Write the bootable image to `path` (about 11 MB; 0.1 s) and return `path`."""
    import pycdlib

    config = (
        f"SERIAL 0 115200\nSAY {ISO_MARKER}\nDEFAULT guest\nLABEL guest\n"
        f"  KERNEL /VMLINUZ\n  APPEND initrd=/INITRD.GZ {cmdline}\n"
    ).encode()
    files = {
        "ISOLINUX.BIN": ISOLINUX.read_bytes(),
        "LDLINUX.C32": LDLINUX.read_bytes(),
        "ISOLINUX.CFG": config,
        "VMLINUZ": guest.vmlinuz.read_bytes(),
        "INITRD.GZ": guest.initrd.read_bytes(),
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="VDC_GUEST")
    for name, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), f"/{name};1")
    # ISOLINUX patches its own load with the boot info table: it must be asked for.
    iso.add_eltorito("/ISOLINUX.BIN;1", "/BOOT.CAT;1", boot_load_size=4, boot_info_table=True)
    iso.write(str(path))
    iso.close()
    return path


__all__ = ["ISO_MARKER", "build_iso"]
