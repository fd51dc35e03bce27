"""The HTTPS side: one aiohttp listener per BMC address, the request pipeline and handlers.

Every request goes through one pipeline, in the order a BMC must check things: protocol
headers, authentication (so nobody unauthenticated learns which URIs exist), the resource,
the method (405 with Allow), `$` queries (501), the privilege (403), then the handler.
Errors of any kind leave as DMTF error bodies.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import importlib.metadata
import ipaddress
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web, web_protocol
from aiohttp.http_parser import HttpRequestParserPy

from vdc_runtime.bmc.media import MediaError
from vdc_runtime.bmc.redfish import bodies, power
from vdc_runtime.bmc.redfish import media as vm
from vdc_runtime.bmc.redfish import resources as rs
from vdc_runtime.bmc.redfish.auth import REALM, Principal, authenticate, forbidden
from vdc_runtime.bmc.redfish.messages import RedfishError, error_body, message
from vdc_runtime.bmc.redfish.sessions import SessionLimitError, SessionStore
from vdc_runtime.bmc.stats import BmcStats
from vdc_runtime.bmc.target import BmcTarget, PowerStateError, TargetError
from vdc_runtime.bmc.users import Users

if TYPE_CHECKING:
    from vdc_runtime.bmc.faults import BmcFaults

log = logging.getLogger("vdc.bmc.redfish")

Json = dict[str, Any]

MAX_BODY = 64 * 1024  # the largest request this service takes is a few hundred bytes
SHUTDOWN_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 60.0
JSON_MEDIA = "application/json"
XML_MEDIA = "application/xml"

# Sent on every response: what DSP0266 requires (OData-Version, Cache-Control) and the
# hardening headers current BMC firmware sends, since browsers talk to BMCs too.
COMMON_HEADERS = {
    "OData-Version": "4.0",
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Server": "vdc-bmc",
}


def _firmware_version() -> str:
    try:
        return importlib.metadata.version("vdc")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


FIRMWARE_VERSION = _firmware_version()


# -- HTTP plumbing ---------------------------------------------------------------------------


class _Server(web.Server):
    """aiohttp's C parser (llhttp) answers 400 to a method it does not know before any
    handler runs, where Redfish wants 405 (or 501). aiohttp's own Python parser takes any
    token as a method, so the connections of this server are built with it."""

    def __call__(self) -> web_protocol.RequestHandler:
        if not hasattr(web_protocol, "HttpRequestParser"):  # pragma: no cover - aiohttp moved
            return super().__call__()
        # The constructor is synchronous, so no other server of this loop sees the swap.
        original = web_protocol.HttpRequestParser
        web_protocol.HttpRequestParser = HttpRequestParserPy  # type: ignore[misc]
        try:
            return super().__call__()
        finally:
            web_protocol.HttpRequestParser = original  # type: ignore[misc]


def _split(path: str) -> tuple[str, ...]:
    """Decoded path segments; a trailing slash names the same resource, as clients assume."""
    parts = path.split("/")
    if parts and parts[0] == "":
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    return tuple(unquote(p) for p in parts)


def _media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def _etag(body: Json | str | None) -> str:
    """A weak tag: the digest of the resource without its clock (DSP0266 asks to leave
    DateTime out), so it changes exactly when something a client could act on changes."""
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if k != "DateTime"}
    text = body if isinstance(body, str) else json.dumps(body, sort_keys=True)
    return 'W/"' + hashlib.sha256(text.encode()).hexdigest()[:24] + '"'


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 7232 2.3.2), as Redfish clients send tags back with or without W/."""
    wanted = etag.removeprefix("W/")
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == wanted:
            return True
    return False


def _dump(body: Json | None) -> bytes:
    # Indented, as bmcweb does: people read these with curl.
    return json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n"


@dataclass
class Reply:
    status: int
    body: Json | None = None
    headers: dict[str, str] = field(default_factory=dict)


Getter = Callable[["Call"], Awaitable[Json | str | None]]
Handler = Callable[["Call"], Awaitable[Reply]]


