"""The event log as IPMI's System Event Log (IPMI v2.0 section 31, record format 32.1).

Each event of `bmc.events` becomes a system event record from the BMC, with the sensor
type and offset a server's BMC would log for it, so clients print familiar text
("System ACPI Power State ... S0/G0: working", "System Boot Initiated ... Initiated by
hard reset").
"""

from __future__ import annotations

import struct

from vdc_runtime.bmc.events import Event, EventKind, EventLog
from vdc_runtime.bmc.ipmi import sdr

SEL_VERSION = 0x51
RECORD_SIZE = 16
SYSTEM_EVENT = 0x02
EVM_REV = 0x04
UNSPECIFIED_TIME = 0xFFFFFFFF
FIRST, LAST = 0x0000, 0xFFFF

# kind -> (sensor type, offset of the sensor-specific event)
EVENT_CODES: dict[EventKind, tuple[int, int]] = {
    "power-on": (sdr.ACPI_POWER_STATE, 0x00),  # S0/G0: working
    "soft-off": (sdr.ACPI_POWER_STATE, 0x06),  # S5/G2: soft-off
    "power-off": (sdr.POWER_UNIT, 0x00),  # power off / power down
    "power-cycle": (sdr.POWER_UNIT, 0x01),
    "boot-power-up": (sdr.SYSTEM_BOOT, 0x00),
    "boot-hard-reset": (sdr.SYSTEM_BOOT, 0x01),
    "boot-pxe": (sdr.SYSTEM_BOOT, 0x03),  # user requested PXE boot
    "boot-restart": (sdr.SYSTEM_BOOT, 0x07),  # system restart
    "log-cleared": (sdr.EVENT_LOGGING, 0x02),  # log area reset/cleared
}


def _timestamp(value: float | None) -> int:
    return UNSPECIFIED_TIME if value is None else int(value) & 0xFFFFFFFF


def record(event: Event) -> bytes:
    """The 16-byte SEL record of an event (table 32-1)."""
    sensor_type, offset = EVENT_CODES[event.kind]
    sensor = sdr.BY_TYPE[sensor_type]
    return struct.pack(
        "<HBIBBBBBBBBB",
        event.record_id,
        SYSTEM_EVENT,
        _timestamp(event.time),
        sdr.BMC_ADDRESS,  # generator: the BMC itself (IPMB slave address 20h)
        0x00,  # channel 0, LUN 0
        EVM_REV,
        sensor_type,
        sensor.number,
        sdr.SENSOR_SPECIFIC,  # assertion, sensor-specific
        offset,  # event data 2 and 3 unspecified
        0xFF,
        0xFF,
    )


def info(log: EventLog) -> bytes:
    """Get SEL Info's reply (table 31-2): reserve supported, overflow when it wrapped."""
    free = (log.capacity - len(log)) * RECORD_SIZE
    support = 0x02 | (0x80 if log.overflowed else 0)
    return struct.pack(
        "<BHHIIB",
        SEL_VERSION,
        len(log),
        min(free, 0xFFFF),
        _timestamp(log.last_addition),
        _timestamp(log.last_erase),
        support,
    )


def entry(log: EventLog, record_id: int) -> tuple[int, bytes] | None:
    """(next record ID, record) of Get SEL Entry (table 31-3); None if there is none.
    0000h asks for the first record and FFFFh for the last; the next of the last is FFFFh."""
    entries = log.entries()
    if not entries:
        return None
    if record_id == FIRST:
        index = 0
    elif record_id == LAST:
        index = len(entries) - 1
    else:
        index = next((i for i, e in enumerate(entries) if e.record_id == record_id), -1)
        if index < 0:
            return None
    following = entries[index + 1].record_id if index + 1 < len(entries) else LAST
    return following, record(entries[index])


__all__ = ["EVENT_CODES", "entry", "info", "record"]
