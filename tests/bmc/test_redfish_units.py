"""The Redfish service's pure parts, without a server or a guest: the resource builders,
the request-body checks, sessions, credentials, messages and what each reset does."""

from __future__ import annotations

import asyncio
import datetime
import logging
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from vdc_runtime.bmc.redfish import bodies, power
from vdc_runtime.bmc.redfish import resources as rs
from vdc_runtime.bmc.redfish.auth import authenticate, basic_credentials
from vdc_runtime.bmc.redfish.messages import RedfishError, error_body, message
from vdc_runtime.bmc.redfish.sessions import SessionLimitError, SessionStore
from vdc_runtime.bmc.target import BootOverride, PowerStateError, SystemFacts
from vdc_runtime.bmc.users import BmcUser, Users

FACTS = SystemFacts(
    name="node-1",
    serial="SER-1",
    uuid="0d8f4c0e-7b51-5d3e-9a35-5c1b0f3b2a11",
    manufacturer="Acme",
    model="Rack 1U",
    memory_mib=3072,
    cpus=4,
    uefi=True,
    tpm=False,
    macs=("52:54:00:00:00:01", "52:54:00:00:00:02"),
)
IDENT = rs.Identity(FACTS, "10.0.0.5", 443, "1.2.3")


def ids(infos: list[dict]) -> list[str]:
    return [i["MessageId"].rsplit(".", 1)[1] for i in infos]


# -- resources -------------------------------------------------------------------------------


def test_computer_system_shows_the_node() -> None:
    body = rs.computer_system(IDENT, "On", BootOverride("pxe", "once", "uefi"))
    assert body["@odata.id"] == "/redfish/v1/Systems/node-1"
    assert body["@odata.type"] == f"#ComputerSystem.{rs.SCHEMAS['ComputerSystem']}.ComputerSystem"
    assert (body["Id"], body["SerialNumber"], body["UUID"]) == ("node-1", "SER-1", FACTS.uuid)
    assert (body["Manufacturer"], body["Model"]) == ("Acme", "Rack 1U")
    assert body["MemorySummary"]["TotalSystemMemoryGiB"] == 3.0
    assert body["ProcessorSummary"]["Count"] == 4
    assert body["PowerState"] == "On"
    assert "TrustedModules" not in body
    boot = body["Boot"]
    assert (
        boot["BootSourceOverrideTarget"],
        boot["BootSourceOverrideEnabled"],
        boot["BootSourceOverrideMode"],
    ) == ("Pxe", "Once", "UEFI")
    assert set(boot["BootSourceOverrideTarget@Redfish.AllowableValues"]) == {
        "None",
        "Pxe",
        "Hdd",
        "Cd",
        "BiosSetup",
        "UefiHttp",
    }
    assert body["Links"]["ManagedBy"] == [{"@odata.id": "/redfish/v1/Managers/BMC"}]
    assert body["Links"]["Chassis"] == [{"@odata.id": "/redfish/v1/Chassis/node-1"}]
    reset = body["Actions"]["#ComputerSystem.Reset"]
    assert reset["target"] == "/redfish/v1/Systems/node-1/Actions/ComputerSystem.Reset"
    assert reset["ResetType@Redfish.AllowableValues"] == list(rs.SYSTEM_RESET_TYPES)


def test_power_state_unknown_is_null_and_a_tpm_is_shown() -> None:
    ident = replace(IDENT, facts=replace(FACTS, tpm=True, memory_mib=128))
    body = rs.computer_system(ident, "Unknown", BootOverride())
    assert body["PowerState"] is None
    assert body["Status"]["Health"] == "Critical"
    assert body["TrustedModules"][0]["InterfaceType"] == "TPM2_0"
    assert body["MemorySummary"]["TotalSystemMemoryGiB"] == 0.125
    assert rs.computer_system(IDENT, "Off", BootOverride())["Status"]["State"] == "StandbyOffline"


def test_collections_count_their_members_and_the_alias_is_not_one() -> None:
    systems = rs.systems_collection(IDENT)
    assert systems["Members"] == [{"@odata.id": "/redfish/v1/Systems/node-1"}]
    assert systems["Members@odata.count"] == 1
    nics = rs.ethernet_interfaces(IDENT)
    assert nics["Members@odata.count"] == 2
    assert rs.ethernet_interface(IDENT, 2)["MACAddress"] == "52:54:00:00:00:02"


