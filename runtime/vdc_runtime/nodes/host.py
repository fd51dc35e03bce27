"""Probes of what the host offers QEMU: acceleration, OVMF firmware, vhost-net.

Each decision is a pure function of facts passed in, wrapped by a small probe that reads
them from /dev, /proc and /sys, so the decisions are tested without the hardware.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

Accel = Literal["kvm", "tcg"]
AccelRequest = Literal["auto", "kvm", "tcg"]

KVM_DEVICE = Path("/dev/kvm")
VHOST_NET_DEVICE = Path("/dev/vhost-net")
CPUINFO = Path("/proc/cpuinfo")
PVM_MODULE = Path("/sys/module/kvm_pvm")

OVMF_CANDIDATES: tuple[tuple[Path, Path], ...] = tuple(
    (Path(code), Path(vars_))
    for code, vars_ in (
        # Debian 12 / Ubuntu 22.04+: the 4 MiB build is the maintained one.
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"),
        # Older Debian and Ubuntu (Placemat's hard-coded pair).
        ("/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"),
        # Fedora, RHEL and derivatives.
        ("/usr/share/edk2/ovmf/OVMF_CODE.fd", "/usr/share/edk2/ovmf/OVMF_VARS.fd"),
        # Arch Linux, current and older layouts.
        ("/usr/share/edk2/x64/OVMF_CODE.4m.fd", "/usr/share/edk2/x64/OVMF_VARS.4m.fd"),
        ("/usr/share/edk2-ovmf/x64/OVMF_CODE.fd", "/usr/share/edk2-ovmf/x64/OVMF_VARS.fd"),
        # openSUSE.
        ("/usr/share/qemu/ovmf-x86_64-code.bin", "/usr/share/qemu/ovmf-x86_64-vars.bin"),
        # QEMU's own bundled build (Homebrew-style and source installs).
        ("/usr/share/qemu/edk2-x86_64-code.fd", "/usr/share/qemu/edk2-i386-vars.fd"),
    )
)
"""Code/variables pairs without Secure Boot: those need SMM, i.e. q35 only."""

OVMF_SECURE_CANDIDATES: tuple[tuple[Path, Path], ...] = tuple(
    (Path(code), Path(vars_))
    for code, vars_ in (
        # Debian 12 / Ubuntu 22.04+: the SMM build, and a variables store with Microsoft's
        # KEK and db (which sign the distributions' shims) enrolled.
        ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
        # (Not their 2 MiB builds: too small a variable store for Secure Boot, says Debian.)
        # Fedora, RHEL and derivatives.
        ("/usr/share/edk2/ovmf/OVMF_CODE.secboot.fd", "/usr/share/edk2/ovmf/OVMF_VARS.secboot.fd"),
        # openSUSE.
        (
            "/usr/share/qemu/ovmf-x86_64-smm-ms-code.bin",
            "/usr/share/qemu/ovmf-x86_64-smm-ms-vars.bin",
        ),
    )
)
"""Code/variables pairs for Secure Boot: the code needs SMM (q35), and the variables
template has the keys enrolled, so the firmware boots in User Mode with Secure Boot on."""


class AccelError(ValueError):
    """KVM was asked for explicitly but cannot run guests on this host."""


def choose_accel(
    requested: AccelRequest, *, kvm_device: bool, cpu_flags: set[str], pvm_loaded: bool
) -> tuple[Accel, str]:
    """The accelerator to use and why, from facts about the host.

    KVM counts as usable only with a usable /dev/kvm backed by hardware virtualisation
    (vmx or svm) and not by kvm_pvm, which runs only PVM-enlightened guest kernels:
    stock kernels, SeaBIOS, OVMF and iPXE hang under it.
    """
    problems = []
    if not kvm_device:
        problems.append("/dev/kvm is missing or cannot be opened read-write")
    if pvm_loaded:
        problems.append(
            "/dev/kvm is provided by kvm_pvm, which runs only PVM-enlightened guest kernels"
        )
    if not cpu_flags & {"vmx", "svm"}:
        problems.append("the CPU has no vmx/svm (hardware virtualisation) flag")
    if requested == "tcg":
        return "tcg", "TCG requested"
    if requested == "kvm":
        if problems:
            raise AccelError("KVM was requested but is unusable here: " + "; ".join(problems))
        return "kvm", "KVM requested; hardware virtualisation available"
    if requested != "auto":
        raise AccelError(f"unknown accelerator {requested!r}; use auto, kvm or tcg")
    if problems:
        return "tcg", "software emulation (TCG): " + "; ".join(problems)
    return "kvm", "hardware virtualisation (KVM)"


def cpu_flags(cpuinfo: str) -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def _openable(path: Path, flags: int) -> bool:
    try:
        fd = os.open(path, flags | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def probe_accel(requested: AccelRequest) -> tuple[Accel, str]:
    """`choose_accel` with facts read from this host; raises AccelError as it does."""
    try:
        cpuinfo = CPUINFO.read_text(errors="replace")
    except OSError:
        cpuinfo = ""
    return choose_accel(
        requested,
        kvm_device=_openable(KVM_DEVICE, os.O_RDWR),
        cpu_flags=cpu_flags(cpuinfo),
        pvm_loaded=PVM_MODULE.exists(),
    )


def find_ovmf(
    exists: Callable[[Path], bool] = Path.exists,
    candidates: Iterable[tuple[Path, Path]] = OVMF_CANDIDATES,
) -> tuple[Path, Path] | None:
    """The first (code, variables template) pair of OVMF files that both exist."""
    for code, variables in candidates:
        if exists(code) and exists(variables):
            return code, variables
    return None


def find_ovmf_secure(
    exists: Callable[[Path], bool] = Path.exists,
) -> tuple[Path, Path] | None:
    """The first (code, variables template with keys) pair for Secure Boot that exists."""
    return find_ovmf(exists, OVMF_SECURE_CANDIDATES)


def vhost_available() -> bool:
    """Whether QEMU can use in-kernel virtio-net (vhost=on) here."""
    return _openable(VHOST_NET_DEVICE, os.O_RDWR)


__all__ = [
    "OVMF_CANDIDATES",
    "OVMF_SECURE_CANDIDATES",
    "Accel",
    "AccelError",
    "AccelRequest",
    "choose_accel",
    "cpu_flags",
    "find_ovmf",
    "find_ovmf_secure",
    "probe_accel",
    "vhost_available",
]
