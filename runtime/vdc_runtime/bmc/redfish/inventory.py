"""The Redfish inventory a provisioner inspects, as pure functions of what the BMC knows.

Processors and DIMMs follow the node's -smp and -m as QEMU lays them out for the guest
(its SMBIOS shows the same sockets and 16 GiB "DIMM n" devices), a Drive per volume, the
NICs with their link, the BIOS setup with its pending settings, Secure Boot, the event
log (the same one IPMI reads as the SEL), the chassis sensors (IPMI's SDR sensors) and
the identify light. `inventory_routes` serves them.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from vdc_runtime.bmc.events import Event, EventLog
from vdc_runtime.bmc.ipmi import sdr
from vdc_runtime.bmc.ipmi.sel import EVENT_CODES
from vdc_runtime.bmc.redfish.resources import Identity, collection, link, odata_type, segment
from vdc_runtime.bmc.settings import BmcSettings
from vdc_runtime.bmc.target import DriveFacts, PowerState, SecureBootState

Json = dict[str, Any]

CPU_MODEL = "QEMU Virtual CPU"
MAX_DIMM_MIB = 16 * 1024  # QEMU's SMBIOS splits the RAM into devices of 16 GiB at most
NIC_SPEED_MBPS = 10_000
STORAGE_ID = "1"
BLOCK_SIZE = 512
SYSTEM_LOG = "EventLog"
MANAGER_LOG = "SEL"
ENABLED = {"State": "Enabled", "Health": "OK"}
RESET_TO_DEFAULTS_TYPES = ("ResetAll", "PreserveNetworkAndUsers", "PreserveNetwork")

# IPMI sensor types as Redfish's LogEntry.SensorType spells them.
LOG_SENSOR_TYPES = {
    sdr.POWER_UNIT: "PowerUnit",
    sdr.SYSTEM_BOOT: "SystemBoot/Restart",
    sdr.ACPI_POWER_STATE: "System ACPI PowerState",
    sdr.EVENT_LOGGING: "Event Logging Disabled",
}


def _timestamp(value: float) -> str:
    return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat(timespec="seconds")


# -- the system's own properties ------------------------------------------------------------


def system_properties(ident: Identity, settings: BmcSettings) -> Json:
    """What the inventory adds to the ComputerSystem resource."""
    facts, uri = ident.facts, ident.system_uri
    return {
        "ProcessorSummary": {
            "Count": facts.sockets,
            "CoreCount": facts.sockets * facts.cores,
            "LogicalProcessorCount": facts.cpus,
            "Model": CPU_MODEL,
        },
        "MemorySummary": {"TotalSystemMemoryGiB": round(facts.memory_mib / 1024, 3)},
        "LocationIndicatorActive": settings.indicator != "Off",
        "BiosVersion": "vdc",
        "Processors": link(f"{uri}/Processors"),
        "Memory": link(f"{uri}/Memory"),
        "Storage": link(f"{uri}/Storage"),
        "SimpleStorage": link(f"{uri}/SimpleStorage"),
        "Bios": link(f"{uri}/Bios"),
        "SecureBoot": link(f"{uri}/SecureBoot"),
        "LogServices": link(f"{uri}/LogServices"),
    }


def chassis_properties(ident: Identity, settings: BmcSettings) -> Json:
    return {
        "LocationIndicatorActive": settings.indicator != "Off",
        "Sensors": link(f"{ident.chassis_uri}/Sensors"),
        "Drives": link(f"{ident.chassis_uri}/Drives"),
    }


def manager_with_inventory(body: Json, ident: Identity) -> Json:
    """The Manager resource with its log and its ResetToDefaults action."""
    uri = ident.manager_uri
    actions = dict(body.get("Actions", {}))
    actions["#Manager.ResetToDefaults"] = {
        "target": f"{uri}/Actions/Manager.ResetToDefaults",
        "ResetType@Redfish.AllowableValues": list(RESET_TO_DEFAULTS_TYPES),
    }
    return {**body, "LogServices": link(f"{uri}/LogServices"), "Actions": actions}


# -- processors and memory ---------------------------------------------------------------------


def processors(ident: Identity) -> Json:
    uri = f"{ident.system_uri}/Processors"
    members = [f"{uri}/CPU{n}" for n in range(1, ident.facts.sockets + 1)]
    return collection("ProcessorCollection", uri, "Processors Collection", members)


def processor(ident: Identity, socket: int) -> Json:
    facts = ident.facts
    return {
        "@odata.id": f"{ident.system_uri}/Processors/CPU{socket}",
        "@odata.type": odata_type("Processor"),
        "Id": f"CPU{socket}",
        "Name": f"Processor {socket}",
        "Socket": f"CPU {socket - 1}",  # QEMU's SMBIOS names sockets from 0
        "ProcessorType": "CPU",
        "ProcessorArchitecture": "x86",
        "InstructionSet": "x86-64",
        "Manufacturer": "QEMU",
        "Model": CPU_MODEL,
        "TotalCores": facts.cores,
        "TotalEnabledCores": facts.cores,
        "TotalThreads": facts.cores * facts.threads,
        "Status": ENABLED,
    }


def dimm_sizes(memory_mib: int) -> list[int]:
    """The guest's memory devices: 16 GiB each, the last one holding the rest."""
    full, rest = divmod(memory_mib, MAX_DIMM_MIB)
    return [MAX_DIMM_MIB] * full + ([rest] if rest else [])


