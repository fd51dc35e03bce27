"""What a BMC keeps for its machine besides power: the identify light and the BIOS setup.

Both front ends share one `BmcSettings` per machine: `ipmitool chassis identify` lights
what Redfish reports as `LocationIndicatorActive`, and BIOS attributes written through
Redfish's `Bios/Settings` wait, as on a server, for the next reset of the machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Indicator = Literal["Off", "Blinking"]


@dataclass(frozen=True)
class BiosAttribute:
    name: str
    default: str
    allowed: tuple[str, ...] | None  # None: free text
    read_only: bool = False
    help: str = ""


BIOS_ATTRIBUTES: tuple[BiosAttribute, ...] = (
    BiosAttribute("BootMode", "Bios", ("Bios", "Uefi"), read_only=True,
                  help="The node's firmware, fixed by its spec (uefi)."),
    BiosAttribute("ProcVirtualization", "Enabled", ("Enabled", "Disabled"),
                  help="Hardware virtualisation extensions."),
    BiosAttribute("ProcHyperThreading", "Enabled", ("Enabled", "Disabled"),
                  help="Simultaneous multithreading."),
    BiosAttribute("SriovGlobalEnable", "Disabled", ("Enabled", "Disabled"),
                  help="SR-IOV support."),
    BiosAttribute("NumLock", "On", ("On", "Off"), help="NumLock state at boot."),
    BiosAttribute("SerialConsoleRedirection", "COM1", ("COM1", "Disabled"),
                  help="Firmware console on the serial port."),
    BiosAttribute("PowerRestorePolicy", "AlwaysOn", ("AlwaysOn",), read_only=True,
                  help="vdc powers every machine on when it starts."),
    BiosAttribute("AssetTag", "", None, help="Free text, up to 64 characters."),
)  # fmt: skip
"""The setup a node's BIOS shows. The values are kept and reported; none changes how QEMU
runs the machine (a VM has no virtualisation switch in its firmware)."""

ASSET_TAG_MAX = 64


class BiosError(ValueError):
    """A BIOS attribute write that cannot be taken: `kind` says which Redfish message fits."""

    def __init__(self, kind: Literal["unknown", "read-only", "value"], name: str, value: object):
        self.kind, self.name, self.value = kind, name, value
        super().__init__(f"BIOS attribute {name}: {kind} ({value!r})")


def bios_defaults(uefi: bool) -> dict[str, str]:
    values = {a.name: a.default for a in BIOS_ATTRIBUTES}
    values["BootMode"] = "Uefi" if uefi else "Bios"
    return values


def check_bios(changes: Mapping[str, object], current: Mapping[str, str]) -> dict[str, str]:
    """The attribute writes `changes` asks for, checked (BiosError on the first bad one);
    writing a read-only attribute with its current value is allowed, as clients that send
    back everything they read do."""
    known = {a.name: a for a in BIOS_ATTRIBUTES}
    checked: dict[str, str] = {}
    for name, value in changes.items():
        attribute = known.get(name)
        if attribute is None:
            raise BiosError("unknown", name, value)
        if not isinstance(value, str):
            raise BiosError("value", name, value)
        if attribute.read_only and value != current.get(name):
            raise BiosError("read-only", name, value)
        if attribute.allowed is not None and value not in attribute.allowed:
            raise BiosError("value", name, value)
        if attribute.allowed is None and len(value) > ASSET_TAG_MAX:
            raise BiosError("value", name, value)
        checked[name] = value
    return checked


class BmcSettings:
    """The identify light and the BIOS setup of one machine; `clock` for the tests."""

    def __init__(self, uefi: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._identify_until = 0.0
        self._uefi = uefi
        self._bios = bios_defaults(uefi)
        self._pending: dict[str, str] = {}

    # -- identify ------------------------------------------------------------------------

    def identify(self, seconds: float | None) -> None:
        """Blink for `seconds` (None: until told otherwise; 0: stop now)."""
        self._identify_until = math.inf if seconds is None else self._clock() + seconds

    @property
    def indicator(self) -> Indicator:
        return "Blinking" if self._clock() < self._identify_until else "Off"

    @property
    def identify_forever(self) -> bool:
        return self._identify_until == math.inf

    # -- BIOS ----------------------------------------------------------------------------

    @property
    def bios(self) -> Mapping[str, str]:
        return MappingProxyType(self._bios)

    @property
    def pending(self) -> Mapping[str, str]:
        return MappingProxyType(self._pending)

    def set_pending(self, changes: Mapping[str, object]) -> None:
        """Queue attribute writes for the next reset (BiosError, nothing queued, if one is bad)."""
        self._pending.update(check_bios(changes, self._bios))

    def reset_bios(self) -> None:
        """Bios.ResetBios: the defaults come back at the next reset."""
        self._pending = bios_defaults(self._uefi)

    def apply_pending(self) -> dict[str, str]:
        """The machine is resetting: pending writes take effect. Returns what was applied."""
        applied, self._pending = self._pending, {}
        self._bios.update(applied)
        return applied


__all__ = [
    "BIOS_ATTRIBUTES",
    "BiosAttribute",
    "BiosError",
    "BmcSettings",
    "Indicator",
    "bios_defaults",
    "check_bios",
]
