"""The Redfish resources of one BMC, as pure functions of what the BMC knows.

Nothing here does I/O: each builder takes the machine's facts and live values (power
state, boot override, sessions) and returns the JSON object, so the whole tree is unit
tested without a server. `SCHEMAS` is the one list of schema versions: `@odata.type`,
`$metadata` and the `Link: rel=describedby` headers all come from it.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

from vdc_runtime.bmc.target import BootOverride, PowerState, SystemFacts
from vdc_runtime.bmc.users import BmcUser, Role

Json = dict[str, Any]

ROOT = "/redfish/v1"
SYSTEMS = f"{ROOT}/Systems"
CHASSIS = f"{ROOT}/Chassis"
MANAGERS = f"{ROOT}/Managers"
ACCOUNT_SERVICE = f"{ROOT}/AccountService"
ACCOUNTS = f"{ACCOUNT_SERVICE}/Accounts"
ROLES = f"{ACCOUNT_SERVICE}/Roles"
SESSION_SERVICE = f"{ROOT}/SessionService"
SESSIONS = f"{SESSION_SERVICE}/Sessions"
METADATA = f"{ROOT}/$metadata"

PLACEMAT_ID = "System.Embedded.1"
"""Placemat's (and iDRAC's) id for the system and its chassis; served as an alias."""
MANAGER_ID = "BMC"

SCHEMA_BASE = "https://redfish.dmtf.org/schemas/v1"

SCHEMAS: dict[str, str | None] = {
    "ServiceRoot": "v1_20_0",
    "ComputerSystemCollection": None,
    "ComputerSystem": "v1_27_0",
    "ActionInfo": "v1_5_0",
    "EthernetInterfaceCollection": None,
    "EthernetInterface": "v1_12_4",
    # The inventory (see inventory.py).
    "ProcessorCollection": None,
    "Processor": "v1_22_0",
    "MemoryCollection": None,
    "Memory": "v1_23_0",
    "StorageCollection": None,
    "Storage": "v1_21_0",
    "DriveCollection": None,
    "Drive": "v1_22_0",
    "VolumeCollection": None,
    "Volume": "v1_10_2",
    "SimpleStorageCollection": None,
    "SimpleStorage": "v1_3_2",
    "Bios": "v1_2_3",
    "Settings": "v1_4_0",
    "SecureBoot": "v1_1_2",
    "LogServiceCollection": None,
    "LogService": "v1_9_0",
    "LogEntryCollection": None,
    "LogEntry": "v1_21_0",
    "SensorCollection": None,
    "Sensor": "v1_12_0",
    "ChassisCollection": None,
    "Chassis": "v1_28_0",
    "ManagerCollection": None,
    "Manager": "v1_24_0",
    "ManagerNetworkProtocol": "v1_12_0",
    "VirtualMediaCollection": None,
    "VirtualMedia": "v1_6_5",
    "AccountService": "v1_18_1",
    "ManagerAccountCollection": None,
    "ManagerAccount": "v1_14_1",
    "RoleCollection": None,
    "Role": "v1_3_3",
    "SessionService": "v1_2_0",
    "SessionCollection": None,
    "Session": "v1_8_0",
    "Message": "v1_3_0",
}
"""Schema -> the version this service implements (None: unversioned collections)."""

# Schemas the ones above are built from; $metadata references them so a client can
# resolve every type it meets (Resource.Status, Resource.PowerState, ...).
_SUPPORT_SCHEMAS = ("Resource", "RedfishExtensions", "Privileges", "IPAddresses")

REDFISH_VERSION = "1.20.0"
"""The Redfish specification (DSP0266) version the service follows."""

# BootOverride's lower-case values <-> Redfish's enumerations.
BOOT_TARGETS = {
    "None": "none",
    "Pxe": "pxe",
    "Hdd": "hdd",
    "Cd": "cd",
    "BiosSetup": "bios-setup",
    "UefiHttp": "uefi-http",
}
BOOT_ENABLED = {"Disabled": "disabled", "Once": "once", "Continuous": "continuous"}
BOOT_MODES = {"Legacy": "legacy", "UEFI": "uefi"}

SYSTEM_RESET_TYPES = (
    "On",
    "ForceOn",
    "ForceOff",
    "GracefulShutdown",
    "GracefulRestart",
    "ForceRestart",
    "PowerCycle",
    "Nmi",
    "PushPowerButton",
)
# Placemat's (iDRAC's) chassis reset: the chassis has only its power to switch.
CHASSIS_RESET_TYPES = ("On", "ForceOff")
MANAGER_RESET_TYPES = ("GracefulRestart", "ForceRestart")
MANAGER_NIC = "eth0"

PRIVILEGES: dict[Role, tuple[str, ...]] = {
    "Administrator": (
        "Login",
        "ConfigureManager",
        "ConfigureUsers",
        "ConfigureComponents",
        "ConfigureSelf",
    ),
    "Operator": ("Login", "ConfigureComponents", "ConfigureSelf"),
    "ReadOnly": ("Login", "ConfigureSelf"),
}
"""The Redfish standard roles, with the privileges DSP0266 assigns them."""

ROLE_DESCRIPTIONS: dict[Role, str] = {
    "Administrator": "Full access, including the BMC's own settings.",
    "Operator": "Power control and boot settings of the system.",
    "ReadOnly": "Read access; may end its own sessions.",
}


def odata_type(schema: str) -> str:
    version = SCHEMAS[schema]
    return f"#{schema}.{version}.{schema}" if version else f"#{schema}.{schema}"


def described_by(schema: str) -> str:
    """The JSON Schema of a resource type, for the `Link: <...>; rel=describedby` header."""
    version = SCHEMAS[schema]
    name = f"{schema}.{version}" if version else schema
    return f"{SCHEMA_BASE}/{name}.json"


def segment(name: str) -> str:
    """A name as one URI path segment: RFC 3986 pchar left readable, the rest escaped."""
    return quote(name, safe="!$&'()*+,;=:@-._~")


def link(uri: str) -> Json:
    return {"@odata.id": uri}


def links(uris: Iterable[str]) -> list[Json]:
    return [link(u) for u in uris]


def collection(schema: str, uri: str, name: str, members: Sequence[str]) -> Json:
    return {
        "@odata.id": uri,
        "@odata.type": odata_type(schema),
        "Name": name,
        "Members": links(members),
        "Members@odata.count": len(members),
    }


@dataclass(frozen=True)
class Identity:
    """What one BMC reports about itself and its machine; fixed while it runs."""

    facts: SystemFacts
    address: str
    port: int
    firmware_version: str

    @property
    def service_uuid(self) -> str:
        # The BMC's own identity, distinct from the system's but stable with it, so SSDP-
        # style discovery and the validators see the same service across runs.
        return str(uuid.uuid5(uuid.UUID(self.facts.uuid), "vdc-bmc"))

    @property
    def system_id(self) -> str:
        return self.facts.name

    @property
    def system_uri(self) -> str:
        return f"{SYSTEMS}/{segment(self.facts.name)}"

    @property
    def chassis_uri(self) -> str:
        return f"{CHASSIS}/{segment(self.facts.name)}"

    @property
    def manager_uri(self) -> str:
        return f"{MANAGERS}/{MANAGER_ID}"


# -- service root and OData ------------------------------------------------------------------


def redfish_version_document() -> Json:
    return {"v1": f"{ROOT}/"}


def service_root(ident: Identity) -> Json:
    return {
        "@odata.id": f"{ROOT}/",
        "@odata.type": odata_type("ServiceRoot"),
        "Id": "RootService",
        "Name": "Root Service",
        "RedfishVersion": REDFISH_VERSION,
        "UUID": ident.service_uuid,
        "Product": "vdc virtual BMC",
        "Vendor": "vdc",
        # Advertised as unsupported, which makes every `$` query answer 501 as DSP0266 wants.
        "ProtocolFeaturesSupported": {
            "ExpandQuery": {"ExpandAll": False, "Levels": False, "Links": False, "NoLinks": False},
            "ExcerptQuery": False,
            "FilterQuery": False,
            "OnlyMemberQuery": False,
            "SelectQuery": False,
            "TopSkipQuery": False,
            "MultipleHTTPRequests": True,
        },
        "Systems": link(SYSTEMS),
        "Chassis": link(CHASSIS),
        "Managers": link(MANAGERS),
        "AccountService": link(ACCOUNT_SERVICE),
        "SessionService": link(SESSION_SERVICE),
        "Links": {"Sessions": link(SESSIONS)},
    }


def odata_service_document() -> Json:
    """`/redfish/v1/odata`: the service root's children as OData singletons."""
    entries = [
        ("Service", f"{ROOT}/"),
        ("Systems", SYSTEMS),
        ("Chassis", CHASSIS),
        ("Managers", MANAGERS),
        ("AccountService", ACCOUNT_SERVICE),
        ("SessionService", SESSION_SERVICE),
        ("Sessions", SESSIONS),
    ]
    return {
        "@odata.context": METADATA,
        "value": [{"name": n, "kind": "Singleton", "url": u} for n, u in entries],
    }