def memory_collection(ident: Identity) -> Json:
    uri = f"{ident.system_uri}/Memory"
    count = len(dimm_sizes(ident.facts.memory_mib))
    members = [f"{uri}/DIMM{n}" for n in range(count)]
    return collection("MemoryCollection", uri, "Memory Collection", members)


def dimm(ident: Identity, number: int) -> Json:
    size = dimm_sizes(ident.facts.memory_mib)[number]
    return {
        "@odata.id": f"{ident.system_uri}/Memory/DIMM{number}",
        "@odata.type": odata_type("Memory"),
        "Id": f"DIMM{number}",
        "Name": f"DIMM {number}",
        "Location": {"PartLocation": {"ServiceLabel": f"DIMM {number}", "LocationType": "Slot"}},
        "MemoryType": "DRAM",
        "BaseModuleType": "RDIMM",
        "CapacityMiB": size,
        "DataWidthBits": 64,
        "BusWidthBits": 64,
        "Manufacturer": "QEMU",
        "MemoryLocation": {"Socket": 0, "Channel": 0, "Slot": number},
        "Status": ENABLED,
    }


# -- storage -------------------------------------------------------------------------------


def drive_uri(ident: Identity, drive: DriveFacts) -> str:
    # Under the chassis, where Redfish keeps drives since Storage 1.x deprecated its own.
    return f"{ident.chassis_uri}/Drives/{segment(drive.name)}"


def drives(ident: Identity) -> Json:
    uri = f"{ident.chassis_uri}/Drives"
    members = [drive_uri(ident, d) for d in ident.facts.drives]
    return collection("DriveCollection", uri, "Drive Collection", members)


def storage_collection(ident: Identity) -> Json:
    uri = f"{ident.system_uri}/Storage"
    return collection("StorageCollection", uri, "Storage Collection", [f"{uri}/{STORAGE_ID}"])


def storage(ident: Identity) -> Json:
    drives = [drive_uri(ident, d) for d in ident.facts.drives]
    return {
        "@odata.id": f"{ident.system_uri}/Storage/{STORAGE_ID}",
        "@odata.type": odata_type("Storage"),
        "Id": STORAGE_ID,
        "Name": "virtio block storage",
        "Description": "The node's disks: one virtio-blk device per volume",
        "Drives": [link(d) for d in drives],
        "Drives@odata.count": len(drives),
        "Volumes": link(f"{ident.system_uri}/Storage/{STORAGE_ID}/Volumes"),
        "Status": ENABLED,
    }


