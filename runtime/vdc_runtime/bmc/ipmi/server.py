"""IPMI over LAN (RMCP+, UDP 623) for every BMC of a run, on the runtime's event loop.

Each BMC address has its own UDP endpoint, session table and command set. The
sessionless exchanges (Get Channel Authentication Capabilities, Get Channel Cipher
Suites) go through pyghmi's BMC server class; sessions are `RmcpPlusSession`s; commands
are carried out by `Commands` as tasks, so a slow machine never blocks other BMCs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from typing import TYPE_CHECKING, Any

from pyghmi.ipmi import bmc as pyghmi_bmc
from pyghmi.ipmi.private import session as pyghmi_session

from vdc_runtime.bmc.ipmi import codec
from vdc_runtime.bmc.ipmi.commands import Commands
from vdc_runtime.bmc.ipmi.session import Header, RmcpPlusSession, SocketShim
from vdc_runtime.bmc.ipmi.sol import MAX_CHARACTERS, SolPayload
from vdc_runtime.bmc.stats import BmcStats
from vdc_runtime.bmc.target import BmcTarget
from vdc_runtime.bmc.users import Users

if TYPE_CHECKING:
    from vdc_runtime.bmc.faults import BmcFaults

log = logging.getLogger("vdc.bmc.ipmi")

MAX_SESSIONS = 64  # per BMC; enough for a load test, bounded unlike Placemat's table
SESSION_IDLE = 60.0  # IPMI's default session inactivity timeout
SETUP_TIMEOUT = 10.0  # an Open Session that never finished RAKP
SWEEP_EVERY = 5.0

RMCP_CLASS_ASF, RMCP_CLASS_IPMI = 0x06, 0x07
ASF_IANA = 4542
PAYLOAD_IPMI, PAYLOAD_SOL = 0x00, 0x01
PAYLOAD_OPEN_SESSION, PAYLOAD_RAKP1, PAYLOAD_RAKP3 = 0x10, 0x12, 0x14


NETFN_GROUP_EXTENSION = 0x2C


class SessionlessBmc(pyghmi_bmc.Bmc):
    """pyghmi's BMC class for the exchanges before a session, without its socket and
    I/O thread (`IpmiServer.__init__` is not called: it binds through pyghmi's pool)."""

    def __init__(self, shim: SocketShim) -> None:
        self.serversocket = shim
        self.port = 0
        self.kg = None
        # Channel 1; IPMI 2.0 only (no IPMI 1.5 authentication types); non-null
        # usernames only: the reply of section 22.13.
        self.authcap = struct.pack("9B", 0, codec.LAN_CHANNEL, 0x80, 0x04, 0x02, 0, 0, 0, 0)

    def send_cipher_suites(
        self,
        myaddr: int,
        mylun: int,
        clientaddr: int,
        clientlun: int,
        clientseq: int,
        data: bytearray,
        sockaddr: Any,
    ) -> None:
        # pyghmi lists suite 3 only, always from index 0: list ours, a page at a time.
        code, records = codec.cipher_suites_page(bytes(data[20:23]), codec.LAN_CHANNEL)
        header = bytearray([clientaddr, clientlun | (0x07 << 2)])
        header.append(pyghmi_session._checksum(*header))
        body = bytearray([myaddr, mylun | clientseq << 2, 0x54, code]) + records
        body.append(pyghmi_session._checksum(*body))
        message = header + body
        packet = (
            bytearray(b"\x06\x00\xff\x07\x06\x00")
            + bytes(8)
            + struct.pack("<H", len(message))
            + message
        )
        self.serversocket.sendto(packet, sockaddr)


class BmcEndpoint(asyncio.DatagramProtocol):
    """One BMC's IPMI endpoint: its sessions and its machine's commands."""

    def __init__(
        self,
        target: BmcTarget,
        users: Users,
        stats: BmcStats | None = None,
        faults: BmcFaults | None = None,
    ) -> None:
        self.target = target
        self.faults = faults
        self.users = users
        self.stats = stats
        self.name = target.facts.name
        self.sessions: dict[int, RmcpPlusSession] = {}
        self.commands = Commands(target, users, self._active_sessions)
        self.transport: asyncio.DatagramTransport | None = None
        self.sol: SolPayload | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def _active_sessions(self) -> int:
        return sum(1 for s in self.sessions.values() if s.established)

    # -- asyncio ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram transport
        self.shim = SocketShim(transport)
        self.sessionless = SessionlessBmc(self.shim)
        self.port = transport.get_extra_info("sockname")[1]
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._route(bytearray(data), addr)
        except Exception:  # one malformed packet must not take the BMC down
            log.exception("node %s: IPMI: dropped a packet from %s", self.name, addr[0])

    def error_received(self, exc: Exception) -> None:
        log.debug("node %s: IPMI socket: %s", self.name, exc)

    async def close(self) -> None:
        if self.sol is not None:
            self.sol.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.transport is not None:
            self.transport.close()
        self.sessions.clear()

    # -- routing ----------------------------------------------------------------------------

    def _route(self, data: bytearray, addr: Any) -> None:
        if len(data) < 5 or data[0] != 0x06:
            return
        rmcp_class = data[3] & 0x1F
        if rmcp_class == RMCP_CLASS_ASF:
            return self._asf(data, addr)
        if rmcp_class != RMCP_CLASS_IPMI:
            return
        if data[4] != 0x06:  # IPMI 1.5 session wrapper: only its sessionless command
            return self.sessionless.sessionless_data(data, addr)
        if len(data) < 16:
            return
        ptype = data[5] & 0x3F
        session_id = struct.unpack_from("<I", data, 6)[0]
        length = struct.unpack_from("<H", data, 14)[0]
        payload = data[16 : 16 + length]
        if ptype == PAYLOAD_OPEN_SESSION:
            return self._open(payload, addr)
        if ptype in (PAYLOAD_RAKP1, PAYLOAD_RAKP3):
            if len(payload) < 8:
                return
            session = self.sessions.get(struct.unpack_from("<I", payload, 4)[0])
            if session is None or session.established or session.sockaddr != addr:
                return
            if ptype == PAYLOAD_RAKP1:
                session._got_rakp1(payload)
            else:
                session._got_rakp3(payload)
            if session.closed:
                self._drop(session)
            return
        if ptype in (PAYLOAD_IPMI, PAYLOAD_SOL) and session_id:
            session = self.sessions.get(session_id)
            # A session negotiated with confidentiality takes no plain-text requests.
            if session is None or not session.established or not data[5] & 0x80:
                return
            session.last_seen = time.monotonic()
            session._handle_ipmi_packet(data, sockaddr=addr)
            return
        if ptype == PAYLOAD_IPMI:
            self.sessionless.sessionless_data(data, addr)

    def _open(self, request: bytearray, addr: Any) -> None:
        if len(request) < 32:
            return
        session = RmcpPlusSession(
            managed_id=self._new_session_id(),
            guid=self.commands.guid,
            lookup_user=self.users.get,
            address=addr,
            shim=self.shim,
            on_request=self._request,
        )
        if len(self.sessions) >= MAX_SESSIONS:
            self._sweep(reschedule=False)
        if len(self.sessions) >= MAX_SESSIONS:
            log.warning("node %s: IPMI: %d sessions open, refusing one", self.name, MAX_SESSIONS)
            session.refuse_open(request, codec.RMCP_INSUFFICIENT_RESOURCES)
            return
        if session.open(request):
            self.sessions[session.localsid] = session

    def _new_session_id(self) -> int:
        while True:
            candidate = struct.unpack("<I", os.urandom(4))[0]
            if candidate and candidate not in self.sessions:
                return candidate

    def _drop(self, session: RmcpPlusSession) -> None:
        if self.sol is not None and self.sol.session is session:
            self.sol.close()
        session.closed = True
        self.sessions.pop(session.localsid, None)

    def _sweep(self, reschedule: bool = True) -> None:
        now = time.monotonic()
        for session in list(self.sessions.values()):
            idle = now - session.last_seen
            if idle > SESSION_IDLE or (not session.established and idle > SETUP_TIMEOUT):
                self._drop(session)
        if reschedule:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP_EVERY, self._sweep)

    # -- requests ---------------------------------------------------------------------------

    def _request(self, session: RmcpPlusSession, header: Header, request: dict[str, Any]) -> None:
        netfn, command, data = request["netfn"], request["command"], bytes(request["data"])
        if netfn == codec.NETFN_APP and command == 0x3B:  # Set Session Privilege Level
            if not data:
                return self._reply(session, header, codec.REQUEST_DATA_LENGTH_INVALID)
            return self._reply(session, header, *session.set_privilege(data[0] & 0x0F))
        if netfn == codec.NETFN_APP and command == 0x3C:  # Close Session
            self._reply(session, header, codec.OK)
            return self._drop(session)
        if netfn == codec.NETFN_APP and command == 0x38:  # Get Channel Auth Caps, in session
            return self._reply(session, header, codec.OK, self.sessionless.authcap[1:])
        if netfn == codec.NETFN_APP and command in (0x48, 0x49, 0x4A):
            return self._reply(session, header, *self._payload_command(session, command, data))
        if netfn == codec.NETFN_TRANSPORT and command == 0x22:  # Get SOL Configuration
            if len(data) < 2:
                return self._reply(session, header, codec.REQUEST_DATA_LENGTH_INVALID)
            return self._reply(session, header, *codec.sol_parameter(data[1] & 0x7F, self.port))
        run = self._run(session, header, netfn, command, data)
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _payload_command(
        self, session: RmcpPlusSession, command: int, data: bytes
    ) -> tuple[int, bytes]:
        """Activate / Deactivate Payload and Get Payload Activation Status (section 24),
        for the one SOL instance a BMC has."""
        if not data:
            return codec.REQUEST_DATA_LENGTH_INVALID, b""
        if data[0] & 0x3F != codec.PAYLOAD_SOL or (command != 0x4A and data[1:2] != b"\x01"):
            return codec.INVALID_DATA_FIELD, b""
        if command == 0x4A:  # status: one instance, active or not
            return codec.OK, bytes([1, 0x01 if self.sol is not None else 0x00, 0x00])
        if session.privilege < codec.USER:
            return codec.INSUFFICIENT_PRIVILEGE, b""
        if command == 0x48:  # activate
            if self.sol is not None:
                return 0x80, b""  # already active (on this session or another)
            self.sol = SolPayload(session, self.target, on_end=self._sol_ended)
            return codec.OK, codec.activate_payload_reply(MAX_CHARACTERS + 4, self.port)
        if self.sol is None or self.sol.session is not session:
            return 0x80, b""  # not active on this session
        self.sol.close()
        return codec.OK, b""

    def _sol_ended(self) -> None:
        self.sol = None

    async def _run(
        self, session: RmcpPlusSession, header: Header, netfn: int, command: int, data: bytes
    ) -> None:
        refused = await self.faults.ipmi(self.name) if self.faults is not None else None
        try:
            if refused is not None:
                code, reply = refused, b""
            else:
                code, reply = await self.commands.run(netfn, command, data, session.privilege)
        except Exception:
            log.exception("node %s: IPMI netfn %#x command %#x", self.name, netfn, command)
            code, reply = codec.UNSPECIFIED_ERROR, b""
        # Clients probe for group extensions (ipmitool asks for DCMI and PICMG in every
        # session); "invalid command" is the right answer there, not a failure to count.
        probe = netfn == NETFN_GROUP_EXTENSION and code == codec.INVALID_COMMAND
        self._reply(session, header, code, reply, ok=probe or None)

    def _reply(
        self,
        session: RmcpPlusSession,
        header: Header,
        code: int,
        data: bytes = b"",
        *,
        ok: bool | None = None,
    ) -> None:
        """Answer a request of an established session, and count it for the metrics (as
        answered well when its code is 0x00, unless `ok` says otherwise)."""
        if self.stats is not None:
            self.stats.count(self.name, "ipmi", code == codec.OK if ok is None else ok)
        session.reply(header, code, data)

    # -- ASF presence ping (RMCP's own ping, used by rmcpping and discovery tools) -------

    def _asf(self, data: bytearray, addr: Any) -> None:
        if len(data) < 12 or struct.unpack_from(">I", data, 4)[0] != ASF_IANA or data[8] != 0x80:
            return
        tag = data[9]
        pong = struct.pack(">IBBBB", ASF_IANA, 0x40, tag, 0, 16)
        # OEM IANA and OEM-defined (none), supported entities: IPMI, ASF 1.0; no interactions.
        pong += struct.pack(">II", 0, 0) + bytes([0x81, 0x00]) + bytes(6)
        assert self.transport is not None
        self.transport.sendto(b"\x06\x00\xff\x06" + pong, addr)


class IpmiService:
    """The IPMI endpoints of every BMC of a run."""

    def __init__(
        self, users: Users, stats: BmcStats | None = None, faults: BmcFaults | None = None
    ) -> None:
        self.users = users
        self.stats = stats
        self.faults = faults
        self._endpoints: dict[str, BmcEndpoint] = {}

    async def add(self, address: str, target: BmcTarget, port: int) -> None:
        """Listen on exactly `address`:`port` (UDP) for this machine."""
        if address in self._endpoints:
            await self.remove(address)
        loop = asyncio.get_running_loop()
        _, endpoint = await loop.create_datagram_endpoint(
            lambda: BmcEndpoint(target, self.users, self.stats, self.faults),
            local_addr=(address, port),
        )
        self._endpoints[address] = endpoint

    async def remove(self, address: str) -> None:
        endpoint = self._endpoints.pop(address)
        await endpoint.close()

    async def close(self) -> None:
        for address in list(self._endpoints):
            with contextlib.suppress(KeyError):
                await self.remove(address)


__all__ = ["BmcEndpoint", "IpmiService"]