def test_names_become_readable_uri_segments() -> None:
    odd = replace(IDENT, facts=replace(FACTS, name="rack1:node 2%"))
    assert odd.system_uri == "/redfish/v1/Systems/rack1:node%202%25"
    assert (
        rs.account_uri(BmcUser("ops team", "x")) == "/redfish/v1/AccountService/Accounts/ops%20team"
    )


def test_manager_links_what_it_manages() -> None:
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    body = rs.manager(IDENT, now)
    assert body["ManagerType"] == "BMC"
    assert body["Links"]["ManagerForServers"] == [{"@odata.id": IDENT.system_uri}]
    assert body["Links"]["ManagerForChassis"] == [{"@odata.id": IDENT.chassis_uri}]
    assert body["DateTime"] == "2026-01-02T03:04:05+00:00"
    assert body["ServiceEntryPointUUID"] == rs.service_root(IDENT)["UUID"] != FACTS.uuid


def test_the_bmc_port_shows_its_address() -> None:
    v4 = rs.manager_ethernet_interface(IDENT)
    assert v4["IPv4Addresses"] == [{"Address": "10.0.0.5", "AddressOrigin": "Static"}]
    assert v4["IPv6Addresses"] == []
    v6 = rs.manager_ethernet_interface(replace(IDENT, address="fd00::5"))
    assert v6["IPv6Addresses"][0]["Address"] == "fd00::5" and v6["IPv4Addresses"] == []
    reset = rs.manager(IDENT, datetime.datetime.now(datetime.UTC))["Actions"]["#Manager.Reset"]
    assert reset["target"] == "/redfish/v1/Managers/BMC/Actions/Manager.Reset"


def test_roles_carry_the_standard_privileges() -> None:
    assert rs.role("ReadOnly")["AssignedPrivileges"] == ["Login", "ConfigureSelf"]
    assert set(rs.role("Operator")["AssignedPrivileges"]) == {
        "Login",
        "ConfigureComponents",
        "ConfigureSelf",
    }
    assert len(rs.role("Administrator")["AssignedPrivileges"]) == 5
    account = rs.account(BmcUser("ops", "secret", "Operator"))
    assert account["RoleId"] == "Operator"
    assert "secret" not in str(account)
    assert account["Links"]["Role"] == {"@odata.id": "/redfish/v1/AccountService/Roles/Operator"}


def test_metadata_references_every_schema_served() -> None:
    tree = ET.fromstring(rs.metadata_document())
    ns = {
        "edmx": "http://docs.oasis-open.org/odata/ns/edmx",
        "edm": "http://docs.oasis-open.org/odata/ns/edm",
    }
    included = {i.get("Namespace") for i in tree.iterfind("edmx:Reference/edmx:Include", ns)}
    for schema, version in rs.SCHEMAS.items():
        assert schema in included
        if version:
            assert f"{schema}.{version}" in included
    container = tree.find("edmx:DataServices/edm:Schema/edm:EntityContainer", ns)
    assert container is not None
    assert container.get("Extends") == f"ServiceRoot.{rs.SCHEMAS['ServiceRoot']}.ServiceContainer"


def test_odata_document_and_version_document() -> None:
    assert rs.redfish_version_document() == {"v1": "/redfish/v1/"}
    document = rs.odata_service_document()
    assert document["@odata.context"] == "/redfish/v1/$metadata"
    assert {"name": "Service", "kind": "Singleton", "url": "/redfish/v1/"} in document["value"]


def test_described_by_matches_the_odata_type() -> None:
    version = rs.SCHEMAS["ServiceRoot"]
    assert rs.described_by("ServiceRoot").endswith(f"/ServiceRoot.{version}.json")
    assert rs.described_by("SessionCollection").endswith("/SessionCollection.json")


# -- request bodies --------------------------------------------------------------------------


def test_boot_patch_maps_onto_the_target_values() -> None:
    current = BootOverride(mode="legacy")
    body = {
        "Boot": {
            "BootSourceOverrideTarget": "UefiHttp",
            "BootSourceOverrideEnabled": "Continuous",
            "BootSourceOverrideMode": "UEFI",
        }
    }
    assert bodies.system_patch(body, current) == BootOverride("uefi-http", "continuous", "uefi")
    only_mode = {"Boot": {"BootSourceOverrideMode": "UEFI"}}
    assert bodies.system_patch(only_mode, current) == BootOverride("none", "disabled", "uefi")


