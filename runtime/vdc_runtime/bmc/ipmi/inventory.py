"""IPMI commands that inventory and monitoring tools send: SEL, SDR, sensors, FRU and
chassis identify (`ipmitool sel|sdr|sensor|fru`, FreeIPMI's ipmi-sel, ipmi-sensors,
ipmi-fru). `commands.Commands` owns one `Inventory` and routes these commands to it.
"""

from __future__ import annotations

import logging
import struct

from vdc_runtime.bmc.ipmi import codec, fru, sdr, sel
from vdc_runtime.bmc.target import BmcTarget

log = logging.getLogger("vdc.bmc.ipmi")

NETFN_SENSOR = 0x04
NETFN_STORAGE = 0x0A

RECORD_NOT_PRESENT = 0xCB
INVALID_RESERVATION = 0xC5
DEFAULT_IDENTIFY_SECONDS = 15
ERASE_COMPLETED = 0x01


class Inventory:
    """The storage and sensor commands of one BMC, and their reservations."""

    def __init__(self, target: BmcTarget) -> None:
        self.target = target
        self._fru = fru.inventory(target.facts)
        self._sdrs = sdr.repository()
        self._sel_reservation = 0
        self._sdr_reservation = 0

    # -- chassis identify --------------------------------------------------------------------

    async def chassis_identify(self, data: bytes) -> tuple[int, bytes]:
        """Table 28-5: interval in seconds (default 15, 0 turns it off); force = on until
        told otherwise."""
        interval = data[0] if data else DEFAULT_IDENTIFY_SECONDS
        forever = len(data) > 1 and bool(data[1] & 0x01)
        self.target.settings.identify(None if forever else interval)
        log.info(
            "node %s: IPMI chassis identify %s",
            self.target.facts.name,
            "on" if forever else f"for {interval} s",
        )
        return codec.OK, b""

    def identify_state(self) -> int:
        """Chassis status bits 5:4 of byte 3, with bit 6 saying they are valid."""
        settings = self.target.settings
        if settings.indicator == "Off":
            state = 0b00
        elif settings.identify_forever:
            state = 0b10
        else:
            state = 0b01
        return 0x40 | state << 4

    # -- SEL ---------------------------------------------------------------------------------

    async def get_sel_info(self, data: bytes) -> tuple[int, bytes]:
        return codec.OK, sel.info(self.target.events)

    async def reserve_sel(self, data: bytes) -> tuple[int, bytes]:
        self._sel_reservation = self._sel_reservation % 0xFFFF + 1
        return codec.OK, struct.pack("<H", self._sel_reservation)

    async def get_sel_entry(self, data: bytes) -> tuple[int, bytes]:
        reservation, record_id = struct.unpack("<HH", data[:4])
        offset, count = data[4], data[5]
        if offset and reservation != self._sel_reservation:
            return INVALID_RESERVATION, b""
        found = sel.entry(self.target.events, record_id)
        if found is None:
            return RECORD_NOT_PRESENT, b""
        following, record = found
        end = len(record) if count == 0xFF else offset + count
        return codec.OK, struct.pack("<H", following) + record[offset:end]

    async def clear_sel(self, data: bytes) -> tuple[int, bytes]:
        reservation = struct.unpack("<H", data[:2])[0]
        if data[2:5] != b"CLR":
            return codec.INVALID_DATA_FIELD, b""
        if reservation != self._sel_reservation:
            return INVALID_RESERVATION, b""
        if data[5] == 0xAA:
            self.target.events.clear("IPMI Clear SEL")
            log.info("node %s: IPMI cleared the SEL", self.target.facts.name)
        return codec.OK, bytes([ERASE_COMPLETED])

    async def get_sel_time(self, data: bytes) -> tuple[int, bytes]:
        return codec.OK, struct.pack("<I", int(self.target.events.now()) & 0xFFFFFFFF)

    async def set_sel_time(self, data: bytes) -> tuple[int, bytes]:
        if len(data) != 4:
            return codec.REQUEST_DATA_LENGTH_INVALID, b""
        seconds = struct.unpack("<I", data)[0]
        self.target.events.set_time(seconds)
        log.info("node %s: IPMI set the BMC's clock to %d", self.target.facts.name, seconds)
        return codec.OK, b""

    # -- SDR repository and sensors ----------------------------------------------------------

    async def get_sdr_repository_info(self, data: bytes) -> tuple[int, bytes]:
        # The records never change: no addition or erase time to report.
        return codec.OK, struct.pack(
            "<BHHIIB", sdr.SDR_VERSION, len(self._sdrs), 0, 0xFFFFFFFF, 0xFFFFFFFF, 0x22
        )

    async def reserve_sdr_repository(self, data: bytes) -> tuple[int, bytes]:
        self._sdr_reservation = self._sdr_reservation % 0xFFFF + 1
        return codec.OK, struct.pack("<H", self._sdr_reservation)

    async def get_sdr(self, data: bytes) -> tuple[int, bytes]:
        reservation, record_id = struct.unpack("<HH", data[:4])
        offset, count = data[4], data[5]
        if offset and reservation != self._sdr_reservation:
            return INVALID_RESERVATION, b""
        index = len(self._sdrs) - 1 if record_id == 0xFFFF else max(record_id, 1) - 1
        if not 0 <= index < len(self._sdrs):
            return RECORD_NOT_PRESENT, b""
        record = self._sdrs[index]
        following = index + 2 if index + 1 < len(self._sdrs) else 0xFFFF
        end = len(record) if count == 0xFF else offset + count
        return codec.OK, struct.pack("<H", following) + record[offset:end]

    def _sensor(self, data: bytes) -> sdr.Sensor | None:
        return sdr.BY_NUMBER.get(data[0])

    async def get_sensor_reading(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data)
        if sensor is None:
            return RECORD_NOT_PRESENT, b""
        power = await self.target.power_state()
        return codec.OK, sdr.reading(sensor, power)  # type: ignore[arg-type]

    async def get_sensor_thresholds(self, data: bytes) -> tuple[int, bytes]:
        sensor = self._sensor(data)
        if sensor is None:
            return RECORD_NOT_PRESENT, b""
        return codec.OK, sdr.thresholds_reply(sensor)

    async def get_sensor_hysteresis(self, data: bytes) -> tuple[int, bytes]:
        if self._sensor(data) is None:
            return RECORD_NOT_PRESENT, b""
        return codec.OK, bytes([0, 0])

    async def get_sensor_event_enable(self, data: bytes) -> tuple[int, bytes]:
        if self._sensor(data) is None:
            return RECORD_NOT_PRESENT, b""
        return codec.OK, bytes([0xC0, 0, 0, 0, 0])  # events and scanning on; no event bits

    # -- FRU ---------------------------------------------------------------------------------

    async def get_fru_area_info(self, data: bytes) -> tuple[int, bytes]:
        if data[0] != 0:
            return RECORD_NOT_PRESENT, b""
        return codec.OK, struct.pack("<HB", len(self._fru), 0x00)  # accessed by bytes

    async def read_fru_data(self, data: bytes) -> tuple[int, bytes]:
        if data[0] != 0:
            return RECORD_NOT_PRESENT, b""
        offset = struct.unpack("<H", data[1:3])[0]
        count = data[3]
        if offset >= len(self._fru):
            return codec.PARAMETER_OUT_OF_RANGE, b""
        chunk = self._fru[offset : offset + count]
        return codec.OK, bytes([len(chunk)]) + chunk


