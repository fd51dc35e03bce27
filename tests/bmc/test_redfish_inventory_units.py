"""The Redfish inventory's pure parts: resource builders and request-body checks."""

from __future__ import annotations

import datetime
from dataclasses import replace

import pytest

from tests.bmc.test_redfish_units import FACTS, IDENT
from vdc_runtime.bmc.events import EventLog
from vdc_runtime.bmc.redfish import inventory as inv
from vdc_runtime.bmc.redfish import resources as rs
from vdc_runtime.bmc.redfish.inventory_routes import (
    bios_error,
    bios_patch,
    secure_boot_patch,
    take_indicator,
)
from vdc_runtime.bmc.redfish.messages import RedfishError
from vdc_runtime.bmc.settings import BiosError, BmcSettings
from vdc_runtime.bmc.target import DriveFacts, SecureBootState

SYSTEM = "/redfish/v1/Systems/node-1"
FACTS_2 = replace(
    FACTS,
    sockets=2,
    cores=2,
    threads=2,
    cpus=8,
    memory_mib=40 * 1024,
    drives=(DriveFacts("root", 10 << 30, "VDC0123456789ABCDEF0"),),
    networks=("external", "bmc"),
)
IDENT_2 = rs.Identity(FACTS_2, "10.0.0.5", 443, "1.2.3")


def ids(error: RedfishError) -> list[str]:
    return [i["MessageId"].rsplit(".", 1)[1] for i in error.infos]


def test_dimms_follow_qemus_16_gib_devices() -> None:
    assert inv.dimm_sizes(512) == [512]
    assert inv.dimm_sizes(40 * 1024) == [16384, 16384, 8192]
    assert inv.dimm_sizes(32 * 1024) == [16384, 16384]
    members = inv.memory_collection(IDENT_2)["Members"]
    assert [m["@odata.id"] for m in members] == [f"{SYSTEM}/Memory/DIMM{n}" for n in range(3)]
    assert inv.dimm(IDENT_2, 2)["CapacityMiB"] == 8192


def test_processors_per_socket() -> None:
    assert inv.processors(IDENT_2)["Members@odata.count"] == 2
    cpu = inv.processor(IDENT_2, 2)
    assert (cpu["Id"], cpu["Socket"], cpu["TotalCores"], cpu["TotalThreads"]) == (
        "CPU2", "CPU 1", 2, 4,
    )  # fmt: skip
    summary = inv.system_properties(IDENT_2, BmcSettings(False))["ProcessorSummary"]
    assert (summary["Count"], summary["CoreCount"], summary["LogicalProcessorCount"]) == (2, 4, 8)


def test_drives_live_under_the_chassis_and_storage_links_them() -> None:
    (drive,) = FACTS_2.drives
    uri = "/redfish/v1/Chassis/node-1/Drives/root"
    assert inv.storage(IDENT_2)["Drives"] == [{"@odata.id": uri}]
    body = inv.drive(IDENT_2, drive)
    assert (body["@odata.id"], body["CapacityBytes"], body["SerialNumber"], body["MediaType"]) == (
        uri, 10 << 30, drive.serial, "SSD",
    )  # fmt: skip
    assert inv.simple_storage(IDENT_2)["Devices"][0]["CapacityBytes"] == 10 << 30


@pytest.mark.parametrize(
    ("power", "link", "speed"), [("On", "LinkUp", 10_000), ("Off", "LinkDown", 0)]
)
def test_nic_link_follows_the_power(power: str, link: str, speed: int) -> None:
    body = inv.nic_properties(IDENT_2, 2, power)  # type: ignore[arg-type]
    assert (body["LinkStatus"], body["SpeedMbps"]) == (link, speed)
    assert body["Description"] == "virtio-net NIC on network bmc"
    assert "Description" not in inv.nic_properties(IDENT, 1, power)  # type: ignore[arg-type]