def test_boot_patch_target_alone_means_the_next_boot() -> None:
    patch = {"Boot": {"BootSourceOverrideTarget": "Pxe"}}
    assert bodies.system_patch(patch, BootOverride()).enabled == "once"
    continuous = BootOverride("hdd", "continuous")
    assert bodies.system_patch(patch, continuous) == BootOverride("pxe", "continuous")
    none = {"Boot": {"BootSourceOverrideTarget": "None"}}
    assert bodies.system_patch(none, continuous).enabled == "disabled"


def test_boot_patch_reports_every_problem_at_once() -> None:
    body = {
        "Boot": {"BootSourceOverrideTarget": "Floppy", "BootSourceOverrideEnabled": 1},
        "AssetTag": "x",
        "PowerState": "Off",
        "@odata.etag": "ignored",
    }
    with pytest.raises(RedfishError) as err:
        bodies.system_patch(body, BootOverride())
    assert err.value.status == 400
    assert sorted(ids(err.value.infos)) == [
        "PropertyNotWritable",
        "PropertyUnknown",
        "PropertyValueNotInList",
        "PropertyValueTypeError",
    ]
    related = {p for i in err.value.infos for p in i.get("RelatedProperties", [])}
    assert "/Boot/BootSourceOverrideTarget" in related
    assert "/AssetTag" in related


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"@odata.id": "/redfish/v1/Systems/node-1"}, "NoOperation"),
        ({"Boot": {}}, "NoOperation"),
        ({"Boot": "Pxe"}, "PropertyValueTypeError"),
        ({"Boot": {"BootOrder": ["a"]}}, "PropertyNotWritable"),
        ({"Boot": {"Frobnicate": 1}}, "PropertyUnknown"),
    ],
)
def test_boot_patch_refusals(body: dict, expected: str) -> None:
    with pytest.raises(RedfishError) as err:
        bodies.system_patch(body, BootOverride())
    assert ids(err.value.infos) == [expected]


def test_reset_type_checks() -> None:
    allowed = rs.SYSTEM_RESET_TYPES
    assert bodies.reset_type({"ResetType": "Nmi"}, "ComputerSystem.Reset", allowed) == "Nmi"
    for body, expected in (
        ({}, ["ActionParameterMissing"]),
        ({"ResetType": 3}, ["ActionParameterValueTypeError"]),
        ({"ResetType": "Suspend"}, ["ActionParameterValueNotInList"]),
        ({"ResetType": "On", "Delay": 3}, ["ActionParameterUnknown"]),
    ):
        with pytest.raises(RedfishError) as err:
            bodies.reset_type(body, "ComputerSystem.Reset", allowed)
        assert ids(err.value.infos) == expected
    with pytest.raises(RedfishError) as err:
        bodies.reset_type({"ResetType": "Bogus"}, "ComputerSystem.Reset", allowed)
    assert err.value.infos[0]["MessageArgs"] == ["Bogus", "ResetType", "ComputerSystem.Reset"]


def test_decode_refuses_what_is_not_one_json_object() -> None:
    for data, expected in (
        (b"{", "MalformedJSON"),
        (b"[1]", "MalformedJSON"),
        (b'{"a": NaN}', "MalformedJSON"),
        (b"\xff", "MalformedJSON"),
        (b'{"a": 1, "a": 2}', "PropertyDuplicate"),
        (b"", "EmptyJSON"),
    ):
        with pytest.raises(RedfishError) as err:
            bodies.decode(data)
        assert ids(err.value.infos) == [expected], data
    assert bodies.decode(b"", action="ComputerSystem.Reset") == {}
    with pytest.raises(RedfishError) as err:
        bodies.decode(b'{"ResetType": "On", "ResetType": "Off"}', action="ComputerSystem.Reset")
    assert ids(err.value.infos) == ["ActionParameterDuplicate"]


def test_login_body_never_echoes_the_password() -> None:
    assert bodies.login({"UserName": "a", "Password": "b"}) == bodies.Login("a", "b")
    with_context = bodies.login({"UserName": "a", "Password": "b", "Context": "c"})
    assert with_context.context == "c"
    with pytest.raises(RedfishError) as err:
        bodies.login({"UserName": "a", "Password": 12345678})
    assert "12345678" not in str(err.value.body())
    with pytest.raises(RedfishError) as err:
        bodies.login({"UserName": "a"})
    assert ids(err.value.infos) == ["PropertyMissing"]


