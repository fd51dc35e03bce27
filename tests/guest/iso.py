"""A bootable ISO 9660 image of the test guest, for virtual media and CD boot tests.

Hybrid, as installer ISOs are: BIOS boots ISOLINUX (Debian's `isolinux`) from the El
Torito no-emulation entry; UEFI boots a standalone GRUB (`grub-efi-amd64-bin`) from the
El Torito EFI entry, a small FAT image made with mtools. Both load the guest's kernel and
initrd from the ISO, write to the serial console, and print `ISO_MARKER` before the
kernel starts, so a console that shows it booted from this image. Written with pycdlib:
no mastering tool is needed. Checked with SeaBIOS and OVMF on `pc` and `q35`; GRUB needs
the guest to have 512 MiB under OVMF (with 256 it cannot place the kernel).
"""

from __future__ import annotations

import io
import re
import subprocess
import tempfile
from pathlib import Path

from tests.guest.build import GuestPaths

ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
GRUB_EFI = Path("/usr/lib/grub/x86_64-efi")
ISO_MARKER = "VDC-ISO-BOOT"
EFI_IMAGE_BYTES = 2 << 20
# SeaBIOS's serial console draws the screen with cursor moves, which can land inside the
# marker ISOLINUX prints: they are taken out before counting.
_CSI = re.compile(r"\x1b\[[0-9;?=]*[A-Za-z]")
GRUB_MODULES = "iso9660 search search_fs_file serial echo linux boot normal configfile"


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _efi_image(cmdline: str, work: Path) -> bytes:
    """A FAT image holding GRUB as the removable-media loader, its config built in."""
    config = work / "grub.cfg"
    config.write_text(
        "serial --unit=0 --speed=115200\nterminal_input serial\nterminal_output serial\n"
        f"echo {ISO_MARKER}\nsearch --no-floppy --file /VMLINUZ --set=root\n"
        f"linux /VMLINUZ {cmdline}\ninitrd /INITRD.GZ\nboot\n"
    )
    loader = work / "BOOTX64.EFI"
    _run("grub-mkstandalone", "-O", "x86_64-efi", "-o", str(loader),
         f"--install-modules={GRUB_MODULES}", f"--modules={GRUB_MODULES}",
         "--locales=", "--fonts=", "--themes=", f"boot/grub/grub.cfg={config}")  # fmt: skip
    image = work / "efi.img"
    with image.open("wb") as f:
        f.truncate(EFI_IMAGE_BYTES)
    _run("mformat", "-i", str(image), "::")
    _run("mmd", "-i", str(image), "::/EFI", "::/EFI/BOOT")
    _run("mcopy", "-i", str(image), str(loader), "::/EFI/BOOT/BOOTX64.EFI")
    return image.read_bytes()


def iso_boots(console: str) -> int:
    """How often the console shows a boot from the ISO."""
    return _CSI.sub("", console).count(ISO_MARKER)


def build_iso(guest: GuestPaths, path: Path, *, cmdline: str = "console=ttyS0 quiet") -> Path:
    """Write the bootable image to `path` (about 13 MB; well under a second) and return it."""
    import pycdlib

    config = (
        f"SERIAL 0 115200\nSAY {ISO_MARKER}\nDEFAULT guest\nLABEL guest\n"
        f"  KERNEL /VMLINUZ\n  APPEND initrd=/INITRD.GZ {cmdline}\n"
    ).encode()
    with tempfile.TemporaryDirectory() as work:
        efi = _efi_image(cmdline, Path(work))
    files = {
        "ISOLINUX.BIN": ISOLINUX.read_bytes(),
        "LDLINUX.C32": LDLINUX.read_bytes(),
        "ISOLINUX.CFG": config,
        "VMLINUZ": guest.vmlinuz.read_bytes(),
        "INITRD.GZ": guest.initrd.read_bytes(),
        "EFI.IMG": efi,
    }
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident="VDC_GUEST")
    for name, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), f"/{name};1")
    # ISOLINUX patches its own load with the boot info table: it must be asked for.
    iso.add_eltorito("/ISOLINUX.BIN;1", "/BOOT.CAT;1", boot_load_size=4, boot_info_table=True)
    iso.add_eltorito("/EFI.IMG;1", "/BOOT.CAT;1", efi=True)
    iso.write(str(path))
    iso.close()
    return path


__all__ = ["ISO_MARKER", "build_iso", "iso_boots"]
