"""What inventory and monitoring tools read over IPMI, from a real guest's BMC: the SEL,
the SDR with its sensors, the FRU and chassis identify, with ipmitool and FreeIPMI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bmc.conftest import VIEWER
from tests.bmc.test_ipmi import Bmc, freeipmi, ipmitool, wait_until
from tests.guest.build import GuestPaths

pytestmark = pytest.mark.slow


class InventoryBmc(Bmc):
    node = "inv-node"
    smbios = "  manufacturer: Acme Servers\n  product: R-1000 Rack\n"


@pytest.fixture(scope="module")
def bmc(guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bmc]:
    running = InventoryBmc(guest, tmp_path_factory.mktemp("ipmi-inv"))
    try:
        running.wait_console("VDC-GUEST-READY")
        yield running
    finally:
        running.close()


@pytest.fixture
def cache(tmp_path: Path) -> tuple[str, ...]:
    """FreeIPMI's SDR cache in tmp, made afresh: never the user's ~/.freeipmi."""
    return ("--sdr-cache-directory", str(tmp_path), "--sdr-cache-recreate", "--quiet-cache")


def sel_events(bmc: Bmc) -> list[str]:
    """`ipmitool sel list` as (sensor type, event) text, oldest first."""
    lines = ipmitool(bmc, "sel", "list").strip().splitlines()
    return [" | ".join(c.strip() for c in line.split("|")[3:5]) for line in lines if "|" in line]


def booted_again(bmc: Bmc, before: int) -> None:
    wait_until(lambda: bmc.ready_count() > before, "the guest to boot again")


def test_sel_records_power_and_boot_events_and_clears(bmc: Bmc, cache: tuple[str, ...]) -> None:
    ipmitool(bmc, "sel", "clear")
    assert sel_events(bmc) == ["Event Logging Disabled #0x33 | Log area reset/cleared"]

    boots = bmc.ready_count()
    ipmitool(bmc, "power", "reset")
    booted_again(bmc, boots)
    ipmitool(bmc, "power", "off")
    wait_until(lambda: bmc.power() == "Off", "power off")
    boots = bmc.ready_count()
    ipmitool(bmc, "power", "on")
    booted_again(bmc, boots)

    assert sel_events(bmc) == [
        "Event Logging Disabled #0x33 | Log area reset/cleared",
        "System Boot Initiated #0x32 | Initiated by hard reset",
        "Power Unit #0x30 | Power off/down",
        "System ACPI Power State #0x31 | S0/G0: working",
        "System Boot Initiated #0x32 | Initiated by power up",
    ]
    info = ipmitool(bmc, "sel", "info")
    assert "Entries          : 5" in info and "Overflow         : false" in info
    assert "Last Del Time    : Not Available" not in info

    freeipmi_sel = freeipmi(bmc, "ipmi-sel", *cache)
    for text in ("Log Area Reset/Cleared", "Initiated by hard reset", "Power Off/Power Down",
                 "S0/G0", "Initiated by power up"):  # fmt: skip
        assert text in freeipmi_sel, freeipmi_sel
    assert freeipmi_sel.count("System Boot Initiated") == 2  # one event per boot

    # A ReadOnly account reads the log but may not clear it.
    viewer = {"user": VIEWER, "extra": ("-L", "USER")}
    assert "Entries          : 5" in ipmitool(bmc, "sel", "info", **viewer)
    refused = ipmitool(bmc, "sel", "clear", check=False, **viewer)
    assert "Insufficient privilege" in refused, refused
    assert len(sel_events(bmc)) == 5

    ipmitool(bmc, "sel", "clear")
    assert sel_events(bmc) == ["Event Logging Disabled #0x33 | Log area reset/cleared"]
    assert "Entries          : 1" in ipmitool(bmc, "sel", "info")


def test_sel_time_set_moves_the_bmc_clock_for_both_clients(bmc: Bmc) -> None:
    # ipmitool reads the time in the locale's %x %X: a two-digit year in the C locale.
    ipmitool(bmc, "sel", "time", "set", "06/15/31 12:00:00")
    assert ipmitool(bmc, "sel", "time", "get").startswith("06/15/31 12:0")
    ipmitool(bmc, "sel", "clear")
    (cleared,) = ipmitool(bmc, "sel", "list").strip().splitlines()
    assert "06/15/31 | 12:0" in cleared, cleared
    assert "2031" in freeipmi(bmc, "bmc-device", "--get-sel-time")

    viewer = {"user": VIEWER, "extra": ("-L", "USER")}
    refused = ipmitool(bmc, "sel", "time", "set", "01/01/20 00:00:00", check=False, **viewer)
    assert "Insufficient privilege" in refused, refused

    ipmitool(bmc, "sel", "time", "set", "now")
    assert "/31 " not in ipmitool(bmc, "sel", "time", "get")


def sdr_rows(bmc: Bmc) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in ipmitool(bmc, "sdr", "list").strip().splitlines():
        name, value, status = (c.strip() for c in line.split("|"))
        rows[name] = (value, status)
    return rows


def test_sensors_follow_the_power_state(bmc: Bmc, cache: tuple[str, ...]) -> None:
    rows = sdr_rows(bmc)
    assert rows["Inlet Temp"] == ("23 degrees C", "ok")
    assert rows["CPU Temp"] == ("41 degrees C", "ok")
    assert rows["Fan1"] == ("5400 RPM", "ok")
    assert rows["PS1 Input Power"] == ("144 Watts", "ok")
    assert rows["PS1 Status"][1] == "ok"

    fan = ipmitool(bmc, "sensor", "get", "Fan1")
    assert "Lower Critical        : 300.000" in fan and "Status                : ok" in fan
    sensors = freeipmi(bmc, "ipmi-sensors", *cache)
    assert any(
        "CPU Temp" in line and "41.00" in line and "'OK'" in line for line in sensors.splitlines()
    ), sensors

    ipmitool(bmc, "power", "off")
    wait_until(lambda: bmc.power() == "Off", "power off")
    try:
        rows = sdr_rows(bmc)
        # On main power: no reading while off; the inlet and the supply's standby still read.
        assert rows["CPU Temp"][1] == rows["Fan1"][1] == "ns"
        assert rows["Inlet Temp"] == ("22 degrees C", "ok")
        assert rows["PS1 Input Power"] == ("10 Watts", "ok")
        sensors = freeipmi(bmc, "ipmi-sensors", *cache)
        lines = {line.split("|")[1].strip(): line for line in sensors.splitlines()[1:]}
        assert "N/A" in lines["Fan1"] and "'Power Off/Power Down'" in lines["Power Unit"]
        assert "soft-off" in lines["ACPI State"]
    finally:
        boots = bmc.ready_count()
        ipmitool(bmc, "power", "on")
        booted_again(bmc, boots)
    assert "'Power Off/Power Down'" not in freeipmi(bmc, "ipmi-sensors", *cache)


def test_fru_carries_the_smbios_strings(bmc: Bmc, cache: tuple[str, ...]) -> None:
    fru = ipmitool(bmc, "fru", "print")
    assert "Builtin FRU Device (ID 0)" in fru
    for line in (
        "Product Manufacturer  : Acme Servers",
        "Product Name          : R-1000 Rack",
        "Product Serial        : SERIAL-inv-node",
        "Board Mfg             : Acme Servers",
        "Chassis Serial        : SERIAL-inv-node",
    ):
        assert line in fru, fru
    fru = freeipmi(bmc, "ipmi-fru", *cache)
    assert "FRU Product Manufacturer Name: Acme Servers" in fru
    assert "FRU Product Serial Number: SERIAL-inv-node" in fru


def test_chassis_identify(bmc: Bmc) -> None:
    def state() -> str:
        status = freeipmi(bmc, "ipmi-chassis", "--get-chassis-status")
        return next(
            line.split(":", 1)[1].strip()
            for line in status.splitlines()
            if line.startswith("Chassis Identify state")
        )

    assert "interval: 60 seconds" in ipmitool(bmc, "chassis", "identify", "60")
    assert bmc.target.settings.indicator == "Blinking"
    assert state() == "Timed on"
    ipmitool(bmc, "chassis", "identify", "force")
    assert state() == "Indefinite on"
    ipmitool(bmc, "chassis", "identify", "0")
    assert state() == "off" and bmc.target.settings.indicator == "Off"


def test_device_id_names_the_devices_and_both_clients_still_read_it(bmc: Bmc) -> None:
    info = ipmitool(bmc, "mc", "info")
    for device in ("Sensor Device", "SDR Repository Device", "SEL Device",
                   "FRU Inventory Device", "Chassis Device"):  # fmt: skip
        assert device in info
    info = freeipmi(bmc, "bmc-info")
    assert "SEL Device            : supported" in info
    assert "Chassis Device        : supported" in info