def test_session_service_patch() -> None:
    assert bodies.session_service_patch({"SessionTimeout": 600}) == 600
    for body, expected in (
        ({"SessionTimeout": 5}, "PropertyValueOutOfRange"),
        ({"SessionTimeout": True}, "PropertyValueTypeError"),
        ({"ServiceEnabled": False}, "PropertyNotWritable"),
        ({"Foo": 1}, "PropertyUnknown"),
    ):
        with pytest.raises(RedfishError) as err:
            bodies.session_service_patch(body)
        assert ids(err.value.infos) == [expected]


# -- messages, sessions, credentials ---------------------------------------------------------


def test_messages_fill_the_registry_text() -> None:
    info = message("ActionParameterValueNotInList", "Bogus", "ResetType", "ComputerSystem.Reset")
    assert info["MessageId"] == "Base.1.16.0.ActionParameterValueNotInList"
    assert info["Message"] == (
        "The value 'Bogus' for the parameter ResetType in the action ComputerSystem.Reset is not"
        " in the list of acceptable values."
    )
    assert info["MessageArgs@odata.count"] == 3
    body = error_body("summary", [info])
    assert body["error"]["code"] == info["MessageId"]
    assert error_body("two", [info, info])["error"]["code"] == "Base.1.16.0.GeneralError"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_sessions_time_out_when_idle() -> None:
    clock = Clock()
    store = SessionStore(timeout=60, clock=clock)
    user = BmcUser("admin", "pw")
    session, token = store.create(user, "127.0.0.1")
    assert len(token) == 32 and int(token, 16) >= 0
    assert token not in repr(store.__dict__)
    clock.now += 50
    assert store.authenticate(token) is session  # the use restarts the idle time
    clock.now += 50
    assert store.authenticate(token) is session
    clock.now += 61
    assert store.authenticate(token) is None
    assert store.get(session.id) is None
    assert len(store) == 0


def test_sessions_limit_and_logout() -> None:
    store = SessionStore(limit=2)
    user = BmcUser("admin", "pw")
    first, token = store.create(user, None)
    store.create(user, None)
    with pytest.raises(SessionLimitError):
        store.create(user, None)
    assert store.delete(first.id)
    assert not store.delete(first.id)
    assert store.authenticate(token) is None
    store.create(user, None)


def test_credentials() -> None:
    users = Users((BmcUser("admin", "pa:ss", "Administrator"), BmcUser("ro", "x", "ReadOnly")))
    store = SessionStore()
    assert basic_credentials("Basic YWRtaW46cGE6c3M=") == ("admin", "pa:ss")
    assert basic_credentials("Bearer abc") is None
    assert basic_credentials("Basic !!!") is None
    who = authenticate(users, store, None, "Basic YWRtaW46cGE6c3M=")
    assert who.user.name == "admin" and who.may("ConfigureUsers")
    for token, header in ((None, None), (None, "Basic YWRtaW46d3Jvbmc="), ("nope", None)):
        with pytest.raises(RedfishError) as err:
            authenticate(users, store, token, header)
        assert err.value.status == 401
        assert "WWW-Authenticate" in err.value.headers
    session, token = store.create(users.get("ro"), None)  # type: ignore[arg-type]
    who = authenticate(users, store, token, None)
    assert who.session is session and not who.may("ConfigureComponents")
    # A stale token is refused even beside valid Basic credentials.
    store.delete(session.id)
    with pytest.raises(RedfishError):
        authenticate(users, store, token, "Basic YWRtaW46cGE6c3M=")


# -- resets ----------------------------------------------------------------------------------


