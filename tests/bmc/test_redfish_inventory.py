"""The Redfish inventory of a real guest, read as a provisioner does: sushy inspects it as
Ironic's redfish inspection does, curl checks what sushy does not read, and the event log
is the one IPMI reads as its SEL. The guest has no network here (that needs root), so
its NICs are checked in test_redfish_inventory_units."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.bmc.conftest import RunningMachine, start_machine
from tests.bmc.test_redfish import ADMIN, CA_ENV, OPERATOR, VIEWER, Bmc, serve_redfish
from tests.guest.build import GuestPaths

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NODE = "inv-rf"
SYSTEM = f"/redfish/v1/Systems/{NODE}"
CHASSIS = f"/redfish/v1/Chassis/{NODE}"
MANAGER = "/redfish/v1/Managers/BMC"
LOG = f"{SYSTEM}/LogServices/EventLog"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(
    guest: GuestPaths, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningMachine]:
    running = await start_machine(
        guest,
        tmp_path_factory.mktemp("inv-rf"),
        NODE,
        disk=True,
        smbios="  manufacturer: Acme\n  product: Rack 2U\n",
        memory="512M",
        smp="{cpus: 2, sockets: 1, cores: 2, threads: 1}",
    )
    try:
        yield running
    finally:
        await running.machine.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bmc(node: RunningMachine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bmc]:
    async with serve_redfish(node, tmp_path_factory.mktemp("inv-rf-bmc")) as running:
        yield running


async def reset(bmc: Bmc, reset_type: str) -> Any:
    return await bmc.curl(
        f"{SYSTEM}/Actions/ComputerSystem.Reset", method="POST", body={"ResetType": reset_type}
    )


@pytest.fixture
def trusting_our_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CA_ENV:
        monkeypatch.delenv(name, raising=False)


async def sushy_system(bmc: Bmc) -> tuple[Any, Any]:
    import sushy

    # Basic auth: no session for a garbage collector to log out on the event loop.
    auth = sushy.auth.BasicAuth(*ADMIN)

    def connect() -> tuple[Any, Any]:
        client = sushy.Sushy(f"{bmc.url}/redfish/v1", auth=auth, verify=str(bmc.ca))
        return client, client.get_system(SYSTEM)

    return await asyncio.to_thread(connect)


async def test_sushy_inspects_the_node_as_ironic_does(bmc: Bmc, trusting_our_ca: None) -> None:
    import sushy

    await bmc.settle()
    _client, system = await sushy_system(bmc)

    def inspect() -> dict[str, Any]:
        drives = [d for s in system.storage.get_members() for d in s.drives]
        return {
            "processors": system.processors.summary,
            "sockets": len(system.processors.get_members()),
            "memory": system.memory_summary.size_gib,
            "nics": system.ethernet_interfaces.summary,
            "simple": system.simple_storage.disks_sizes_bytes,
            "volumes": system.storage.volumes_sizes_bytes,
            "drives": [(d.capacity_bytes, d.media_type, d.serial_number) for d in drives],
            "bios": dict(system.bios.attributes),
            "secure_boot": system.secure_boot.enabled,
        }

    seen = await asyncio.to_thread(inspect)
    facts = bmc.target.facts
    assert seen["processors"] == (2, sushy.ProcessorArchitecture.X86)  # logical CPUs
    assert seen["sockets"] == 1
    assert seen["memory"] == 0  # 512 MiB: sushy reads whole GiB
    assert seen["nics"] == {}  # a node without a network here: see the unit tests for NICs
    assert seen["simple"] == seen["volumes"] == [1 << 20]
    ((size, media, serial),) = seen["drives"]
    assert size == 1 << 20 and media == "SSD"
    assert serial == facts.drives[0].serial and serial.startswith("VDC")
    # (ProcVirtualization's value depends on whether the BIOS test ran first.)
    assert seen["bios"]["BootMode"] == "Bios" and "ProcVirtualization" in seen["bios"]
    assert seen["secure_boot"] is False

    memory = await bmc.get(f"{SYSTEM}/Memory")
    assert memory["Members@odata.count"] == 1
    dimm = await bmc.get(memory["Members"][0]["@odata.id"])
    assert dimm["CapacityMiB"] == 512
    cpu = await bmc.get(f"{SYSTEM}/Processors/CPU1")
    assert (cpu["TotalCores"], cpu["TotalThreads"]) == (2, 2)
    summary = (await bmc.get(SYSTEM))["ProcessorSummary"]
    assert summary["Count"] == 1 and summary["LogicalProcessorCount"] == 2


async def test_bios_settings_wait_for_the_next_reset(bmc: Bmc, trusting_our_ca: None) -> None:
    boots = await bmc.settle()
    _client, system = await sushy_system(bmc)
    bios = await asyncio.to_thread(lambda: system.bios)
    await asyncio.to_thread(bios.set_attributes, {"ProcVirtualization": "Disabled"})
    await asyncio.to_thread(bios.refresh)
    pending = await asyncio.to_thread(lambda: bios.pending_attributes)
    assert pending == {"ProcVirtualization": "Disabled"}
    assert bios.attributes["ProcVirtualization"] == "Enabled"

    # Bad writes are refused whole, with the message naming the attribute.
    bad = await bmc.curl(
        f"{SYSTEM}/Bios/Settings",
        method="PATCH",
        body={"Attributes": {"NumLock": "Off", "BootMode": "Uefi"}},
        user=OPERATOR,
    )
    assert bad.status == 400 and bad.message_ids() == ["PropertyNotWritable"]
    assert "Attributes/BootMode" in bad.json()["error"]["@Message.ExtendedInfo"][0]["Message"]
    unknown = await bmc.curl(
        f"{SYSTEM}/Bios/Settings", method="PATCH", body={"Attributes": {"Turbo": "On"}}
    )
    assert unknown.status == 400 and unknown.message_ids() == ["PropertyUnknown"]
    viewer = await bmc.curl(
        f"{SYSTEM}/Bios/Settings", method="PATCH", body={"Attributes": {}}, user=VIEWER
    )
    assert viewer.status == 403
    assert (await bmc.get(f"{SYSTEM}/Bios/Settings"))["Attributes"] == {
        "ProcVirtualization": "Disabled"
    }

    assert (await reset(bmc, "ForceRestart")).status == 204
    await bmc.booted(boots + 1)
    current = await bmc.get(f"{SYSTEM}/Bios")
    assert current["Attributes"]["ProcVirtualization"] == "Disabled"
    assert (await bmc.get(f"{SYSTEM}/Bios/Settings"))["Attributes"] == {}

    await asyncio.to_thread(bios.reset_bios)
    assert (await bmc.get(f"{SYSTEM}/Bios/Settings"))["Attributes"]["ProcVirtualization"] == (
        "Enabled"
    )


async def test_event_log_and_sensors_follow_the_power(bmc: Bmc) -> None:
    boots = await bmc.settle()
    assert (
        await bmc.curl(f"{LOG}/Actions/LogService.ClearLog", method="POST", body={})
    ).status == (204)
    assert (await reset(bmc, "ForceOff")).status == 204
    await bmc.power("Off")
    cpu = await bmc.get(f"{CHASSIS}/Sensors/CPUTemp")
    assert cpu["Reading"] is None and cpu["Status"]["State"] == "StandbyOffline"
    assert (await bmc.get(f"{CHASSIS}/Sensors/PS1InputPower"))["Reading"] == 10.0

    assert (await reset(bmc, "On")).status == 204
    await bmc.booted(boots + 1)
    assert (await bmc.get(f"{CHASSIS}/Sensors/CPUTemp"))["Reading"] == 41.0

    async def logged() -> list[tuple[str, str]]:
        entries = (await bmc.get(f"{LOG}/Entries"))["Members"]
        return [(e["SensorType"], e["Message"].split(" (")[0]) for e in entries]

    expected = [
        ("Event Logging Disabled", "The event log was cleared."),
        ("PowerUnit", "The system was powered off."),
        ("System ACPI PowerState", "The system was powered on."),
        ("SystemBoot/Restart", "The system is booting after a power up."),
    ]
    for _ in range(100):
        if await logged() == expected:
            break
        await asyncio.sleep(0.2)
    assert await logged() == expected
    # The same log is the Manager's SEL and IPMI's.
    sel = (await bmc.get(f"{MANAGER}/LogServices/SEL/Entries"))["Members"]
    assert [e["Id"] for e in sel] == [str(e.record_id) for e in bmc.target.events.entries()]
    first = sel[0]["@odata.id"].replace(f"{MANAGER}/LogServices/SEL", LOG)
    assert (await bmc.get(first))["EntryCode"] == "Assert"


async def test_identify_light_secure_boot_and_reset_to_defaults(bmc: Bmc) -> None:
    await bmc.settle()  # the boot under way is logged before the log is checked below
    on = await bmc.curl(SYSTEM, method="PATCH", body={"LocationIndicatorActive": True})
    assert on.status == 200 and on.json()["LocationIndicatorActive"] is True
    assert bmc.target.settings.indicator == "Blinking"
    assert (await bmc.get(CHASSIS))["LocationIndicatorActive"] is True
    off = await bmc.curl(CHASSIS, method="PATCH", body={"IndicatorLED": "Off"}, user=OPERATOR)
    assert off.status == 200 and bmc.target.settings.indicator == "Off"
    bad = await bmc.curl(SYSTEM, method="PATCH", body={"LocationIndicatorActive": "yes"})
    assert bad.status == 400 and bad.message_ids() == ["PropertyValueTypeError"]

    secure = await bmc.curl(f"{SYSTEM}/SecureBoot", method="PATCH", body={"SecureBootEnable": True})
    assert secure.status == 400 and secure.message_ids() == ["PropertyValueNotInList"]
    same = await bmc.curl(f"{SYSTEM}/SecureBoot", method="PATCH", body={"SecureBootEnable": False})
    assert same.status == 200 and same.json()["SecureBootCurrentBoot"] == "Disabled"

    manager = await bmc.get(MANAGER)
    action = manager["Actions"]["#Manager.ResetToDefaults"]
    login = await bmc.curl(
        "/redfish/v1/SessionService/Sessions",
        method="POST",
        body={"UserName": ADMIN[0], "Password": ADMIN[1]},
        user=None,
    )
    token = login.headers["x-auth-token"]
    bmc.target.settings.identify(None)
    refused = await bmc.curl(action["target"], method="POST", body={"ResetType": "Everything"})
    assert refused.status == 400
    done = await bmc.curl(action["target"], method="POST", body={"ResetType": "ResetAll"})
    assert done.status == 204
    assert (await bmc.curl(MANAGER, token=token, user=None)).status == 401  # sessions ended
    assert bmc.target.settings.indicator == "Off"
    assert [e.kind for e in bmc.target.events.entries()] == ["log-cleared"]