# (netfn, command) -> (privilege, Inventory method name)
COMMANDS: dict[tuple[int, int], tuple[int, str]] = {
    (codec.NETFN_CHASSIS, 0x04): (codec.OPERATOR, "chassis_identify"),
    (NETFN_SENSOR, 0x25): (codec.USER, "get_sensor_hysteresis"),
    (NETFN_SENSOR, 0x27): (codec.USER, "get_sensor_thresholds"),
    (NETFN_SENSOR, 0x29): (codec.USER, "get_sensor_event_enable"),
    (NETFN_SENSOR, 0x2D): (codec.USER, "get_sensor_reading"),
    (NETFN_STORAGE, 0x10): (codec.USER, "get_fru_area_info"),
    (NETFN_STORAGE, 0x11): (codec.USER, "read_fru_data"),
    (NETFN_STORAGE, 0x20): (codec.USER, "get_sdr_repository_info"),
    (NETFN_STORAGE, 0x22): (codec.USER, "reserve_sdr_repository"),
    (NETFN_STORAGE, 0x23): (codec.USER, "get_sdr"),
    (NETFN_STORAGE, 0x40): (codec.USER, "get_sel_info"),
    (NETFN_STORAGE, 0x42): (codec.USER, "reserve_sel"),
    (NETFN_STORAGE, 0x43): (codec.USER, "get_sel_entry"),
    (NETFN_STORAGE, 0x47): (codec.OPERATOR, "clear_sel"),
    (NETFN_STORAGE, 0x48): (codec.USER, "get_sel_time"),
    (NETFN_STORAGE, 0x49): (codec.OPERATOR, "set_sel_time"),
}


__all__ = ["COMMANDS", "Inventory"]
