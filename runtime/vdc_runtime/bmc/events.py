"""The BMC's event log: power and boot events of its machine, shared by IPMI and Redfish.

One log per machine, as on a real server: IPMI reads it as the SEL (`ipmitool sel list`)
and Redfish as the system's event LogService, so clearing it from either clears both.
Entries carry what both need (a record id, a time, a kind with its fixed message and
severity); each front end encodes them its own way.
"""

from __future__ import annotations

import datetime
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

EventKind = Literal[
    "power-on",
    "power-off",
    "soft-off",
    "power-cycle",
    "boot-power-up",
    "boot-hard-reset",
    "boot-restart",
    "boot-pxe",
    "log-cleared",
]

Severity = Literal["OK", "Warning", "Critical"]

MESSAGES: dict[EventKind, tuple[str, Severity]] = {
    "power-on": ("The system was powered on.", "OK"),
    "power-off": ("The system was powered off.", "Warning"),
    "soft-off": ("The operating system shut the system down (ACPI S5 soft off).", "OK"),
    "power-cycle": ("The system was power cycled.", "Warning"),
    "boot-power-up": ("The system is booting after a power up.", "OK"),
    "boot-hard-reset": ("The system is booting after a hard reset.", "Warning"),
    "boot-restart": ("The system is booting after a restart.", "OK"),
    "boot-pxe": ("The system is booting from the network, as requested.", "OK"),
    "log-cleared": ("The event log was cleared.", "OK"),
}

CAPACITY = 512
"""Entries kept; the oldest go first, as on BMCs whose SEL wraps around."""

MAX_RECORD_ID = 0xFFFD  # FFFEh and FFFFh have meanings of their own in IPMI


@dataclass(frozen=True)
class Event:
    record_id: int
    """1.. (wrapping below FFFEh): the SEL record ID, and the Redfish LogEntry's Id."""
    time: float
    kind: EventKind
    detail: str = ""
    """Who or what caused it (a BMC user, the guest), shown after the fixed message."""

    @property
    def message(self) -> str:
        text = MESSAGES[self.kind][0]
        return f"{text} ({self.detail})" if self.detail else text

    @property
    def severity(self) -> Severity:
        return MESSAGES[self.kind][1]


class EventLog:
    """A bounded, in-memory list of events, and the BMC's clock that stamps them; `clock`
    (the host's) is injectable for the tests."""

    def __init__(self, clock: Callable[[], float] = time.time, capacity: int = CAPACITY) -> None:
        self._clock = clock
        self._entries: deque[Event] = deque(maxlen=capacity)
        self._next_id = 1
        self.last_addition: float | None = None
        self.last_erase: float | None = None
        self.overflowed = False
        self.capacity = capacity
        self._offset = 0.0

    def now(self) -> float:
        """The BMC's clock: the host's, moved to where a client set it (IPMI Set SEL Time).
        Provisioners set a BMC's clock before reading its log; they expect new entries,
        `sel time get` and Redfish's DateTime to follow it."""
        return self._clock() + self._offset

    def now_utc(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self.now(), datetime.UTC)

    def set_time(self, seconds: float) -> None:
        self._offset = seconds - self._clock()

    def add(self, kind: EventKind, detail: str = "") -> Event:
        now = self.now()
        event = Event(self._next_id, now, kind, detail)
        self._next_id = self._next_id % MAX_RECORD_ID + 1
        if len(self._entries) == self.capacity:
            self.overflowed = True
        self._entries.append(event)
        self.last_addition = now
        return event

    def clear(self, detail: str = "") -> None:
        """Empty the log; like a real BMC, it then records that it was cleared."""
        self._entries.clear()
        self.overflowed = False
        self.last_erase = self.now()
        self.add("log-cleared", detail)

    def entries(self) -> tuple[Event, ...]:
        return tuple(self._entries)

    def get(self, record_id: int) -> Event | None:
        return next((e for e in self._entries if e.record_id == record_id), None)

    def __len__(self) -> int:
        return len(self._entries)


def power_event(power: str, cause: str) -> EventKind | None:
    """The event a power change of the machine logs (None: none); `cause` is the machine's
    wording ("power on", "guest shut down (guest-shutdown)", ...)."""
    if power == "On":
        return "power-on"
    if power == "Off":
        if cause.startswith("guest shut down"):
            return "soft-off"
        return "power-cycle" if cause == "restart" else "power-off"
    return None


__all__ = ["CAPACITY", "MESSAGES", "Event", "EventKind", "EventLog", "power_event"]