def volume_uri(ident: Identity, drive: DriveFacts) -> str:
    return f"{ident.system_uri}/Storage/{STORAGE_ID}/Volumes/{segment(drive.name)}"


def volumes(ident: Identity) -> Json:
    """A volume per drive, as the guest sees its disks: no RAID in between (Ironic sizes the
    root disk from these)."""
    uri = f"{ident.system_uri}/Storage/{STORAGE_ID}/Volumes"
    members = [volume_uri(ident, d) for d in ident.facts.drives]
    return collection("VolumeCollection", uri, "Volume Collection", members)


def volume(ident: Identity, facts: DriveFacts) -> Json:
    return {
        "@odata.id": volume_uri(ident, facts),
        "@odata.type": odata_type("Volume"),
        "Id": facts.name,
        "Name": facts.name,
        "CapacityBytes": facts.size_bytes,
        "BlockSizeBytes": BLOCK_SIZE,
        "RAIDType": "None",
        "Encrypted": False,
        "Links": {"Drives": [link(drive_uri(ident, facts))]},
        "Status": ENABLED,
    }


def drive(ident: Identity, facts: DriveFacts) -> Json:
    return {
        "@odata.id": drive_uri(ident, facts),
        "@odata.type": odata_type("Drive"),
        "Id": facts.name,
        "Name": facts.name,
        "Description": f"Volume {facts.name}",
        "CapacityBytes": facts.size_bytes,
        "BlockSizeBytes": BLOCK_SIZE,
        # virtio-blk reports no rotation: the guest's kernel sees a solid-state disk.
        "MediaType": "SSD",
        "Protocol": "PCIe",
        "Manufacturer": "QEMU",
        "Model": "virtio-blk",
        "SerialNumber": facts.serial,
        "WriteCacheEnabled": False,
        "Links": {"Chassis": link(ident.chassis_uri)},
        "Status": ENABLED,
    }


def simple_storage_collection(ident: Identity) -> Json:
    uri = f"{ident.system_uri}/SimpleStorage"
    members = [f"{uri}/{STORAGE_ID}"]
    return collection("SimpleStorageCollection", uri, "Simple Storage Collection", members)


def simple_storage(ident: Identity) -> Json:
    return {
        "@odata.id": f"{ident.system_uri}/SimpleStorage/{STORAGE_ID}",
        "@odata.type": odata_type("SimpleStorage"),
        "Id": STORAGE_ID,
        "Name": "virtio block controller",
        "Devices": [
            {
                "Name": d.name,
                "Manufacturer": "QEMU",
                "Model": "virtio-blk",
                "CapacityBytes": d.size_bytes,
                "Status": ENABLED,
            }
            for d in ident.facts.drives
        ],
        "Status": ENABLED,
    }


# -- NICs -----------------------------------------------------------------------------------


def nic_properties(ident: Identity, number: int, power: PowerState) -> Json:
    """What the inventory adds to the `number`-th NIC (1-based): a NIC's link goes down with
    the host's power, as on a server whose NICs have no standby power."""
    up = power == "On"
    body: Json = {
        "LinkStatus": "LinkUp" if up else "LinkDown",
        "SpeedMbps": NIC_SPEED_MBPS if up else 0,
        "FullDuplex": True,
        "AutoNeg": False,
    }
    networks = ident.facts.networks
    if number <= len(networks):
        body["Description"] = f"virtio-net NIC on network {networks[number - 1]}"
    return body


# -- BIOS and Secure Boot -----------------------------------------------------------------------


