"""The inventory's URIs on one BMC (`server.Bmc`), and what their writes do.

`extend` adds them to the BMC's route table, wrapping the System, Chassis, Manager and
NIC resources so they show the inventory too; `route` finds the event log's entries,
whose URIs come and go with the log.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from vdc_runtime.bmc.redfish import bodies
from vdc_runtime.bmc.redfish import inventory as inv
from vdc_runtime.bmc.redfish import resources as rs
from vdc_runtime.bmc.redfish.messages import RedfishError, message
from vdc_runtime.bmc.redfish.server import Bmc, Call, Endpoint, Reply, _split
from vdc_runtime.bmc.redfish.sessions import DEFAULT_TIMEOUT
from vdc_runtime.bmc.settings import BiosError
from vdc_runtime.bmc.target import SystemFacts

log = logging.getLogger("vdc.bmc.redfish")

Json = dict[str, Any]
Table = dict[tuple[str, ...], Endpoint]

INDICATOR_LED = {"Off": False, "Blinking": True, "Lit": True}


def take_indicator(body: Json) -> tuple[bool | None, Json]:
    """(the identify light asked for, the rest of the body): `LocationIndicatorActive`
    or the older `IndicatorLED`; 400 if either has a bad value."""
    rest = dict(body)
    wanted: bool | None = None
    if "LocationIndicatorActive" in rest:
        value = rest.pop("LocationIndicatorActive")
        if not isinstance(value, bool):
            raise bodies.refuse([
                message("PropertyValueTypeError", json.dumps(value), "LocationIndicatorActive",
                        related=["/LocationIndicatorActive"])
            ])  # fmt: skip
        wanted = value
    if "IndicatorLED" in rest:
        value = rest.pop("IndicatorLED")
        if value not in INDICATOR_LED:
            raise bodies.refuse([
                message("PropertyValueNotInList", str(value), "IndicatorLED",
                        related=["/IndicatorLED"])
            ])  # fmt: skip
        wanted = INDICATOR_LED[value]
    return wanted, rest


def bios_patch(body: Json) -> Json:
    """The attribute writes of a Bios/Settings PATCH (checked against the setup later)."""
    infos = [
        message("PropertyUnknown", key, related=[f"/{key}"])
        for key in body
        if key != "Attributes" and not bodies.annotation(key)
    ]
    attributes = body.get("Attributes")
    if "Attributes" not in body:
        infos.append(message("PropertyMissing", "Attributes"))
    elif not isinstance(attributes, dict):
        infos.append(
            message("PropertyValueTypeError", json.dumps(attributes), "Attributes",
                    related=["/Attributes"])
        )  # fmt: skip
    elif not attributes:
        infos.append(message("NoOperation"))
    if infos:
        raise bodies.refuse(infos)
    assert isinstance(attributes, dict)
    return attributes


def bios_error(error: BiosError) -> RedfishError:
    pointer = [f"/Attributes/{error.name}"]
    if error.kind == "unknown":
        info = message("PropertyUnknown", f"Attributes/{error.name}", related=pointer)
    elif error.kind == "read-only":
        info = message("PropertyNotWritable", f"Attributes/{error.name}", related=pointer)
    else:
        info = message(
            "PropertyValueNotInList", str(error.value), f"Attributes/{error.name}", related=pointer
        )
    return bodies.refuse([info])


def secure_boot_patch(body: Json, facts: SystemFacts) -> bool | None:
    """The `SecureBootEnable` a PATCH asks for (None: no change), or RedfishError.

    It takes effect at the next power on, power cycle or reset: QEMU cannot change the
    firmware of a running machine, so the node's QEMU is started again then."""
    infos: list[Json] = []
    properties = [k for k in body if not bodies.annotation(k)]
    if not properties:
        raise bodies.refuse([message("NoOperation")])
    enabled = None
    for key in properties:
        if key == "SecureBootEnable":
            value = body[key]
            if not isinstance(value, bool):
                infos.append(message("PropertyValueTypeError", json.dumps(value), key,
                                     related=[f"/{key}"]))  # fmt: skip
            elif value and not facts.secure_boot_capable:
                why = (
                    "This node boots with a legacy BIOS, which has no Secure Boot."
                    if not facts.uefi
                    else "Secure Boot needs a q35 machine and OVMF's Secure Boot build."
                )
                infos.append(
                    message("PropertyValueNotInList", json.dumps(value), key,
                            related=[f"/{key}"], resolution=why)
                )  # fmt: skip
            else:
                enabled = value
        elif key in ("SecureBootCurrentBoot", "SecureBootMode", "Id", "Name", "Description"):
            infos.append(message("PropertyNotWritable", key, related=[f"/{key}"]))
        else:
            infos.append(message("PropertyUnknown", key, related=[f"/{key}"]))
    if infos:
        raise bodies.refuse(infos)
    return enabled