def metadata_document() -> str:
    """`$metadata`: the CSDL references for every type served, and the service container."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">',
    ]
    names = [*SCHEMAS, *_SUPPORT_SCHEMAS]
    for name in names:
        version = SCHEMAS.get(name)
        lines.append(f"  <edmx:Reference Uri={quoteattr(f'{SCHEMA_BASE}/{name}_v1.xml')}>")
        lines.append(f"    <edmx:Include Namespace={quoteattr(name)}/>")
        if version:
            lines.append(f"    <edmx:Include Namespace={quoteattr(f'{name}.{version}')}/>")
        lines.append("  </edmx:Reference>")
    container = f"ServiceRoot.{SCHEMAS['ServiceRoot']}.ServiceContainer"
    lines += [
        "  <edmx:DataServices>",
        '    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="Service">',
        f'      <EntityContainer Name="Service" Extends={quoteattr(container)}/>',
        "    </Schema>",
        "  </edmx:DataServices>",
        "</edmx:Edmx>",
        "",
    ]
    return "\n".join(lines)


# -- system ------------------------------------------------------------------------------------


def _status(power: PowerState) -> Json:
    if power == "On":
        return {"State": "Enabled", "Health": "OK"}
    if power == "Off":
        return {"State": "StandbyOffline", "Health": "OK"}
    # QEMU cannot be asked: the machine is in trouble, as a server whose BMC lost its host.
    return {"State": "UnavailableOffline", "Health": "Critical"}


def _power(power: PowerState) -> str | None:
    return power if power in ("On", "Off") else None


def _redfish_value(table: dict[str, str], value: str) -> str:
    return next(k for k, v in table.items() if v == value)


def boot_object(override: BootOverride) -> Json:
    return {
        "BootSourceOverrideEnabled": _redfish_value(BOOT_ENABLED, override.enabled),
        "BootSourceOverrideEnabled@Redfish.AllowableValues": list(BOOT_ENABLED),
        "BootSourceOverrideTarget": _redfish_value(BOOT_TARGETS, override.target),
        "BootSourceOverrideTarget@Redfish.AllowableValues": list(BOOT_TARGETS),
        "BootSourceOverrideMode": _redfish_value(BOOT_MODES, override.mode),
        "BootSourceOverrideMode@Redfish.AllowableValues": list(BOOT_MODES),
    }


def systems_collection(ident: Identity) -> Json:
    # System.Embedded.1 answers too, but as another name for this member, not a second one.
    return collection(
        "ComputerSystemCollection", SYSTEMS, "Computer System Collection", [ident.system_uri]
    )


def computer_system(ident: Identity, power: PowerState, override: BootOverride) -> Json:
    facts = ident.facts
    uri = ident.system_uri
    body: Json = {
        "@odata.id": uri,
        "@odata.type": odata_type("ComputerSystem"),
        "Id": ident.system_id,
        "Name": facts.name,
        # The BMC plays a server's: clients (Ironic, Metal3) treat the node as bare metal.
        "SystemType": "Physical",
        "Manufacturer": facts.manufacturer,
        "Model": facts.model,
        "SerialNumber": facts.serial,
        "UUID": facts.uuid,
        "PowerState": _power(power),
        "Status": _status(power),
        "Boot": boot_object(override),
        "VirtualMedia": link(f"{uri}/VirtualMedia"),
        "ProcessorSummary": {"Count": facts.cpus, "LogicalProcessorCount": facts.cpus},
        "MemorySummary": {"TotalSystemMemoryGiB": facts.memory_mib / 1024},
        "EthernetInterfaces": link(f"{uri}/EthernetInterfaces"),
        "Links": {"Chassis": [link(ident.chassis_uri)], "ManagedBy": [link(ident.manager_uri)]},
        "Actions": {
            "#ComputerSystem.Reset": {
                "target": f"{uri}/Actions/ComputerSystem.Reset",
                "ResetType@Redfish.AllowableValues": list(SYSTEM_RESET_TYPES),
                "@Redfish.ActionInfo": f"{uri}/ResetActionInfo",
            }
        },
    }
    if facts.tpm:
        body["TrustedModules"] = [
            {"InterfaceType": "TPM2_0", "Status": {"State": "Enabled", "Health": "OK"}}
        ]
    return body


def reset_action_info(uri: str, values: Sequence[str]) -> Json:
    """The ActionInfo of a Reset action under `uri` (a system or a chassis)."""
    return {
        "@odata.id": f"{uri}/ResetActionInfo",
        "@odata.type": odata_type("ActionInfo"),
        "Id": "ResetActionInfo",
        "Name": "Reset Action Info",
        "Parameters": [
            {
                "Name": "ResetType",
                "Required": True,
                "DataType": "String",
                "AllowableValues": list(values),
            }
        ],
    }


def ethernet_interfaces(ident: Identity) -> Json:
    uri = f"{ident.system_uri}/EthernetInterfaces"
    members = [f"{uri}/{i}" for i in range(1, len(ident.facts.macs) + 1)]
    return collection("EthernetInterfaceCollection", uri, "Ethernet Interface Collection", members)


def ethernet_interface(ident: Identity, number: int) -> Json:
    """The `number`-th NIC (1-based), in the node's interface order."""
    mac = ident.facts.macs[number - 1]
    return {
        "@odata.id": f"{ident.system_uri}/EthernetInterfaces/{number}",
        "@odata.type": odata_type("EthernetInterface"),
        "Id": str(number),
        "Name": f"Ethernet Interface {number}",
        "MACAddress": mac,
        "PermanentMACAddress": mac,
        "InterfaceEnabled": True,
        "Status": {"State": "Enabled", "Health": "OK"},
    }