def bios(ident: Identity, settings: BmcSettings) -> Json:
    uri = f"{ident.system_uri}/Bios"
    return {
        "@odata.id": uri,
        "@odata.type": odata_type("Bios"),
        "Id": "BIOS",
        "Name": "BIOS Configuration Current Settings",
        "Attributes": dict(settings.bios),
        "@Redfish.Settings": {
            "@odata.type": odata_type("Settings"),
            "SettingsObject": link(f"{uri}/Settings"),
            "SupportedApplyTimes": ["OnReset"],
        },
        "Actions": {"#Bios.ResetBios": {"target": f"{uri}/Actions/Bios.ResetBios"}},
    }


def bios_settings(ident: Identity, pending: Mapping[str, str]) -> Json:
    """The pending settings: only what the next reset will change, as bmcweb shows them."""
    return {
        "@odata.id": f"{ident.system_uri}/Bios/Settings",
        "@odata.type": odata_type("Bios"),
        "Id": "Settings",
        "Name": "BIOS Configuration Pending Settings",
        "Attributes": dict(pending),
    }


def secure_boot(ident: Identity, state: SecureBootState) -> Json:
    """OVMF's Secure Boot build with Microsoft's and the distributions' keys enrolled (User
    Mode, enforcing), or its plain build with no keys (Setup Mode, nothing checked).
    `SecureBootEnable` is what the next power on, power cycle or reset boots with (a
    running QEMU keeps its firmware); `SecureBootCurrentBoot` is what runs now."""
    if not ident.facts.uefi:
        description = "The node boots with a legacy BIOS, which has no Secure Boot"
    elif state.current:
        description = (
            "UEFI Secure Boot is on: the firmware has Microsoft's and the distributions'"
            " keys enrolled and runs only loaders they signed"
        )
    else:
        description = "UEFI Secure Boot is off: the node's firmware has no keys enrolled"
    if state.enabled != state.current:
        description += f"; it is turned {'on' if state.enabled else 'off'} at the next reset"
    return {
        "@odata.id": f"{ident.system_uri}/SecureBoot",
        "@odata.type": odata_type("SecureBoot"),
        "Id": "SecureBoot",
        "Name": "UEFI Secure Boot",
        "Description": description,
        "SecureBootEnable": state.enabled,
        "SecureBootCurrentBoot": "Enabled" if state.current else "Disabled",
        "SecureBootMode": "UserMode" if state.current else "SetupMode",
    }


# -- logs ------------------------------------------------------------------------------------------


def log_services(base: str, log_id: str) -> Json:
    uri = f"{base}/LogServices"
    return collection("LogServiceCollection", uri, "Log Service Collection", [f"{uri}/{log_id}"])


def log_service(base: str, log_id: str, log: EventLog, now: datetime.datetime) -> Json:
    uri = f"{base}/LogServices/{log_id}"
    return {
        "@odata.id": uri,
        "@odata.type": odata_type("LogService"),
        "Id": log_id,
        "Name": "System Event Log",
        "Description": "Power and boot events of the machine; IPMI reads the same as its SEL",
        "MaxNumberOfRecords": log.capacity,
        "OverWritePolicy": "WrapsWhenFull",
        "DateTime": now.astimezone(datetime.UTC).isoformat(timespec="seconds"),
        "DateTimeLocalOffset": "+00:00",
        "ServiceEnabled": True,
        "LogEntryType": "SEL",
        "Status": ENABLED,
        "Entries": link(f"{uri}/Entries"),
        "Actions": {"#LogService.ClearLog": {"target": f"{uri}/Actions/LogService.ClearLog"}},
    }


def log_entries(base: str, log_id: str, log: EventLog) -> Json:
    """The entries, expanded: the schema has clients read them from the collection itself."""
    uri = f"{base}/LogServices/{log_id}/Entries"
    members = [log_entry(base, log_id, e) for e in log.entries()]
    return {
        "@odata.id": uri,
        "@odata.type": odata_type("LogEntryCollection"),
        "Name": "Log Entry Collection",
        "Members": members,
        "Members@odata.count": len(members),
    }