def extend(bmc: Bmc, table: Table) -> None:
    """Add the inventory to the route table of `bmc` (built by `server.Bmc`)."""
    ident, target = bmc.ident, bmc.target
    settings, events = target.settings, target.events

    def add(uri: str, endpoint: Endpoint) -> None:
        table[_split(uri)] = endpoint

    def getter(build: Callable[[], Json]) -> Callable[[Call], Any]:
        async def get(call: Call) -> Json:
            return build()

        return get

    def who(call: Call) -> str:
        return call.who.user.name

    # -- the system and its NICs ---------------------------------------------------------------

    def wrap_indicator(uri: str, extra: Callable[[], Json]) -> None:
        original = table[_split(uri)]
        assert original.get is not None

        async def get(call: Call) -> Json:
            body = await original.get(call)  # type: ignore[misc]
            assert isinstance(body, dict)
            return {**body, **extra()}

        async def patch(call: Call) -> None:
            wanted, rest = take_indicator(call.body)
            if wanted is None or any(not bodies.annotation(k) for k in rest):
                if original.patch is None:
                    key = next(k for k in rest if not bodies.annotation(k))
                    raise bodies.refuse([message("PropertyNotWritable", key, related=[f"/{key}"])])
                call.body = rest
                await original.patch(call)
            if wanted is not None:
                settings.identify(None if wanted else 0)
                log.info(
                    "node %s: Redfish user %s turned the identify light %s",
                    bmc.node, who(call), "on" if wanted else "off",
                )  # fmt: skip

        privileges = {"PATCH": "ConfigureComponents", **original.privileges}
        add(uri, Endpoint(original.schema, get=get, patch=patch, privileges=privileges))

    def system_extra() -> Json:
        return inv.system_properties(ident, settings)

    def chassis_extra() -> Json:
        return inv.chassis_properties(ident, settings)

    for system_id in (ident.system_id, rs.PLACEMAT_ID):
        base = f"{rs.SYSTEMS}/{rs.segment(system_id)}"
        wrap_indicator(base, system_extra)
        _nics(table, add, base, bmc)
        _system_inventory(add, base, bmc, getter)
    for chassis_id in (ident.system_id, rs.PLACEMAT_ID):
        base = f"{rs.CHASSIS}/{rs.segment(chassis_id)}"
        wrap_indicator(base, chassis_extra)
        add(f"{base}/Drives", Endpoint("DriveCollection", get=getter(lambda: inv.drives(ident))))
        for drive in ident.facts.drives:
            add(
                f"{base}/Drives/{rs.segment(drive.name)}",
                Endpoint("Drive", get=getter(lambda d=drive: inv.drive(ident, d))),
            )
        add(f"{base}/Sensors", Endpoint("SensorCollection", get=getter(lambda: inv.sensors(ident))))
        for sensor in inv.SENSORS:

            async def sensor_get(call: Call, sensor: Any = sensor) -> Json:
                return inv.sensor(ident, sensor, await target.power_state())

            add(f"{base}/Sensors/{inv.sensor_id(sensor)}", Endpoint("Sensor", get=sensor_get))

    # -- logs -------------------------------------------------------------------------------------

    def add_log(base: str, log_id: str, privilege: str) -> None:
        async def service(call: Call) -> Json:
            return inv.log_service(base, log_id, events, events.now_utc())

        async def clear(call: Call) -> Reply:
            bodies.no_parameters(call.body, "LogService.ClearLog")
            events.clear(f"Redfish user {who(call)}")
            log.info("node %s: Redfish user %s cleared the event log", bmc.node, who(call))
            return Reply(204)

        uri = f"{base}/LogServices"
        add(
            uri,
            Endpoint("LogServiceCollection", get=getter(lambda: inv.log_services(base, log_id))),
        )
        add(f"{uri}/{log_id}", Endpoint("LogService", get=service))
        add(
            f"{uri}/{log_id}/Entries",
            Endpoint(
                "LogEntryCollection", get=getter(lambda: inv.log_entries(base, log_id, events))
            ),
        )
        add(
            f"{uri}/{log_id}/Actions/LogService.ClearLog",
            Endpoint(post=clear, privileges={"POST": privilege}, action="LogService.ClearLog"),
        )

    add_log(ident.system_uri, inv.SYSTEM_LOG, "ConfigureComponents")
    add_log(f"{rs.SYSTEMS}/{rs.PLACEMAT_ID}", inv.SYSTEM_LOG, "ConfigureComponents")
    add_log(ident.manager_uri, inv.MANAGER_LOG, "ConfigureManager")

    # -- the manager ---------------------------------------------------------------------------

    manager = table[_split(ident.manager_uri)]
    assert manager.get is not None
    manager_get = manager.get

    async def manager_with_inventory(call: Call) -> Json:
        body = await manager_get(call)
        assert isinstance(body, dict)
        return inv.manager_with_inventory(body, ident)

    add(ident.manager_uri, Endpoint("Manager", get=manager_with_inventory))

    async def reset_to_defaults(call: Call) -> Reply:
        reset_type = bodies.reset_type(
            call.body, "Manager.ResetToDefaults", inv.RESET_TO_DEFAULTS_TYPES
        )
        # The BMC's network and accounts come from the data center file, so every kind
        # keeps them; what a BMC of its own holds goes back to how it started.
        log.info(
            "node %s: Redfish user %s: Manager.ResetToDefaults %s clears the event log, turns"
            " the identify light off and ends %d sessions",
            bmc.node, who(call), reset_type, len(bmc.sessions),
        )  # fmt: skip
        events.clear(f"Manager.ResetToDefaults by {who(call)}")
        settings.identify(0)
        bmc.sessions.timeout = DEFAULT_TIMEOUT
        bmc.sessions.clear()
        return Reply(204)

    add(
        f"{ident.manager_uri}/Actions/Manager.ResetToDefaults",
        Endpoint(
            post=reset_to_defaults,
            privileges={"POST": "ConfigureManager"},
            action="Manager.ResetToDefaults",
        ),
    )