def test_log_entries_are_expanded_and_shared() -> None:
    log = EventLog(lambda: 1_700_000_000.0)
    log.add("power-off", "power off")
    log.add("boot-hard-reset")
    entries = inv.log_entries(SYSTEM, inv.SYSTEM_LOG, log)
    first, second = entries["Members"]
    assert first == {
        "@odata.id": f"{SYSTEM}/LogServices/EventLog/Entries/1",
        "@odata.type": rs.odata_type("LogEntry"),
        "Id": "1",
        "Name": "Log Entry 1",
        "Created": "2023-11-14T22:13:20+00:00",
        "EntryType": "SEL",
        "Severity": "Warning",
        "Message": "The system was powered off. (power off)",
        "SensorType": "PowerUnit",
        "SensorNumber": 0x30,
        "EntryCode": "Assert",
    }
    assert second["SensorType"] == "SystemBoot/Restart"
    now = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
    service = inv.log_service(rs.MANAGERS + "/BMC", inv.MANAGER_LOG, log, now)
    assert service["Actions"]["#LogService.ClearLog"]["target"].endswith(
        "/SEL/Actions/LogService.ClearLog"
    )


def test_bios_and_its_pending_settings() -> None:
    settings = BmcSettings(uefi=True)
    settings.set_pending({"NumLock": "Off"})
    bios = inv.bios(IDENT, settings)
    assert bios["Attributes"]["BootMode"] == "Uefi" and bios["Attributes"]["NumLock"] == "On"
    assert bios["@Redfish.Settings"]["SettingsObject"] == {"@odata.id": f"{SYSTEM}/Bios/Settings"}
    assert inv.bios_settings(IDENT, settings.pending)["Attributes"] == {"NumLock": "Off"}


def test_secure_boot_follows_the_firmware() -> None:
    fields = ("SecureBootEnable", "SecureBootCurrentBoot", "SecureBootMode")

    def shown(enabled: bool, current: bool) -> list[object]:
        body = inv.secure_boot(IDENT, SecureBootState(enabled=enabled, current=current))
        return [body[k] for k in fields]

    assert shown(True, True) == [True, "Enabled", "UserMode"]
    assert shown(False, False) == [False, "Disabled", "SetupMode"]
    # Asked for, not yet booted: the firmware changes at the next reset.
    assert shown(True, False) == [True, "Disabled", "SetupMode"]
    pending = inv.secure_boot(IDENT, SecureBootState(enabled=False, current=True))
    assert pending["Description"].endswith("turned off at the next reset")
    legacy = inv.secure_boot(
        rs.Identity(replace(FACTS, uefi=False), "10.0.0.5", 443, "1"), SecureBootState()
    )
    assert "legacy BIOS" in legacy["Description"] and not legacy["SecureBootEnable"]


def test_body_checks() -> None:
    assert take_indicator({"LocationIndicatorActive": True, "Boot": {}}) == (True, {"Boot": {}})
    assert take_indicator({"IndicatorLED": "Off"}) == (False, {})
    assert take_indicator({"Boot": {}}) == (None, {"Boot": {}})
    with pytest.raises(RedfishError) as error:
        take_indicator({"IndicatorLED": "Disco"})
    assert ids(error.value) == ["PropertyValueNotInList"]

    assert bios_patch({"Attributes": {"A": "1"}, "@Redfish.SettingsApplyTime": {}}) == {"A": "1"}
    for body, expected in (
        ({}, ["PropertyMissing"]),
        ({"Attributes": []}, ["PropertyValueTypeError"]),
        ({"Attributes": {}}, ["NoOperation"]),
        ({"Attributes": {"A": "1"}, "Other": 1}, ["PropertyUnknown"]),
    ):
        with pytest.raises(RedfishError) as error:
            bios_patch(body)
        assert ids(error.value) == expected, body
    assert ids(bios_error(BiosError("read-only", "BootMode", "Bios"))) == ["PropertyNotWritable"]

    capable = replace(FACTS, secure_boot_capable=True)
    assert secure_boot_patch({"SecureBootEnable": True}, capable) is True
    assert secure_boot_patch({"SecureBootEnable": False}, capable) is False
    assert secure_boot_patch({"SecureBootEnable": False}, FACTS) is False
    for body, expected in (
        ({"SecureBootEnable": True}, ["PropertyValueNotInList"]),
        ({"SecureBootEnable": "yes"}, ["PropertyValueTypeError"]),
        ({"SecureBootMode": "UserMode"}, ["PropertyNotWritable"]),
        ({}, ["NoOperation"]),
    ):
        with pytest.raises(RedfishError) as error:
            secure_boot_patch(body, FACTS)
        assert ids(error.value) == expected, body