# -- chassis and manager -----------------------------------------------------------------------


def chassis_collection(ident: Identity) -> Json:
    return collection("ChassisCollection", CHASSIS, "Chassis Collection", [ident.chassis_uri])


def chassis(ident: Identity, power: PowerState) -> Json:
    facts = ident.facts
    uri = ident.chassis_uri
    return {
        "@odata.id": uri,
        "@odata.type": odata_type("Chassis"),
        "Id": facts.name,
        "Name": facts.name,
        "ChassisType": "RackMount",
        "Manufacturer": facts.manufacturer,
        "Model": facts.model,
        "SerialNumber": facts.serial,
        "UUID": facts.uuid,
        "PowerState": _power(power),
        "Status": _status(power),
        "Links": {
            "ComputerSystems": [link(ident.system_uri)],
            "ManagedBy": [link(ident.manager_uri)],
            "ManagersInChassis": [link(ident.manager_uri)],
        },
        "Actions": {
            "#Chassis.Reset": {
                "target": f"{uri}/Actions/Chassis.Reset",
                "ResetType@Redfish.AllowableValues": list(CHASSIS_RESET_TYPES),
                "@Redfish.ActionInfo": f"{uri}/ResetActionInfo",
            }
        },
    }


def managers_collection(ident: Identity) -> Json:
    return collection("ManagerCollection", MANAGERS, "Manager Collection", [ident.manager_uri])


