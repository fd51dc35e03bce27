"""The BMC's event log, settings and IPMI inventory encodings, as pure functions."""

from __future__ import annotations

import struct

import pytest

from vdc_runtime.bmc.events import EventLog, power_event
from vdc_runtime.bmc.ipmi import fru, sdr, sel
from vdc_runtime.bmc.machine_target import drive_serial, topology, virtual_size
from vdc_runtime.bmc.settings import BiosError, BmcSettings
from vdc_runtime.bmc.target import SystemFacts
from vdc_runtime.spec import load_text

FACTS = SystemFacts(
    name="node-1",
    serial="SER-1",
    uuid="0d8f4c0e-7b51-5d3e-9a35-5c1b0f3b2a11",
    manufacturer="Acme",
    model="Rack 1U",
    memory_mib=3072,
    cpus=4,
    uefi=False,
    tpm=False,
    macs=(),
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_event_log_ids_capacity_and_clear() -> None:
    clock = Clock()
    log = EventLog(clock, capacity=3)
    for kind in ("power-on", "boot-power-up", "power-off", "power-on"):
        clock.now += 1
        log.add(kind)  # type: ignore[arg-type]
    assert [e.record_id for e in log.entries()] == [2, 3, 4]  # the oldest went
    assert log.overflowed and log.last_addition == clock.now and log.last_erase is None
    clock.now += 10
    log.clear("IPMI Clear SEL")
    (only,) = log.entries()
    assert only.kind == "log-cleared" and only.record_id == 5
    assert log.last_erase == clock.now and not log.overflowed
    assert only.message == "The event log was cleared. (IPMI Clear SEL)"


def test_the_bmc_clock_moves_where_set_and_keeps_running() -> None:
    clock = Clock()
    log = EventLog(clock)
    early = log.add("power-on")
    log.set_time(1_900_000_000)
    assert log.now() == 1_900_000_000
    clock.now += 5
    assert log.now() == 1_900_000_005
    assert log.now_utc().timestamp() == 1_900_000_005
    late = log.add("power-off")
    # Entries already made keep their time, as a real SEL's do.
    assert (early.time, late.time) == (1_700_000_000, 1_900_000_005)
    log.clear()
    assert log.last_erase == 1_900_000_005


@pytest.mark.parametrize(
    ("power", "cause", "kind"),
    [
        ("On", "power on", "power-on"),
        ("Off", "power off", "power-off"),
        ("Off", "restart", "power-cycle"),
        ("Off", "guest shut down (guest-shutdown)", "soft-off"),
        ("Unknown", "qemu gone", None),
    ],
)
def test_power_events(power: str, cause: str, kind: str | None) -> None:
    assert power_event(power, cause) == kind


def test_sel_record_and_info() -> None:
    clock = Clock()
    log = EventLog(clock)
    log.add("boot-hard-reset")
    record = sel.record(log.entries()[0])
    assert record == struct.pack(
        "<HBIBBBBBBBBB", 1, 0x02, 1_700_000_000, 0x20, 0, 0x04, 0x1D, 0x32, 0x6F, 0x01, 0xFF, 0xFF
    )
    version, count, free, added, erased, support = struct.unpack("<BHHIIB", sel.info(log))
    assert (version, count, added, erased, support) == (0x51, 1, 1_700_000_000, 0xFFFFFFFF, 0x02)
    assert free == 511 * 16


def test_sel_entry_walk() -> None:
    log = EventLog(Clock())
    assert sel.entry(log, 0) is None
    for kind in ("power-off", "power-on", "boot-power-up"):
        log.add(kind)  # type: ignore[arg-type]
    following, first = sel.entry(log, 0)  # type: ignore[misc]
    assert following == 2 and first[:2] == b"\x01\x00"
    assert sel.entry(log, 3)[0] == 0xFFFF  # type: ignore[index]
    assert sel.entry(log, 0xFFFF)[1][:2] == b"\x03\x00"  # type: ignore[index]
    assert sel.entry(log, 9) is None


def test_every_event_kind_has_a_sensor_in_the_sdr() -> None:
    for sensor_type, _offset in sel.EVENT_CODES.values():
        assert sdr.BY_TYPE[sensor_type].discrete


def test_sdr_records_are_consistent() -> None:
    records = sdr.repository()
    assert len(records) == len(sdr.SENSORS)
    for record_id, (record, sensor) in enumerate(zip(records, sdr.SENSORS, strict=True), 1):
        rid, version, kind, length = struct.unpack("<HBBB", record[:5])
        assert (rid, version, len(record) - 5) == (record_id, 0x51, length)
        name = sensor.name.encode()
        assert record.endswith(bytes([0xC0 | len(name)]) + name)
        if kind == sdr.FULL_SENSOR:
            assert length == 43 + len(name) and record[7] == sensor.number
        else:
            assert kind == sdr.COMPACT_SENSOR and length == 27 + len(name)


def test_sensor_readings_follow_power() -> None:
    cpu, inlet, power_unit = sdr.BY_NUMBER[0x02], sdr.BY_NUMBER[0x01], sdr.BY_NUMBER[0x30]
    assert sdr.reading(cpu, "On") == bytes([41, 0xC0, 0xC0])
    assert sdr.reading(cpu, "Off")[1] & 0x20  # reading unavailable
    assert sdr.reading(inlet, "Off")[0] == 22
    assert sdr.reading(power_unit, "Off")[2] == 0x01  # power off/down asserted
    assert sdr.reading(power_unit, "On")[2] == 0x00


def test_threshold_status() -> None:
    t = sdr.Thresholds(lnc=10, lcr=5, unc=80, ucr=90)
    assert t.mask == 0b011011
    assert t.status(50) == 0
    assert t.status(4) == 0b011  # at or below LNC and LCR
    assert t.status(85) == 0b1000


def test_fru_areas_and_checksums() -> None:
    image = fru.inventory(FACTS)
    header = image[:8]
    assert sum(header) % 256 == 0 and header[0] == 1
    for offset in header[2:5]:
        start = offset * 8
        length = image[start + 1] * 8
        assert sum(image[start : start + length]) % 256 == 0
    assert b"Acme" in image and b"SER-1" in image and b"Rack 1U" in image
    assert fru.field("X") == b"\xc2X "  # C1h would end the fields


def test_settings_identify_and_bios() -> None:
    clock = Clock()
    settings = BmcSettings(uefi=True, clock=clock)
    settings.identify(15)
    assert settings.indicator == "Blinking" and not settings.identify_forever
    clock.now += 16
    assert settings.indicator == "Off"
    settings.identify(None)
    clock.now += 10_000
    assert settings.indicator == "Blinking" and settings.identify_forever

    assert settings.bios["BootMode"] == "Uefi"
    settings.set_pending({"ProcVirtualization": "Disabled", "BootMode": "Uefi"})
    assert settings.bios["ProcVirtualization"] == "Enabled"
    with pytest.raises(BiosError) as error:
        settings.set_pending({"NumLock": "Off", "BootMode": "Bios"})
    assert error.value.kind == "read-only"
    assert "NumLock" not in settings.pending  # nothing of a bad request is kept
    for bad, kind in (({"Nope": "1"}, "unknown"), ({"NumLock": "Maybe"}, "value"),
                      ({"AssetTag": "x" * 65}, "value"), ({"NumLock": 1}, "value")):  # fmt: skip
        with pytest.raises(BiosError) as error:
            settings.set_pending(bad)
        assert error.value.kind == kind
    assert settings.apply_pending() == {"ProcVirtualization": "Disabled", "BootMode": "Uefi"}
    assert settings.bios["ProcVirtualization"] == "Disabled" and not settings.pending
    settings.reset_bios()
    settings.apply_pending()
    assert settings.bios["ProcVirtualization"] == "Enabled"


def node(smp: str) -> object:
    return load_text(f"kind: Node\nname: n\n{smp}").nodes[0]


@pytest.mark.parametrize(
    ("smp", "expected"),
    [
        ("cpu: 4", (4, 1, 1)),
        ("smp: {cpus: 4}", (4, 1, 1)),
        ("smp: {cpus: 8, sockets: 2}", (2, 4, 1)),
        ("smp: {cpus: 8, cores: 2, threads: 2}", (2, 2, 2)),
        ("smp: {cpus: 8, sockets: 2, cores: 2, threads: 2}", (2, 2, 2)),
        ("smp: {cpus: 4, threads: 2}", (2, 1, 2)),
        ("smp: {cpus: 4, maxcpus: 8, cores: 4}", (2, 4, 1)),
    ],
)
def test_topology(smp: str, expected: tuple[int, int, int]) -> None:
    assert topology(node(smp)) == expected  # type: ignore[arg-type]


def test_virtual_size_and_drive_serial() -> None:
    qcow2 = b"QFI\xfb" + bytes(20) + struct.pack(">Q", 10 << 30)
    assert virtual_size(qcow2, 200_000) == 10 << 30
    assert virtual_size(b"\0" * 32, 1 << 20) == 1 << 20
    # A raw drive is raw: what its guest wrote at the start does not change its size.
    assert virtual_size(qcow2, 200_000, "raw") == 200_000
    assert virtual_size(qcow2, 200_000, "qcow2") == 10 << 30
    serial = drive_serial("node-1", "root")
    assert len(serial) <= 20 and serial == drive_serial("node-1", "root")
    assert serial != drive_serial("node-2", "root")
