"""The BMC's sensors and their Sensor Data Records (IPMI v2.0 sections 35 and 43).

A virtual machine has no thermometers or fans, so the readings are a model: believable
values that follow the power state, which is what inventory and monitoring tools check.
While the machine is off, the sensors on its main power (CPU, fans) have no reading, as
on a server in standby; the inlet temperature and the supply's input power still read,
the latter at standby level.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass
from typing import Literal

BMC_ADDRESS = 0x20
SDR_VERSION = 0x51
FULL_SENSOR = 0x01
COMPACT_SENSOR = 0x02

THRESHOLD = 0x01  # event/reading type: threshold based
SENSOR_SPECIFIC = 0x6F

# Sensor types (table 42-3)
TEMPERATURE, FAN, POWER_SUPPLY, POWER_UNIT = 0x01, 0x04, 0x08, 0x09
EVENT_LOGGING, SYSTEM_BOOT, ACPI_POWER_STATE = 0x10, 0x1D, 0x22

# Entity IDs (table 43-13)
PROCESSOR, SYSTEM_BOARD, POWER_SUPPLY_ENTITY = 0x03, 0x07, 0x0A
POWER_UNIT_ENTITY, FAN_ENTITY, AIR_INLET = 0x15, 0x1D, 0x37

# Base units (table 43-15)
DEGREES_C, WATTS, RPM = 1, 6, 18

Power = Literal["On", "Off", "Unknown"]


@dataclass(frozen=True)
class Thresholds:
    """Raw values, as the SDR and Get Sensor Thresholds carry them (None: not defined)."""

    lnc: int | None = None
    lcr: int | None = None
    lnr: int | None = None
    unc: int | None = None
    ucr: int | None = None
    unr: int | None = None

    @property
    def mask(self) -> int:
        """Readable-threshold bits: LNC, LCR, LNR, UNC, UCR, UNR from bit 0."""
        values = (self.lnc, self.lcr, self.lnr, self.unc, self.ucr, self.unr)
        return sum(1 << i for i, v in enumerate(values) if v is not None)

    def status(self, raw: int) -> int:
        """Threshold comparison status bits of a reading (Get Sensor Reading, byte 3)."""
        bits = 0
        for bit, limit, below in (
            (0, self.lnc, True), (1, self.lcr, True), (2, self.lnr, True),
            (3, self.unc, False), (4, self.ucr, False), (5, self.unr, False),
        ):  # fmt: skip
            if limit is not None and (raw <= limit if below else raw >= limit):
                bits |= 1 << bit
        return bits


@dataclass(frozen=True)
class Sensor:
    number: int
    name: str
    sensor_type: int
    entity: int
    instance: int = 1
    # Threshold sensors: value = raw * multiplier, in `unit`; readings by power state.
    unit: int = 0
    multiplier: int = 1
    thresholds: Thresholds | None = None
    reading_on: int | None = None
    reading_off: int | None = None
    """Raw reading while off; None: no reading (the sensor is on main power)."""

    @property
    def discrete(self) -> bool:
        return self.thresholds is None


SENSORS: tuple[Sensor, ...] = (
    Sensor(0x01, "Inlet Temp", TEMPERATURE, AIR_INLET, unit=DEGREES_C,
           thresholds=Thresholds(lnc=5, lcr=3, unc=40, ucr=45), reading_on=23, reading_off=22),
    Sensor(0x02, "CPU Temp", TEMPERATURE, PROCESSOR, unit=DEGREES_C,
           thresholds=Thresholds(unc=85, ucr=90, unr=95), reading_on=41),
    Sensor(0x03, "System Temp", TEMPERATURE, SYSTEM_BOARD, unit=DEGREES_C,
           thresholds=Thresholds(lnc=5, unc=70, ucr=75), reading_on=32),
    Sensor(0x10, "Fan1", FAN, FAN_ENTITY, 1, unit=RPM, multiplier=60,
           thresholds=Thresholds(lnc=10, lcr=5), reading_on=90),
    Sensor(0x11, "Fan2", FAN, FAN_ENTITY, 2, unit=RPM, multiplier=60,
           thresholds=Thresholds(lnc=10, lcr=5), reading_on=88),
    Sensor(0x20, "PS1 Input Power", POWER_SUPPLY, POWER_SUPPLY_ENTITY, unit=WATTS, multiplier=2,
           thresholds=Thresholds(unc=200, ucr=240), reading_on=72, reading_off=5),
    Sensor(0x21, "PS1 Status", POWER_SUPPLY, POWER_SUPPLY_ENTITY),
    Sensor(0x30, "Power Unit", POWER_UNIT, POWER_UNIT_ENTITY),
    Sensor(0x31, "ACPI State", ACPI_POWER_STATE, SYSTEM_BOARD),
    Sensor(0x32, "System Boot", SYSTEM_BOOT, SYSTEM_BOARD),
    Sensor(0x33, "Event Log", EVENT_LOGGING, SYSTEM_BOARD),
)  # fmt: skip
"""Numbers are stable: SEL entries name their sensor by number."""

BY_NUMBER = {s.number: s for s in SENSORS}
BY_TYPE = {s.sensor_type: s for s in reversed(SENSORS)}  # the first sensor of each type

# Discrete states each sensor asserts (bit = offset), by power.
_DISCRETE_MASKS = {
    0x21: 0x0003,  # presence detected, failure detected
    0x30: 0x0003,  # power off/down, power cycle
    0x31: 0x00C1,  # S0/G0 working, S5/G2 soft off, G3 mechanical off
    0x32: 0x00FF,  # boot initiated by power up, hard reset, ..., system restart
    0x33: 0x0004,  # log area reset/cleared
}


def id_string(name: str) -> bytes:
    data = name.encode("latin-1")[:16]
    return bytes([0xC0 | len(data)]) + data


def _header(record_id: int, record_type: int, body: bytes) -> bytes:
    return struct.pack("<HBBB", record_id, SDR_VERSION, record_type, len(body)) + body


def full_record(record_id: int, sensor: Sensor) -> bytes:
    """A Full Sensor Record (table 43-1) for a threshold sensor: linear, y = M * raw."""
    t = sensor.thresholds
    assert t is not None and sensor.reading_on is not None
    mask = t.mask
    nominal = sensor.reading_on
    body = bytes(
        [
            BMC_ADDRESS, 0x00, sensor.number, sensor.entity, sensor.instance,
            0x7F,  # initialise scanning, events, thresholds, hysteresis, type; enabled
            0x47,  # auto re-arm, no hysteresis, thresholds readable, no event control
            sensor.sensor_type, THRESHOLD,
        ]
    )  # fmt: skip
    body += struct.pack("<HH", 0, 0)  # assertion / deassertion event masks: no events
    body += bytes([mask, mask])  # readable, settable threshold masks
    body += bytes([0x00, sensor.unit, 0x00, 0x00])  # unsigned; unit; linear
    body += bytes([sensor.multiplier & 0xFF, (sensor.multiplier >> 8) << 6])  # M, tolerance
    body += bytes([0x00, 0x00, 0x00, 0x00])  # B, accuracy, direction, R and B exponents
    body += bytes([0x01, nominal, 0xFF, 0x00, 0xFF, 0x00])  # nominal given; max, min
    body += bytes(v if v is not None else 0 for v in (t.unr, t.ucr, t.unc, t.lnr, t.lcr, t.lnc))
    body += bytes([0x00, 0x00, 0x00, 0x00, 0x00])  # hysteresis, reserved, OEM
    return _header(record_id, FULL_SENSOR, body + id_string(sensor.name))


def compact_record(record_id: int, sensor: Sensor) -> bytes:
    """A Compact Sensor Record (table 43-2) for a sensor-specific discrete sensor."""
    states = _DISCRETE_MASKS[sensor.number]
    body = bytes(
        [
            BMC_ADDRESS, 0x00, sensor.number, sensor.entity, sensor.instance,
            0x63,  # initialise scanning and events; enabled
            0x43,  # auto re-arm, no hysteresis, no thresholds, no event control
            sensor.sensor_type, SENSOR_SPECIFIC,
        ]
    )  # fmt: skip
    body += struct.pack("<HHH", states, states, states)  # assert, deassert, reading masks
    body += bytes([0x00, 0x00, 0x00])  # units: none
    body += bytes([0x01, 0x00])  # record sharing: one sensor
    body += bytes([0x00, 0x00, 0x00, 0x00, 0x00, 0x00])  # hysteresis, reserved, OEM
    return _header(record_id, COMPACT_SENSOR, body + id_string(sensor.name))


@functools.cache
def repository() -> tuple[bytes, ...]:
    """Every SDR, record IDs from 1 in SENSORS' order (the same for every BMC)."""
    return tuple(
        compact_record(i, s) if s.discrete else full_record(i, s)
        for i, s in enumerate(SENSORS, start=1)
    )