def manager(ident: Identity, now: datetime.datetime) -> Json:
    uri = ident.manager_uri
    return {
        "@odata.id": uri,
        "@odata.type": odata_type("Manager"),
        "Id": MANAGER_ID,
        "Name": f"BMC of {ident.facts.name}",
        "Description": "vdc virtual BMC: IPMI and Redfish for one machine",
        "ManagerType": "BMC",
        "Manufacturer": "vdc",
        "Model": "vdc virtual BMC",
        "FirmwareVersion": ident.firmware_version,
        "UUID": ident.service_uuid,
        "ServiceEntryPointUUID": ident.service_uuid,
        "PowerState": "On",
        "Status": {"State": "Enabled", "Health": "OK"},
        "DateTime": now.astimezone(datetime.UTC).isoformat(timespec="seconds"),
        "DateTimeLocalOffset": "+00:00",
        "NetworkProtocol": link(f"{uri}/NetworkProtocol"),
        "VirtualMedia": link(f"{uri}/VirtualMedia"),
        "EthernetInterfaces": link(f"{uri}/EthernetInterfaces"),
        "Links": {
            "ManagerForServers": [link(ident.system_uri)],
            "ManagerForChassis": [link(ident.chassis_uri)],
            "ManagerInChassis": link(ident.chassis_uri),
        },
        "Actions": {
            "#Manager.Reset": {
                "target": f"{uri}/Actions/Manager.Reset",
                "ResetType@Redfish.AllowableValues": list(MANAGER_RESET_TYPES),
                "@Redfish.ActionInfo": f"{uri}/ResetActionInfo",
            }
        },
    }