def log_entry(base: str, log_id: str, event: Event) -> Json:
    sensor_type, _offset = EVENT_CODES[event.kind]
    return {
        "@odata.id": f"{base}/LogServices/{log_id}/Entries/{event.record_id}",
        "@odata.type": odata_type("LogEntry"),
        "Id": str(event.record_id),
        "Name": f"Log Entry {event.record_id}",
        "Created": _timestamp(event.time),
        "EntryType": "SEL",
        "Severity": event.severity,
        "Message": event.message,
        "SensorType": LOG_SENSOR_TYPES[sensor_type],
        "SensorNumber": sdr.BY_TYPE[sensor_type].number,
        "EntryCode": "Assert",
    }


# -- sensors ---------------------------------------------------------------------------------------

_READING_TYPES = {
    sdr.TEMPERATURE: ("Temperature", "Cel"),
    sdr.FAN: ("Rotational", "RPM"),
    sdr.POWER_SUPPLY: ("Power", "W"),
}
_CONTEXTS = {
    sdr.AIR_INLET: "Intake",
    sdr.PROCESSOR: "CPU",
    sdr.SYSTEM_BOARD: "SystemBoard",
    sdr.FAN_ENTITY: "Fan",
    sdr.POWER_SUPPLY_ENTITY: "PowerSupply",
}
_THRESHOLD_NAMES = (
    ("lnc", "LowerCaution"),
    ("lcr", "LowerCritical"),
    ("lnr", "LowerFatal"),
    ("unc", "UpperCaution"),
    ("ucr", "UpperCritical"),
    ("unr", "UpperFatal"),
)

SENSORS = tuple(s for s in sdr.SENSORS if not s.discrete)
"""IPMI's threshold sensors; Redfish shows the same values."""


def sensor_id(sensor: sdr.Sensor) -> str:
    return sensor.name.replace(" ", "")


def sensors(ident: Identity) -> Json:
    uri = f"{ident.chassis_uri}/Sensors"
    members = [f"{uri}/{sensor_id(s)}" for s in SENSORS]
    return collection("SensorCollection", uri, "Sensor Collection", members)


def sensor(ident: Identity, sensor: sdr.Sensor, power: PowerState) -> Json:
    assert sensor.thresholds is not None
    reading_type, units = _READING_TYPES[sensor.sensor_type]
    raw = sensor.reading_on if power == "On" else sensor.reading_off
    thresholds = {
        name: {"Reading": float(value * sensor.multiplier)}
        for attribute, name in _THRESHOLD_NAMES
        if (value := getattr(sensor.thresholds, attribute)) is not None
    }
    return {
        "@odata.id": f"{ident.chassis_uri}/Sensors/{sensor_id(sensor)}",
        "@odata.type": odata_type("Sensor"),
        "Id": sensor_id(sensor),
        "Name": sensor.name,
        "ReadingType": reading_type,
        "ReadingUnits": units,
        "Reading": None if raw is None else float(raw * sensor.multiplier),
        "PhysicalContext": _CONTEXTS[sensor.entity],
        "Thresholds": thresholds,
        "Status": ENABLED if raw is not None else {"State": "StandbyOffline", "Health": "OK"},
    }


__all__ = [
    "LOG_SENSOR_TYPES",
    "MANAGER_LOG",
    "RESET_TO_DEFAULTS_TYPES",
    "SENSORS",
    "SYSTEM_LOG",
    "bios",
    "bios_settings",
    "chassis_properties",
    "dimm",
    "dimm_sizes",
    "drive",
    "drive_uri",
    "drives",
    "log_entries",
    "log_entry",
    "log_service",
    "log_services",
    "manager_with_inventory",
    "memory_collection",
    "nic_properties",
    "processor",
    "processors",
    "secure_boot",
    "sensor",
    "sensor_id",
    "sensors",
    "simple_storage",
    "simple_storage_collection",
    "storage",
    "storage_collection",
    "system_properties",
    "volume",
    "volume_uri",
    "volumes",
]
