"""What a BMC may do to its machine: the small power and boot interface it speaks through.

IPMI and Redfish front ends see a machine only through `BmcTarget`, so they never touch
QEMU or QMP themselves and one machine serves both (and the REST API) consistently: a
power request from any of them is serialised by the machine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from vdc_runtime.bmc.events import EventLog
from vdc_runtime.bmc.media import MediaState
from vdc_runtime.bmc.settings import BmcSettings
from vdc_runtime.nodes.states import Power as PowerState

BootTarget = Literal["none", "pxe", "hdd", "cd", "bios-setup", "uefi-http"]
"""Where the next boot goes: Redfish's BootSourceOverrideTarget values, lower-cased.

IPMI boot devices map onto them: pxe -> pxe, disk -> hdd, cdrom -> cd, bios -> bios-setup,
none/default -> none."""

BootEnabled = Literal["disabled", "once", "continuous"]
BootMode = Literal["legacy", "uefi"]


@dataclass(frozen=True)
class BootOverride:
    """A boot source override as a server BMC keeps it (IPMI boot flags, Redfish Boot)."""

    target: BootTarget = "none"
    enabled: BootEnabled = "disabled"
    mode: BootMode = "legacy"


@dataclass(frozen=True)
class DriveFacts:
    """One disk of the machine, as its BMC's inventory shows it."""

    name: str
    size_bytes: int
    serial: str
    read_only: bool = False


@dataclass(frozen=True)
class SystemFacts:
    """What the BMC reports about the machine; fixed for the run."""

    name: str
    serial: str
    uuid: str
    manufacturer: str
    model: str
    memory_mib: int
    cpus: int
    uefi: bool
    tpm: bool
    macs: tuple[str, ...]
    sockets: int = 1
    cores: int = 1
    """Per socket."""
    threads: int = 1
    """Per core."""
    drives: tuple[DriveFacts, ...] = ()
    networks: tuple[str, ...] = ()
    """The network each NIC (in `macs`' order) is plugged into."""
    secure_boot_capable: bool = False
    """UEFI on q35 with OVMF's Secure Boot build at hand: Secure Boot can be turned on."""


@dataclass(frozen=True)
class SecureBootState:
    """UEFI Secure Boot of the machine (Redfish's SecureBoot resource)."""

    enabled: bool = False
    """From the next power on, power cycle or reset on."""
    current: bool = False
    """Whether the firmware running now has Secure Boot on (keys enrolled, enforcing)."""


class PowerStateError(RuntimeError):
    """The request does not fit the power state (e.g. reset while off): IPMI 0xD5, HTTP 409."""


class TargetError(RuntimeError):
    """The machine could not carry the request out (QEMU gone, QMP failed): IPMI 0xFF, HTTP 500."""


class BmcTarget(Protocol):
    """One machine as its BMC sees it. Every method is a coroutine on the runtime's loop."""

    @property
    def facts(self) -> SystemFacts: ...

    @property
    def events(self) -> EventLog:
        """The machine's power and boot events (IPMI's SEL, Redfish's event log)."""
        ...

    @property
    def settings(self) -> BmcSettings:
        """The identify light and the BIOS setup."""
        ...

    async def power_state(self) -> PowerState:
        """Never raises; Unknown when QEMU cannot be asked."""
        ...

    async def power_on(self) -> bool:
        """Boot afresh if off; False (nothing done) if already on."""
        ...

    async def power_off(self) -> bool:
        """Hard off; False (nothing done) if already off."""
        ...

    async def power_cycle(self) -> None:
        """Off then on, from any state: the guest boots again."""
        ...

    async def reset(self) -> None:
        """Hard reset; PowerStateError if off."""
        ...

    async def graceful_shutdown(self) -> None:
        """ACPI power button; the guest OS decides. PowerStateError if off."""
        ...

    async def nmi(self) -> None:
        """Diagnostic interrupt; PowerStateError if off."""
        ...

    def boot_override(self) -> BootOverride:
        """The override in force now (a consumed `once` reads back as disabled)."""
        ...

    async def set_boot_override(self, override: BootOverride) -> None:
        """Applied at the next boot, whoever causes it (BMC, API or the guest rebooting);
        a `once` override is cleared after that boot."""
        ...

    def virtual_media(self) -> MediaState:
        """What the CD drive holds now."""
        ...

    def secure_boot(self) -> SecureBootState: ...

    async def set_secure_boot(self, enabled: bool) -> None:
        """Secure Boot on or off from the next power on, power cycle or reset on (the
        firmware changes then); TargetError if the machine cannot have it."""
        ...

    async def insert_media(
        self, url: str, *, user: str | None = None, password: str | None = None
    ) -> None:
        """Fetch the ISO image at `url` and put it in the CD drive of the running machine
        (no reboot); `bmc.media.MediaError` when it cannot be."""
        ...

    async def eject_media(self) -> None:
        """Empty the CD drive (nothing happens if it is empty)."""
        ...

    def console_subscribe(self, reader: Callable[[bytes], None]) -> Callable[[], None]:
        """Hand `reader` everything the serial console prints from now on; returns the
        function that stops it (serial over LAN)."""
        ...

    def console_write(self, data: bytes) -> None:
        """Type on the serial console."""
        ...


__all__ = [
    "BmcTarget",
    "BootEnabled",
    "BootMode",
    "BootOverride",
    "BootTarget",
    "DriveFacts",
    "PowerState",
    "PowerStateError",
    "SecureBootState",
    "SystemFacts",
    "TargetError",
]