def manager_ethernet_interfaces(ident: Identity) -> Json:
    uri = f"{ident.manager_uri}/EthernetInterfaces"
    return collection(
        "EthernetInterfaceCollection",
        uri,
        "Manager Ethernet Interface Collection",
        [f"{uri}/{MANAGER_NIC}"],
    )


def manager_ethernet_interface(ident: Identity) -> Json:
    """The BMC's own port: the address it was given on the bmc network, and nothing else
    (a virtual BMC has no MAC of its own, and the prefix is the bridge's business)."""
    address = {"Address": ident.address, "AddressOrigin": "Static"}
    v6 = ipaddress.ip_address(ident.address).version == 6
    return {
        "@odata.id": f"{ident.manager_uri}/EthernetInterfaces/{MANAGER_NIC}",
        "@odata.type": odata_type("EthernetInterface"),
        "Id": MANAGER_NIC,
        "Name": "Manager Ethernet Interface",
        "Description": "The BMC's address on the bmc network",
        "InterfaceEnabled": True,
        "Status": {"State": "Enabled", "Health": "OK"},
        "IPv4Addresses": [] if v6 else [address],
        "IPv6Addresses": [address] if v6 else [],
    }


def network_protocol(ident: Identity) -> Json:
    return {
        "@odata.id": f"{ident.manager_uri}/NetworkProtocol",
        "@odata.type": odata_type("ManagerNetworkProtocol"),
        "Id": "NetworkProtocol",
        "Name": "Manager Network Protocol",
        "Description": f"The BMC listens on {ident.address}",
        "HTTPS": {"ProtocolEnabled": True, "Port": ident.port},
        "HTTP": {"ProtocolEnabled": False},
        "SSH": {"ProtocolEnabled": False},
        "Telnet": {"ProtocolEnabled": False},
        "Status": {"State": "Enabled", "Health": "OK"},
    }


# -- accounts ----------------------------------------------------------------------------------


def account_uri(user: BmcUser) -> str:
    return f"{ACCOUNTS}/{segment(user.name)}"


def account_service() -> Json:
    return {
        "@odata.id": ACCOUNT_SERVICE,
        "@odata.type": odata_type("AccountService"),
        "Id": "AccountService",
        "Name": "Account Service",
        "Description": (
            "Accounts come from the data center file (its BMC document) and are read-only here."
        ),
        "ServiceEnabled": True,
        "LocalAccountAuth": "Enabled",
        "HTTPBasicAuth": "Enabled",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Accounts": link(ACCOUNTS),
        "Roles": link(ROLES),
    }


def accounts_collection(users: Sequence[BmcUser]) -> Json:
    return collection(
        "ManagerAccountCollection",
        ACCOUNTS,
        "Accounts Collection",
        [account_uri(u) for u in users],
    )