@dataclass
class Endpoint:
    """One URI: what its methods do, who may call them, and what describes it."""

    schema: str | None = None
    get: Getter | None = None
    patch: Handler | None = None
    post: Handler | None = None
    delete: Handler | None = None
    public: frozenset[str] = frozenset()
    privileges: dict[str, str] = field(default_factory=dict)
    media: str = JSON_MEDIA
    refusal: str | None = None  # why the methods missing from Allow are missing
    action: str | None = None  # an action URI: its name, for the messages about its body

    @property
    def allow(self) -> tuple[str, ...]:
        methods: list[str] = []
        if self.get is not None:
            methods += ["GET", "HEAD"]
        for name in ("PATCH", "POST", "DELETE"):
            if getattr(self, name.lower()) is not None:
                methods.append(name)
        return tuple(methods)

    def privilege(self, method: str) -> str | None:
        if method in self.public:
            return None
        if method in ("GET", "HEAD"):
            return self.privileges.get("GET", "Login")
        return self.privileges.get(method, "ConfigureManager")


@dataclass
class Call:
    """One request as the handlers see it."""

    request: web.BaseRequest
    principal: Principal | None
    path: str
    body: Json = field(default_factory=dict)

    @property
    def who(self) -> Principal:
        assert self.principal is not None  # only public endpoints run without one
        return self.principal


# -- one BMC ---------------------------------------------------------------------------------