def _nics(table: Table, add: Callable[[str, Endpoint], None], base: str, bmc: Bmc) -> None:
    for number in range(1, len(bmc.ident.facts.macs) + 1):
        uri = f"{base}/EthernetInterfaces/{number}"
        original = table[_split(uri)].get
        assert original is not None

        async def nic(call: Call, number: int = number, original: Any = original) -> Json:
            body = await original(call)
            power = await bmc.target.power_state()
            return {**body, **inv.nic_properties(bmc.ident, number, power)}

        add(uri, Endpoint("EthernetInterface", get=nic))


def _system_inventory(
    add: Callable[[str, Endpoint], None],
    base: str,
    bmc: Bmc,
    getter: Callable[[Callable[[], Json]], Any],
) -> None:
    ident, settings = bmc.ident, bmc.target.settings
    facts = ident.facts
    add(
        f"{base}/Processors",
        Endpoint("ProcessorCollection", get=getter(lambda: inv.processors(ident))),
    )
    for socket in range(1, facts.sockets + 1):
        add(
            f"{base}/Processors/CPU{socket}",
            Endpoint("Processor", get=getter(lambda s=socket: inv.processor(ident, s))),
        )
    add(
        f"{base}/Memory",
        Endpoint("MemoryCollection", get=getter(lambda: inv.memory_collection(ident))),
    )
    for number in range(len(inv.dimm_sizes(facts.memory_mib))):
        add(
            f"{base}/Memory/DIMM{number}",
            Endpoint("Memory", get=getter(lambda n=number: inv.dimm(ident, n))),
        )
    storage = f"{base}/Storage"
    add(storage, Endpoint("StorageCollection", get=getter(lambda: inv.storage_collection(ident))))
    add(f"{storage}/{inv.STORAGE_ID}", Endpoint("Storage", get=getter(lambda: inv.storage(ident))))
    volumes = f"{storage}/{inv.STORAGE_ID}/Volumes"
    add(volumes, Endpoint("VolumeCollection", get=getter(lambda: inv.volumes(ident))))
    for drive in facts.drives:
        add(
            f"{volumes}/{rs.segment(drive.name)}",
            Endpoint("Volume", get=getter(lambda d=drive: inv.volume(ident, d))),
        )
    simple = f"{base}/SimpleStorage"
    add(
        simple,
        Endpoint(
            "SimpleStorageCollection", get=getter(lambda: inv.simple_storage_collection(ident))
        ),
    )
    add(
        f"{simple}/{inv.STORAGE_ID}",
        Endpoint("SimpleStorage", get=getter(lambda: inv.simple_storage(ident))),
    )

    async def patch_bios(call: Call) -> None:
        attributes = bios_patch(call.body)
        try:
            settings.set_pending(attributes)
        except BiosError as exc:
            raise bios_error(exc) from None
        log.info(
            "node %s: Redfish user %s set BIOS attributes for the next reset: %s",
            bmc.node, call.who.user.name, attributes,
        )  # fmt: skip

    async def reset_bios(call: Call) -> Reply:
        bodies.no_parameters(call.body, "Bios.ResetBios")
        settings.reset_bios()
        log.info("node %s: Redfish user %s: BIOS defaults at the next reset", bmc.node,
                 call.who.user.name)  # fmt: skip
        return Reply(204)

    async def patch_secure_boot(call: Call) -> None:
        enabled = secure_boot_patch(call.body, ident.facts)
        if enabled is None:
            return
        await bmc.target.set_secure_boot(enabled)
        log.info("node %s: Redfish user %s turned Secure Boot %s from the next reset", bmc.node,
                 call.who.user.name, "on" if enabled else "off")  # fmt: skip

    add(f"{base}/Bios", Endpoint("Bios", get=getter(lambda: inv.bios(ident, settings))))
    add(
        f"{base}/Bios/Settings",
        Endpoint(
            "Bios",
            get=getter(lambda: inv.bios_settings(ident, settings.pending)),
            patch=patch_bios,
            privileges={"PATCH": "ConfigureComponents"},
        ),
    )
    add(
        f"{base}/Bios/Actions/Bios.ResetBios",
        Endpoint(
            post=reset_bios, privileges={"POST": "ConfigureComponents"}, action="Bios.ResetBios"
        ),
    )
    add(
        f"{base}/SecureBoot",
        Endpoint(
            "SecureBoot",
            get=getter(lambda: inv.secure_boot(ident, bmc.target.secure_boot())),
            patch=patch_secure_boot,
            privileges={"PATCH": "ConfigureComponents"},
        ),
    )


def route(bmc: Bmc, parts: tuple[str, ...]) -> Endpoint | None:
    """An event log entry: /redfish/v1/{Systems/<id>|Managers/BMC}/LogServices/<log>/Entries/<n>."""
    if len(parts) != 8 or parts[:2] != ("redfish", "v1") or parts[4] != "LogServices":
        return None
    ident = bmc.ident
    owner = parts[2:4]
    if owner in (("Systems", ident.system_id), ("Systems", rs.PLACEMAT_ID)):
        base, log_id = f"{rs.SYSTEMS}/{rs.segment(owner[1])}", inv.SYSTEM_LOG
    elif owner == ("Managers", rs.MANAGER_ID):
        base, log_id = ident.manager_uri, inv.MANAGER_LOG
    else:
        return None
    if parts[5:7] != (log_id, "Entries") or not parts[7].isdigit():
        return None
    event = bmc.target.events.get(int(parts[7]))
    if event is None:
        return None

    async def entry(call: Call) -> Json:
        return inv.log_entry(base, log_id, event)

    return Endpoint("LogEntry", get=entry)


__all__ = ["bios_patch", "extend", "route", "secure_boot_patch", "take_indicator"]
