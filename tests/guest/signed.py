"""A disk that boots the test guest through Debian's signed boot chain, for Secure Boot.

UEFI Secure Boot runs only what the keys in the firmware's db allow. OVMF's variables
template with Microsoft's keys (`OVMF_VARS_4M.ms.fd`) trusts Microsoft's UEFI CA, which
signs the distributions' shims; Debian's shim trusts Debian's own key, which signs its
GRUB and its kernels, the test guest's included. So the chain here is:

    OVMF --(Microsoft UEFI CA)--> shim --(Debian key)--> GRUB --(shim)--> Linux

The disk is one FAT file system without a partition table (OVMF and GRUB both read it):
shim as the removable-media loader `\\EFI\\BOOT\\BOOTX64.EFI`, GRUB beside it as
`grubx64.efi`, which shim loads, and the kernel and initrd. Debian's signed GRUB has its
configuration built in: with no `/EFI/debian`, it finds the disk by `/.disk/info` and
reads `/boot/grub/grub.cfg`, which prints `SIGNED_MARKER` and boots the guest. Under
Secure Boot GRUB loads no modules, so the configuration uses only built-in commands.

The signed binaries come from Debian's `shim-signed` and `grub-efi-amd64-signed`,
fetched by `make deps` (`fetch_signed_loaders`) with `apt-get download` beside the guest's
kernel and unpacked, not installed: installing shim-signed would also install mokutil and
run grub-install on an EFI host. Tests only look them up (`find_signed_loaders`).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

from tests.guest import build
from tests.guest.build import GuestPaths

SIGNED_MARKER = "VDC-SIGNED-GRUB"
LOADERS = {
    "shim-signed": "usr/lib/shim/shimx64.efi.signed",
    "grub-efi-amd64-signed": "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
}
DISK_BYTES = 64 << 20


def _candidate(package: str) -> str:
    out = build.run(["apt-cache", "policy", package]).stdout
    found = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
    if not found or found.group(1) == "(none)":
        raise build.BuildError(f"apt knows no candidate of {package} (run apt-get update)")
    return found.group(1)


def _role(package: str) -> str:
    return "shim" if package.startswith("shim") else "grub"


def fetch_signed_loaders(cache_dir: Path | None = None) -> bool:
    """Unpack apt's candidate of each package under the guest's cache, once per version;
    True if something was fetched."""
    base = Path(cache_dir) if cache_dir is not None else build.default_cache_dir()
    base.mkdir(parents=True, exist_ok=True)
    fetched = False
    for package, member in LOADERS.items():
        version = _candidate(package)
        unpacked = base / "signed" / f"{package}_{version.replace(':', '%3a')}"
        if (unpacked / member).is_file():
            continue
        with build.locked(base):
            if not (unpacked / member).is_file():
                deb = build.download(base, package, version)
                scratch = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
                build.run(["dpkg-deb", "-x", str(deb), str(scratch)])
                unpacked.parent.mkdir(exist_ok=True)
                scratch.rename(unpacked)
                fetched = True
    return fetched


def find_signed_loaders(cache_dir: Path | None = None) -> dict[str, Path] | None:
    """The newest unpacked shim and GRUB, {"shim": path, "grub": path}, or None."""
    base = Path(cache_dir) if cache_dir is not None else build.default_cache_dir()
    found: dict[str, Path] = {}
    for package, member in LOADERS.items():
        candidates = [p / member for p in (base / "signed").glob(f"{package}_*")]
        present = sorted((p for p in candidates if p.is_file()), key=lambda p: p.stat().st_mtime)
        if not present:
            return None
        found[_role(package)] = present[-1]
    return found


def _mtools(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def build_signed_disk(
    loaders: dict[str, Path],
    guest: GuestPaths,
    path: Path,
    *,
    cmdline: str = "console=ttyS0 quiet",
) -> Path:
    """Write the raw FAT disk image to `path` (64 MiB, under a second) and return it;
    `loaders` as `find_signed_loaders` gives them."""
    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "grub.cfg"
        config.write_text(
            f"echo {SIGNED_MARKER}\nlinux /vmlinuz {cmdline}\ninitrd /initrd.gz\nboot\n"
        )
        info = Path(work) / "info"
        info.write_text("vdc test guest, signed boot chain\n")
        with path.open("wb") as f:
            f.truncate(DISK_BYTES)
        image = str(path)
        _mtools("mformat", "-i", image, "-T", str(DISK_BYTES // 512), "-h", "64", "-s", "32", "::")
        _mtools("mmd", "-i", image, "::/EFI", "::/EFI/BOOT", "::/.disk", "::/boot", "::/boot/grub")
        for source, target in (
            (loaders["shim"], "::/EFI/BOOT/BOOTX64.EFI"),
            (loaders["grub"], "::/EFI/BOOT/grubx64.efi"),
            (info, "::/.disk/info"),
            (config, "::/boot/grub/grub.cfg"),
            (guest.vmlinuz, "::/vmlinuz"),
            (guest.initrd, "::/initrd.gz"),
        ):
            _mtools("mcopy", "-i", image, str(source), target)
    return path


__all__ = ["SIGNED_MARKER", "build_signed_disk", "fetch_signed_loaders", "find_signed_loaders"]