def discrete_state(sensor: Sensor, power: Power) -> int:
    """The asserted offsets of a discrete sensor now."""
    if sensor.number == 0x21:
        return 0x0001  # present, no failure
    if sensor.number == 0x30:
        return 0x0001 if power == "Off" else 0x0000
    if sensor.number == 0x31:
        return {"On": 0x0001, "Off": 0x0040}.get(power, 0x0080)
    return 0x0000


def reading(sensor: Sensor, power: Power) -> bytes:
    """Get Sensor Reading's reply data (table 35-15)."""
    if sensor.discrete:
        state = discrete_state(sensor, power)
        return bytes([0x00, 0xC0, state & 0xFF, 0x80 | (state >> 8) & 0x7F])
    assert sensor.thresholds is not None
    raw = sensor.reading_on if power == "On" else sensor.reading_off
    if raw is None:
        # Scanning stops with the main power: "reading unavailable", as IPMI has it.
        return bytes([0x00, 0xA0, 0xC0])
    return bytes([raw, 0xC0, 0xC0 | sensor.thresholds.status(raw)])


def thresholds_reply(sensor: Sensor) -> bytes:
    """Get Sensor Thresholds' reply data (table 35-9)."""
    t = sensor.thresholds
    if t is None:
        return bytes(7)
    values = (t.lnc, t.lcr, t.lnr, t.unc, t.ucr, t.unr)
    return bytes([t.mask, *(v if v is not None else 0 for v in values)])


__all__ = [
    "BY_NUMBER",
    "BY_TYPE",
    "SENSORS",
    "Sensor",
    "Thresholds",
    "compact_record",
    "discrete_state",
    "full_record",
    "reading",
    "repository",
    "thresholds_reply",
]