class FakeTarget:
    """A machine that switches instantly and records what was asked of it."""

    def __init__(self, power: str = "On", *, obeys_button: bool = True) -> None:
        self.facts = FACTS
        self.power = power
        self.obeys_button = obeys_button
        self.calls: list[str] = []

    async def power_state(self) -> str:
        return self.power

    async def power_on(self) -> bool:
        self.calls.append("power_on")
        if self.power == "On":
            return False
        self.power = "On"
        return True

    async def power_off(self) -> bool:
        self.calls.append("power_off")
        if self.power == "Off":
            return False
        self.power = "Off"
        return True

    async def power_cycle(self) -> None:
        self.calls.append("power_cycle")
        self.power = "On"

    def _on_only(self, name: str) -> None:
        self.calls.append(name)
        if self.power != "On":
            raise PowerStateError(f"node {FACTS.name} is off")

    async def reset(self) -> None:
        self._on_only("reset")

    async def nmi(self) -> None:
        self._on_only("nmi")

    async def graceful_shutdown(self) -> None:
        self._on_only("graceful_shutdown")
        if self.obeys_button:
            asyncio.get_running_loop().call_later(0.05, setattr, self, "power", "Off")


def spawner(tasks: list[asyncio.Task[None]]):
    return lambda coro: tasks.append(asyncio.get_running_loop().create_task(coro))


@pytest.mark.parametrize(
    ("reset_type", "power_state", "calls"),
    [
        ("On", "Off", ["power_on"]),
        ("ForceOn", "Off", ["power_on"]),
        ("ForceOff", "On", ["power_off"]),
        ("GracefulShutdown", "On", ["graceful_shutdown"]),
        ("ForceRestart", "On", ["reset"]),
        ("PowerCycle", "Off", ["power_cycle"]),
        ("PowerCycle", "On", ["power_cycle"]),
        ("Nmi", "On", ["nmi"]),
        ("PushPowerButton", "Off", ["power_on"]),
        ("PushPowerButton", "On", ["graceful_shutdown"]),
    ],
)
async def test_each_reset_does_what_its_name_says(
    reset_type: str, power_state: str, calls: list[str]
) -> None:
    target = FakeTarget(power_state)
    tasks: list[asyncio.Task[None]] = []
    await power.reset_system(target, reset_type, spawner(tasks), 5)  # type: ignore[arg-type]
    assert target.calls == calls
    assert not tasks


@pytest.mark.parametrize(
    ("reset_type", "power_state", "expected"),
    [
        ("On", "On", "Server is already powered ON."),
        ("ForceOn", "On", "Server is already powered ON."),
        ("ForceOff", "Off", "Server is already powered OFF."),
    ],
)
async def test_placemat_409_for_the_state_it_is_in(
    reset_type: str, power_state: str, expected: str
) -> None:
    with pytest.raises(RedfishError) as err:
        await power.reset_system(FakeTarget(power_state), reset_type, spawner([]), 5)  # type: ignore[arg-type]
    assert (err.value.status, err.value.summary) == (409, expected)
    chassis_type = "ForceOff" if reset_type == "ForceOff" else "On"
    with pytest.raises(RedfishError):
        await power.reset_chassis(FakeTarget(power_state), chassis_type)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "reset_type", ["ForceRestart", "Nmi", "GracefulShutdown", "GracefulRestart"]
)
async def test_resets_of_an_off_machine_are_refused(reset_type: str) -> None:
    tasks: list[asyncio.Task[None]] = []
    with pytest.raises(PowerStateError):
        await power.reset_system(FakeTarget("Off"), reset_type, spawner(tasks), 5)  # type: ignore[arg-type]
    assert not tasks


async def test_graceful_restart_powers_on_once_the_guest_is_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(power, "POLL_INTERVAL", 0.01)
    target = FakeTarget("On")
    tasks: list[asyncio.Task[None]] = []
    await power.reset_system(target, "GracefulRestart", spawner(tasks), 5)  # type: ignore[arg-type]
    assert target.calls == ["graceful_shutdown"] and target.power == "On"  # returns at once
    await asyncio.gather(*tasks)
    assert target.calls == ["graceful_shutdown", "power_on"]
    assert target.power == "On"


async def test_graceful_restart_gives_up_on_a_guest_that_stays_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(power, "POLL_INTERVAL", 0.01)
    target = FakeTarget("On", obeys_button=False)
    tasks: list[asyncio.Task[None]] = []
    with caplog.at_level(logging.WARNING, "vdc.bmc.redfish"):
        await power.reset_system(target, "GracefulRestart", spawner(tasks), 0.1)  # type: ignore[arg-type]
        await asyncio.gather(*tasks)
    assert target.calls == ["graceful_shutdown"]
    assert "still on after" in caplog.text