def account(user: BmcUser) -> Json:
    return {
        "@odata.id": account_uri(user),
        "@odata.type": odata_type("ManagerAccount"),
        "Id": user.name,
        "Name": "User Account",
        "Description": "Defined in the data center file; read-only.",
        "UserName": user.name,
        "RoleId": user.role,
        "Enabled": True,
        "Locked": False,
        # The same account logs in to both of the BMC's services.
        "AccountTypes": ["Redfish", "IPMI"],
        "Links": {"Role": link(f"{ROLES}/{user.role}")},
    }


def roles_collection() -> Json:
    return collection(
        "RoleCollection", ROLES, "Roles Collection", [f"{ROLES}/{r}" for r in PRIVILEGES]
    )


def role(name: Role) -> Json:
    return {
        "@odata.id": f"{ROLES}/{name}",
        "@odata.type": odata_type("Role"),
        "Id": name,
        "Name": f"{name} User Role",
        "Description": ROLE_DESCRIPTIONS[name],
        "RoleId": name,
        "IsPredefined": True,
        "AssignedPrivileges": list(PRIVILEGES[name]),
    }


# -- sessions ----------------------------------------------------------------------------------


def session_service(timeout: int) -> Json:
    return {
        "@odata.id": SESSION_SERVICE,
        "@odata.type": odata_type("SessionService"),
        "Id": "SessionService",
        "Name": "Session Service",
        "Description": "Sessions of this BMC; a session ends after SessionTimeout idle seconds.",
        "ServiceEnabled": True,
        "SessionTimeout": timeout,
        "Status": {"State": "Enabled", "Health": "OK"},
        "Sessions": link(SESSIONS),
    }


@dataclass(frozen=True)
class SessionView:
    id: str
    user: str
    created: datetime.datetime
    client: str | None
    context: str | None = None


def session_uri(session_id: str) -> str:
    return f"{SESSIONS}/{session_id}"


def sessions_collection(session_ids: Sequence[str]) -> Json:
    return collection(
        "SessionCollection", SESSIONS, "Session Collection", [session_uri(s) for s in session_ids]
    )


def session(view: SessionView) -> Json:
    body: Json = {
        "@odata.id": session_uri(view.id),
        "@odata.type": odata_type("Session"),
        "Id": view.id,
        "Name": "User Session",
        "UserName": view.user,
        "SessionType": "Redfish",
        "CreatedTime": view.created.astimezone(datetime.UTC).isoformat(timespec="seconds"),
    }
    if view.client:
        body["ClientOriginIPAddress"] = view.client
    if view.context is not None:
        body["Context"] = view.context
    return body


__all__ = [
    "ACCOUNTS",
    "ACCOUNT_SERVICE",
    "BOOT_ENABLED",
    "BOOT_MODES",
    "BOOT_TARGETS",
    "CHASSIS",
    "CHASSIS_RESET_TYPES",
    "MANAGERS",
    "MANAGER_ID",
    "MANAGER_NIC",
    "MANAGER_RESET_TYPES",
    "METADATA",
    "PLACEMAT_ID",
    "PRIVILEGES",
    "ROLES",
    "ROOT",
    "SCHEMAS",
    "SESSIONS",
    "SESSION_SERVICE",
    "SYSTEMS",
    "SYSTEM_RESET_TYPES",
    "Identity",
    "SessionView",
    "account",
    "account_service",
    "account_uri",
    "accounts_collection",
    "boot_object",
    "chassis",
    "chassis_collection",
    "computer_system",
    "described_by",
    "ethernet_interface",
    "ethernet_interfaces",
    "link",
    "manager",
    "manager_ethernet_interface",
    "manager_ethernet_interfaces",
    "managers_collection",
    "metadata_document",
    "network_protocol",
    "odata_service_document",
    "odata_type",
    "redfish_version_document",
    "reset_action_info",
    "role",
    "roles_collection",
    "segment",
    "service_root",
    "session",
    "session_service",
    "session_uri",
    "sessions_collection",
    "systems_collection",
]