class Bmc:
    """The Redfish service of one machine on one address: its resources, sessions, listener."""

    def __init__(
        self,
        address: str,
        port: int,
        target: BmcTarget,
        users: Users,
        ssl_context: ssl.SSLContext,
        graceful_timeout: Callable[[], float],
        stats: BmcStats | None = None,
        faults: BmcFaults | None = None,
    ) -> None:
        self.faults = faults
        self.address = address
        self.port = port
        self.target = target
        self.users = users
        self.sessions = SessionStore()
        self.ident = rs.Identity(target.facts, address, port, FIRMWARE_VERSION)
        self._ssl_context = ssl_context
        self._graceful_timeout = graceful_timeout
        self.stats = stats
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.ServerRunner | None = None
        self._static = self._static_endpoints()

    @property
    def node(self) -> str:
        return self.target.facts.name

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        # An idle keep-alive connection is closed after a minute, not aiohttp's hour.
        server = _Server(self.handle, access_log=None, keepalive_timeout=KEEPALIVE_TIMEOUT)
        runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.address, self.port, ssl_context=self._ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.sessions.clear()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- pipeline ----------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        try:
            refused = await self.faults.redfish(self.node) if self.faults is not None else None
            if refused is not None:
                raise refused
            response = await self._dispatch(request)
        except RedfishError as err:
            response = self._error_response(err)
        except PowerStateError as exc:
            response = self._error_response(
                RedfishError(409, str(exc), [message("ChassisPowerStateOnRequired", self.node)])
            )
        except TargetError as exc:
            log.error("node %s: Redfish %s %s: %s", self.node, request.method, request.path, exc)
            response = self._error_response(RedfishError(500, str(exc), [message("InternalError")]))
        except Exception:
            log.exception("node %s: Redfish %s %s failed", self.node, request.method, request.path)
            response = self._error_response(
                RedfishError(500, "Internal error in the BMC.", [message("InternalError")])
            )
        for name, value in COMMON_HEADERS.items():
            response.headers.setdefault(name, value)
        if self.stats is not None:
            self.stats.count(self.node, "redfish", response.status < 400)
        return response

    def _error_response(self, err: RedfishError) -> web.Response:
        response = web.Response(
            status=err.status,
            body=_dump(error_body(err.summary, err.infos)),
            content_type=JSON_MEDIA,
            charset="utf-8",
        )
        response.headers.update(err.headers)
        return response

    async def _dispatch(self, request: web.BaseRequest) -> web.Response:
        version = request.headers.get("OData-Version")
        if version is not None and version.strip() != "4.0":
            raise RedfishError(
                412,
                f"OData-Version {version} is not supported; this service speaks 4.0.",
                [message("HeaderInvalid", "OData-Version")],
            )
        path = request.path
        parts = _split(request.raw_path.split("?", 1)[0])
        endpoint = self._route(parts)
        method = request.method
        principal = None
        if endpoint is None or method not in endpoint.public:
            principal = authenticate(
                self.users,
                self.sessions,
                request.headers.get("X-Auth-Token"),
                request.headers.get("Authorization"),
            )
        if endpoint is None:
            raise RedfishError(
                404, f"There is no resource at {path}.", [message("ResourceMissingAtURI", path)]
            )
        allow = {"Allow": ", ".join(endpoint.allow)}
        if method not in endpoint.allow:
            summary = endpoint.refusal or f"{path} does not support {method}."
            raise RedfishError(405, summary, [message("OperationNotAllowed")], headers=allow)
        for key in request.query:
            if key.startswith("$"):
                raise RedfishError(
                    501,
                    f"The query parameter {key} is not supported.",
                    [message("QueryParameterUnsupported", key)],
                    headers=allow,
                )
        privilege = endpoint.privilege(method)
        if privilege is not None and principal is not None and not principal.may(privilege):
            raise forbidden(privilege)
        call = Call(request, principal, path)
        try:
            response = await self._method(endpoint, call, method)
        except RedfishError as err:
            err.headers = {**allow, **err.headers}
            raise
        response.headers.update(allow)
        return response

    async def _method(self, endpoint: Endpoint, call: Call, method: str) -> web.Response:
        if method in ("GET", "HEAD"):
            assert endpoint.get is not None
            payload, etag = await self._representation(endpoint, call)
            headers = {"ETag": etag}
            if endpoint.schema is not None:
                headers["Link"] = f"<{rs.described_by(endpoint.schema)}>; rel=describedby"
            if_none_match = call.request.headers.get("If-None-Match")
            if if_none_match is not None and _etag_matches(if_none_match, etag):
                return web.Response(status=304, headers=headers)
            response = web.Response(
                status=200, body=payload, content_type=endpoint.media, charset="utf-8"
            )
            response.headers.update(headers)
            return response
        if method in ("PATCH", "POST"):
            call.body = await self._read_json(call.request, endpoint.action)
        if method == "PATCH":
            assert endpoint.patch is not None and endpoint.get is not None
            # Check and write under one lock, or two writers holding the same ETag both win.
            async with self._write_lock:
                if_match = call.request.headers.get("If-Match")
                if if_match is not None:
                    _, etag = await self._representation(endpoint, call)
                    if not _etag_matches(if_match, etag):
                        raise RedfishError(
                            412,
                            "The resource changed since the ETag in If-Match was read.",
                            [message("PreconditionFailed")],
                        )
                await endpoint.patch(call)
                payload, etag = await self._representation(endpoint, call)
            response = web.Response(
                status=200, body=payload, content_type=JSON_MEDIA, charset="utf-8"
            )
            response.headers["ETag"] = etag
            return response
        handler = endpoint.post if method == "POST" else endpoint.delete
        assert handler is not None
        reply = await handler(call)
        if reply.body is None:
            response = web.Response(status=reply.status)
        else:
            response = web.Response(
                status=reply.status,
                body=_dump(reply.body),
                content_type=JSON_MEDIA,
                charset="utf-8",
            )
        response.headers.update(reply.headers)
        return response

    async def _representation(self, endpoint: Endpoint, call: Call) -> tuple[bytes, str]:
        assert endpoint.get is not None
        body = await endpoint.get(call)
        payload = body.encode() if isinstance(body, str) else _dump(body)
        return payload, _etag(body)

    async def _read_json(self, request: web.BaseRequest, action: str | None) -> Json:
        length = request.content_length
        if length is not None and length > MAX_BODY:
            raise RedfishError(
                413, f"The request body exceeds {MAX_BODY} bytes.", [message("PayloadTooLarge")]
            )
        if request.headers.get("Expect", "").lower() == "100-continue":
            # The low-level server leaves the interim answer to the handler; curl waits for it.
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        data = await request.content.read(MAX_BODY + 1)
        while len(data) <= MAX_BODY and not request.content.at_eof():
            chunk = await request.content.read(MAX_BODY + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_BODY:
            raise RedfishError(
                413, f"The request body exceeds {MAX_BODY} bytes.", [message("PayloadTooLarge")]
            )
        media = _media_type(request.headers.get("Content-Type"))
        if data.strip() and media != JSON_MEDIA:
            shown = media or "none"
            raise RedfishError(
                415,
                f"The request body must be application/json (Content-Type was {shown}).",
                [message("HeaderInvalid", "Content-Type")],
            )
        return bodies.decode(data, action=action)

    # -- routing -----------------------------------------------------------------------------

    def _static_endpoints(self) -> dict[tuple[str, ...], Endpoint]:
        ident = self.ident
        table: dict[tuple[str, ...], Endpoint] = {}

        def add(uri: str, endpoint: Endpoint) -> None:
            table[_split(uri)] = endpoint

        public = frozenset(("GET", "HEAD"))

        async def nothing(call: Call) -> None:
            return None

        async def version(call: Call) -> Json:
            return rs.redfish_version_document()

        async def root(call: Call) -> Json:
            return rs.service_root(ident)

        async def odata(call: Call) -> Json:
            return rs.odata_service_document()

        async def metadata(call: Call) -> str:
            return rs.metadata_document()

        # Placemat answered `null` here without a login; scripts probe it for liveness.
        table[("",)] = Endpoint(get=nothing, public=public)
        add("/redfish", Endpoint(get=version, public=public))
        add(rs.ROOT, Endpoint("ServiceRoot", get=root, public=public))
        add(f"{rs.ROOT}/odata", Endpoint(get=odata, public=public))
        add(rs.METADATA, Endpoint(get=metadata, public=public, media=XML_MEDIA))

        async def systems(call: Call) -> Json:
            return rs.systems_collection(ident)

        add(rs.SYSTEMS, Endpoint("ComputerSystemCollection", get=systems))
        system = Endpoint(
            "ComputerSystem",
            get=self._get_system,
            patch=self._patch_system,
            privileges={"PATCH": "ConfigureComponents"},
        )
        system_reset = Endpoint(
            post=self._post_system_reset,
            privileges={"POST": "ConfigureComponents"},
            action="ComputerSystem.Reset",
        )

        async def system_reset_info(call: Call) -> Json:
            return rs.reset_action_info(ident.system_uri, rs.SYSTEM_RESET_TYPES)

        async def nics(call: Call) -> Json:
            return rs.ethernet_interfaces(ident)

        for system_id in (ident.system_id, rs.PLACEMAT_ID):
            base = f"{rs.SYSTEMS}/{rs.segment(system_id)}"
            add(base, system)
            add(f"{base}/Actions/ComputerSystem.Reset", system_reset)
            add(f"{base}/ResetActionInfo", Endpoint("ActionInfo", get=system_reset_info))
            add(f"{base}/EthernetInterfaces", Endpoint("EthernetInterfaceCollection", get=nics))
            for number in range(1, len(ident.facts.macs) + 1):

                async def nic(call: Call, number: int = number) -> Json:
                    return rs.ethernet_interface(ident, number)

                add(f"{base}/EthernetInterfaces/{number}", Endpoint("EthernetInterface", get=nic))

        async def chassis_collection(call: Call) -> Json:
            return rs.chassis_collection(ident)

        async def chassis(call: Call) -> Json:
            return rs.chassis(ident, await self.target.power_state())

        async def chassis_reset_info(call: Call) -> Json:
            return rs.reset_action_info(ident.chassis_uri, rs.CHASSIS_RESET_TYPES)

        add(rs.CHASSIS, Endpoint("ChassisCollection", get=chassis_collection))
        chassis_reset = Endpoint(
            post=self._post_chassis_reset,
            privileges={"POST": "ConfigureComponents"},
            action="Chassis.Reset",
        )
        for chassis_id in (ident.system_id, rs.PLACEMAT_ID):
            base = f"{rs.CHASSIS}/{rs.segment(chassis_id)}"
            add(base, Endpoint("Chassis", get=chassis))
            add(f"{base}/Actions/Chassis.Reset", chassis_reset)
            add(f"{base}/ResetActionInfo", Endpoint("ActionInfo", get=chassis_reset_info))

        async def managers(call: Call) -> Json:
            return rs.managers_collection(ident)

        async def manager(call: Call) -> Json:
            return rs.manager(ident, self.target.events.now_utc())

        async def network_protocol(call: Call) -> Json:
            return rs.network_protocol(ident)

        async def manager_nics(call: Call) -> Json:
            return rs.manager_ethernet_interfaces(ident)

        async def manager_nic(call: Call) -> Json:
            return rs.manager_ethernet_interface(ident)

        async def manager_reset_info(call: Call) -> Json:
            return rs.reset_action_info(ident.manager_uri, rs.MANAGER_RESET_TYPES)

        add(rs.MANAGERS, Endpoint("ManagerCollection", get=managers))
        add(ident.manager_uri, Endpoint("Manager", get=manager))
        add(
            f"{ident.manager_uri}/EthernetInterfaces",
            Endpoint("EthernetInterfaceCollection", get=manager_nics),
        )
        add(
            f"{ident.manager_uri}/EthernetInterfaces/{rs.MANAGER_NIC}",
            Endpoint("EthernetInterface", get=manager_nic),
        )
        add(
            f"{ident.manager_uri}/Actions/Manager.Reset",
            Endpoint(
                post=self._post_manager_reset,
                privileges={"POST": "ConfigureManager"},
                action="Manager.Reset",
            ),
        )
        add(f"{ident.manager_uri}/ResetActionInfo", Endpoint("ActionInfo", get=manager_reset_info))
        add(
            f"{ident.manager_uri}/NetworkProtocol",
            Endpoint("ManagerNetworkProtocol", get=network_protocol),
        )

        for route, uri in vm.locations(ident):
            self._add_virtual_media(add, route, uri)

        read_only_accounts = (
            "Accounts come from the data center file (its BMC document) and cannot be"
            " created, changed or deleted through Redfish."
        )

        async def account_service(call: Call) -> Json:
            return rs.account_service()

        async def accounts(call: Call) -> Json:
            who = call.who
            if who.may("ConfigureUsers"):
                return rs.accounts_collection(list(self.users))
            # Without ConfigureUsers an account sees itself only, as on bmcweb.
            return rs.accounts_collection([who.user])

        async def roles(call: Call) -> Json:
            return rs.roles_collection()

        add(
            rs.ACCOUNT_SERVICE,
            Endpoint("AccountService", get=account_service, refusal=read_only_accounts),
        )
        add(
            rs.ACCOUNTS,
            Endpoint("ManagerAccountCollection", get=accounts, refusal=read_only_accounts),
        )
        add(
            rs.ROLES,
            Endpoint(
                "RoleCollection",
                get=roles,
                refusal="The roles are Redfish's predefined roles and cannot be changed.",
            ),
        )

        async def session_service(call: Call) -> Json:
            return rs.session_service(self.sessions.timeout)

        async def sessions(call: Call) -> Json:
            who = call.who
            visible = [
                s.id
                for s in self.sessions.sessions()
                if who.may("ConfigureManager") or s.user.name == who.user.name
            ]
            return rs.sessions_collection(visible)

        add(
            rs.SESSION_SERVICE,
            Endpoint(
                "SessionService",
                get=session_service,
                patch=self._patch_session_service,
                privileges={"PATCH": "ConfigureManager"},
            ),
        )
        login = frozenset(("POST",))
        add(
            rs.SESSIONS, Endpoint("SessionCollection", get=sessions, post=self._login, public=login)
        )
        # DSP0266: a collection also takes its creating POST on its Members property.
        add(f"{rs.SESSIONS}/Members", Endpoint(post=self._login, public=login))
        # Imported here: the inventory's routes are built on this module's Endpoint and Call.
        from vdc_runtime.bmc.redfish import inventory_routes

        inventory_routes.extend(self, table)
        self._inventory_route = inventory_routes.route
        return table

    def _add_virtual_media(
        self, add: Callable[[str, Endpoint], None], route: str, uri: str
    ) -> None:
        async def media_collection(call: Call) -> Json:
            return vm.collection(uri)

        async def media(call: Call) -> Json:
            return vm.virtual_media(uri, self.target.virtual_media())

        add(route, Endpoint("VirtualMediaCollection", get=media_collection))
        add(f"{route}/{vm.MEDIA_ID}", Endpoint("VirtualMedia", get=media))
        for action, handler in ((vm.INSERT, self._insert_media), (vm.EJECT, self._eject_media)):
            add(
                f"{route}/{vm.MEDIA_ID}/Actions/{action}",
                Endpoint(post=handler, privileges={"POST": vm.PRIVILEGE}, action=action),
            )

    def _route(self, parts: tuple[str, ...]) -> Endpoint | None:
        endpoint = self._static.get(parts)
        if endpoint is not None:
            return endpoint
        endpoint = self._inventory_route(self, parts)
        if endpoint is not None:
            return endpoint
        if len(parts) != 5 or parts[:2] != ("redfish", "v1"):
            return None
        collection, name = parts[2:4], parts[4]
        if collection == ("AccountService", "Accounts"):
            user = self.users.get(name)
            if user is None:
                return None

            async def account(call: Call) -> Json:
                who = call.who
                if who.user.name != user.name and not who.may("ConfigureUsers"):
                    raise forbidden("ConfigureUsers")
                return rs.account(user)

            return Endpoint(
                "ManagerAccount",
                get=account,
                refusal=(
                    f"Account {user.name} comes from the data center file (its BMC document)"
                    " and cannot be changed or deleted through Redfish."
                ),
            )
        if collection == ("AccountService", "Roles"):
            if name not in rs.PRIVILEGES:
                return None

            async def role(call: Call) -> Json:
                return rs.role(name)  # type: ignore[arg-type]

            return Endpoint(
                "Role",
                get=role,
                refusal=f"{name} is a predefined Redfish role and cannot be changed.",
            )
        if collection == ("SessionService", "Sessions"):
            if self.sessions.get(name) is None:
                return None
            return Endpoint(
                "Session",
                get=lambda call: self._get_session(call, name),
                delete=lambda call: self._delete_session(call, name),
                # The handlers decide: one's own session needs no more than ConfigureSelf.
                privileges={"GET": "Login", "DELETE": "ConfigureSelf"},
            )
        return None

    # -- handlers ----------------------------------------------------------------------------

    async def _get_system(self, call: Call) -> Json:
        power_state = await self.target.power_state()
        return rs.computer_system(self.ident, power_state, self.target.boot_override())

    async def _patch_system(self, call: Call) -> None:
        new = bodies.system_patch(call.body, self.target.boot_override())
        uefi = self.target.facts.uefi
        if (new.mode == "uefi") != uefi:
            log.warning(
                "node %s: boot mode %s requested over Redfish; the node's firmware is %s and"
                " does not change: the mode is only recorded and reported",
                self.node,
                new.mode,
                "UEFI" if uefi else "legacy BIOS",
            )
        await self.target.set_boot_override(new)
        log.info(
            "node %s: Redfish user %s set the boot override to %s (%s, %s)",
            self.node,
            call.who.user.name,
            new.target,
            new.enabled,
            new.mode,
        )

    async def _post_system_reset(self, call: Call) -> Reply:
        reset_type = bodies.reset_type(call.body, "ComputerSystem.Reset", rs.SYSTEM_RESET_TYPES)
        log.info(
            "node %s: Redfish user %s: ComputerSystem.Reset %s",
            self.node,
            call.who.user.name,
            reset_type,
        )
        await power.reset_system(self.target, reset_type, self._spawn, self._graceful_timeout())
        return Reply(204)

    async def _insert_media(self, call: Call) -> Reply:
        request = vm.insert_request(call.body)
        log.info(
            "node %s: Redfish user %s: InsertMedia %s", self.node, call.who.user.name, request.image
        )
        try:
            await self.target.insert_media(
                request.image, user=request.user, password=request.password
            )
        except MediaError as exc:
            log.warning("node %s: InsertMedia refused: %s", self.node, exc)
            raise vm.refusal(exc) from None
        return Reply(204)

    async def _eject_media(self, call: Call) -> Reply:
        vm.eject_request(call.body)
        log.info("node %s: Redfish user %s: EjectMedia", self.node, call.who.user.name)
        await self.target.eject_media()
        return Reply(204)

    async def _post_chassis_reset(self, call: Call) -> Reply:
        reset_type = bodies.reset_type(call.body, "Chassis.Reset", rs.CHASSIS_RESET_TYPES)
        log.info(
            "node %s: Redfish user %s: Chassis.Reset %s", self.node, call.who.user.name, reset_type
        )
        await power.reset_chassis(self.target, reset_type)
        return Reply(204)

    async def _post_manager_reset(self, call: Call) -> Reply:
        reset_type = bodies.reset_type(call.body, "Manager.Reset", rs.MANAGER_RESET_TYPES)
        # There is no BMC firmware to reboot; what clients see of a BMC reboot is every
        # session ending, so that is what happens. The machine is not touched.
        log.info(
            "node %s: Redfish user %s: Manager.Reset %s ends %d sessions",
            self.node,
            call.who.user.name,
            reset_type,
            len(self.sessions),
        )
        self.sessions.clear()
        return Reply(204)

    async def _patch_session_service(self, call: Call) -> None:
        self.sessions.timeout = bodies.session_service_patch(call.body)
        log.info(
            "node %s: Redfish user %s set the session timeout to %d s",
            self.node,
            call.who.user.name,
            self.sessions.timeout,
        )

    async def _login(self, call: Call) -> Reply:
        credentials = bodies.login(call.body)
        user = self.users.check(credentials.user, credentials.password)
        if user is None:
            raise RedfishError(
                401,
                "The user name or the password is not valid.",
                [message("ResourceAtUriUnauthorized", rs.SESSIONS, "Invalid credentials")],
                headers={"WWW-Authenticate": REALM},
            )
        try:
            session, token = self.sessions.create(user, call.request.remote, credentials.context)
        except SessionLimitError as exc:
            raise RedfishError(
                503, f"No more sessions: {exc}.", [message("SessionLimitExceeded")]
            ) from None
        log.info(
            "node %s: Redfish session %s for %s from %s",
            self.node,
            session.id,
            user.name,
            call.request.remote,
        )
        location = rs.session_uri(session.id)
        return Reply(
            201,
            rs.session(session.view()),
            headers={"X-Auth-Token": token, "Location": location},
        )

    def _session_of(self, call: Call, session_id: str, privilege: str) -> None:
        session = self.sessions.get(session_id)
        if session is None:
            raise RedfishError(
                404,
                f"There is no session {session_id}.",
                [message("ResourceMissingAtURI", call.path)],
            )
        who = call.who
        if session.user.name != who.user.name and not who.may(privilege):
            raise forbidden(privilege)

    async def _get_session(self, call: Call, session_id: str) -> Json:
        self._session_of(call, session_id, "ConfigureManager")
        session = self.sessions.get(session_id)
        assert session is not None
        return rs.session(session.view())

    async def _delete_session(self, call: Call, session_id: str) -> Reply:
        self._session_of(call, session_id, "ConfigureManager")
        self.sessions.delete(session_id)
        log.info(
            "node %s: Redfish session %s ended by %s", self.node, session_id, call.who.user.name
        )
        return Reply(204)


# -- the service -----------------------------------------------------------------------------


def _key(address: str) -> str:
    return str(ipaddress.ip_address(address))


class RedfishService:
    """Redfish for every BMC of a run: one HTTPS listener per BMC address, one machine each."""

    def __init__(
        self,
        users: Users,
        *,
        ssl_for: Callable[[str], ssl.SSLContext],
        stats: BmcStats | None = None,
        faults: BmcFaults | None = None,
    ) -> None:
        self.users = users
        self.stats = stats
        self.faults = faults
        self._ssl_for = ssl_for
        self._bmcs: dict[str, Bmc] = {}
        self.graceful_restart_timeout = power.GRACEFUL_RESTART_TIMEOUT

    async def add(self, address: str, target: BmcTarget, port: int) -> None:
        """Serve `target` on https://address:port; OSError if that cannot be bound."""
        key = _key(address)
        if key in self._bmcs:
            raise OSError(errno.EADDRINUSE, f"Redfish already serves a machine on {key}")
        ssl_context = await asyncio.to_thread(self._ssl_for, key)
        bmc = Bmc(
            key,
            port,
            target,
            self.users,
            ssl_context,
            lambda: self.graceful_restart_timeout,
            stats=self.stats,
            faults=self.faults,
        )
        await bmc.start()
        self._bmcs[key] = bmc
        log.debug("node %s: Redfish on https://%s", target.facts.name, _host_port(key, port))

    async def remove(self, address: str) -> None:
        """Stop the BMC on `address` (KeyError if there is none) and end its sessions."""
        bmc = self._bmcs.pop(_key(address))
        await bmc.stop()

    async def close(self) -> None:
        bmcs, self._bmcs = list(self._bmcs.values()), {}
        for bmc in bmcs:
            try:
                await bmc.stop()
            except Exception as exc:  # the others must stop all the same
                log.warning("node %s: stopping Redfish failed: %s", bmc.node, exc)

    def bmc(self, address: str) -> Bmc:
        """The BMC on `address`, for tests and the bench to look inside."""
        return self._bmcs[_key(address)]


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


__all__ = ["Bmc", "Endpoint", "RedfishService"]
