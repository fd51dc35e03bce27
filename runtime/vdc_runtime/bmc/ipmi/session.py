"""An RMCP+ session on the BMC side, built on pyghmi's `ServerSession`.

pyghmi does the packet work: the session wrapper, HMAC integrity (checked on every
request it accepts), AES-CBC-128 both ways, sequence numbers and the IPMI message
layout. Where it falls short of a real BMC, this subclass takes over:

- cipher suites: pyghmi always answers with suite 3 whatever the client proposed; here
  the client's proposal is negotiated (suites 3 and 17, i.e. HMAC-SHA1 or HMAC-SHA256)
  and RAKP, the session keys and the integrity length follow the chosen suite;
- RAKP errors: pyghmi drops an unknown user or a wrong password silently, so clients
  wait for timeouts; here they get the RMCP+ status a BMC sends (unauthorized name,
  invalid integrity check value, unauthorized role);
- privileges: pyghmi grants Administrator to everyone; here a user's role caps the
  session, and Set Session Privilege Level follows the IPMI rules;
- I/O: pyghmi runs its own socket pool and I/O thread with a global session table keyed
  by the client's address, which cannot tell apart two BMCs on port 623; here packets are
  routed by the BMC's endpoint (`server.py`) and sent through its asyncio transport.
"""

from __future__ import annotations

import collections
import hmac
import os
import struct
import time
from collections.abc import Callable
from typing import Any, Protocol

from pyghmi.ipmi.private import constants, serversession

from vdc_runtime.bmc.ipmi import codec
from vdc_runtime.bmc.users import IPMI_PRIVILEGE, BmcUser

RAKP_CONSTANT_1 = b"\x01" * 20  # K1 and K2 are HMACs of these (section 13.32)
RAKP_CONSTANT_2 = b"\x02" * 20


class Transport(Protocol):
    def sendto(self, data: bytes, address: Any) -> None: ...


class SocketShim:
    """What pyghmi calls on a socket to send a packet, handed to an asyncio transport."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def setblocking(self, flag: bool) -> None:
        pass

    def sendto(self, packet: bytes | bytearray, address: Any) -> None:
        self._transport.sendto(bytes(packet), address)


Header = tuple[int, int, int, int, int]
"""A request's reply routing: (reply netfn, command, rqSeq, rqLUN, requester address)."""


class RmcpPlusSession(serversession.ServerSession):
    """One client's session with one BMC, from Open Session Request to Close Session."""

    def __new__(cls, *args: Any, **kwargs: Any) -> RmcpPlusSession:
        # pyghmi's __new__ takes its own constructor's arguments.
        return object.__new__(cls)

    def __init__(
        self,
        *,
        managed_id: int,
        guid: bytes,
        lookup_user: Callable[[str], BmcUser | None],
        address: Any,
        shim: SocketShim,
        on_request: Callable[[RmcpPlusSession, Header, dict[str, Any]], None],
    ) -> None:
        # The attributes pyghmi's Session methods read while encoding and decoding.
        self.servermode = True
        self.ipmiversion = 2.0
        self.authtype = 6
        self.rqaddr = constants.IPMI_BMC_ADDRESS
        self.socket = shim
        self.sockaddr = address
        self.sequencenumber = 0
        self.sessionid = 0
        self.integrityalgo = 0
        self.confalgo = 0
        self.k1: bytes | None = None
        self.kg: bytes | None = None
        self.lastpayload = None
        self.rqlun = 0
        self.broken = False
        self.pendingpayloads: collections.deque[Any] = collections.deque()
        self.pktqueue: collections.deque[Any] = collections.deque()
        self.sol_handler: Callable[[Any], None] | None = None
        self.last_payload_type = None
        self._customkeepalives = None
        self.currhashlib = codec.SUITE_3.hash
        self.currhashlen = codec.SUITE_3.icv_length

        self.managedsessionid = struct.pack("<I", managed_id)
        self.localsid = managed_id
        self.uuiddata = guid
        self._lookup_user = lookup_user
        self._on_request = on_request
        self.suite: codec.CipherSuite | None = None
        self.user: BmcUser | None = None
        self.max_privilege = codec.ADMINISTRATOR
        self.privilege = codec.USER
        self.established = False
        self.closed = False
        self.created = self.last_seen = time.monotonic()
        self._rakp2_sent = False
        # The last request and its reply, so that a client's retransmission gets the
        # same reply instead of the command being carried out twice.
        self.last_request: tuple[int, int, int, bytes] | None = None
        self.last_reply: tuple[Header, int, bytes] | None = None
        self.last_request_at = 0.0

    # -- session set-up -----------------------------------------------------------------

    def open(self, request: bytes) -> bool:
        """Answer an Open Session Request; False when it was refused."""
        self.clientsessionid = bytearray(request[4:8])
        status, suite = codec.negotiate(request)
        requested = request[1] & 0x0F
        if status == codec.OK and requested > codec.ADMINISTRATOR:
            status = codec.RMCP_INVALID_ROLE
        if status != codec.OK or suite is None:
            self.refuse_open(request, status)
            return False
        self.suite = suite
        self.currhashlib, self.currhashlen = suite.hash, suite.icv_length
        self.max_privilege = requested or codec.ADMINISTRATOR
        response = (
            bytearray([request[0], 0, self.max_privilege, 0])
            + self.clientsessionid
            + self.managedsessionid
            + codec.algorithm_payloads(suite)
        )
        self._send_setup(response, "rmcpplusopenresponse")
        return True

    def refuse_open(self, request: bytes, status: int) -> None:
        self.clientsessionid = bytearray(request[4:8])
        refusal = bytearray([request[0], status, 0, 0]) + self.clientsessionid
        self._send_setup(refusal, "rmcpplusopenresponse")

    def _send_setup(self, payload: bytearray, kind: str) -> None:
        self.send_payload(payload, constants.payload_types[kind], retry=False)

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        assert self.suite is not None
        return hmac.new(key, data, self.suite.hash).digest()

    def _got_rakp1(self, data: bytearray) -> None:
        if self.suite is None or len(data) < 28:
            return
        tag = data[0]
        self.Rm = bytes(data[8:24])
        self.rolem = data[24]
        length = data[27]
        if length > 16 or len(data) < 28 + length:
            return self._rakp_error("rakp2", tag, codec.RMCP_INVALID_NAME_LENGTH)
        self.username = bytes(data[28 : 28 + length])
        user = self._lookup_user(self.username.decode(errors="replace")) if length else None
        if user is None:  # no anonymous or null-user login
            return self._rakp_error("rakp2", tag, codec.RMCP_UNAUTHORIZED_NAME)
        limit = IPMI_PRIVILEGE[user.role]
        requested = self.rolem & 0x0F
        if requested > codec.OEM:
            return self._rakp_error("rakp2", tag, codec.RMCP_INVALID_ROLE)
        requested = requested or limit
        if requested > limit or requested > self.max_privilege:
            return self._rakp_error("rakp2", tag, codec.RMCP_UNAUTHORIZED_ROLE)
        self.user = user
        self.max_privilege = requested
        self.privilege = min(codec.USER, requested)
        self.kuid = user.password.encode()
        self.kg = self.kuid  # no BMC key (Kg) configured: K_UID stands in, per 13.31
        self.Rc = os.urandom(16)
        role_and_name = bytes([self.rolem, length]) + self.username
        code = self._hmac(
            self.kuid,
            bytes(self.clientsessionid)
            + self.managedsessionid
            + self.Rm
            + self.Rc
            + self.uuiddata
            + role_and_name,
        )
        self._rakp2_sent = True
        self._send_setup(
            bytearray([tag, 0, 0, 0]) + self.clientsessionid + self.Rc + self.uuiddata + code,
            "rakp2",
        )

    def _got_rakp3(self, data: bytearray) -> None:
        if not self._rakp2_sent or self.established or len(data) < 8:
            return
        tag, status = data[0], data[1]
        if status != 0:  # the client did not accept our RAKP 2 (e.g. wrong password there)
            self.closed = True
            return
        role_and_name = bytes([self.rolem, len(self.username)]) + self.username
        expected = self._hmac(self.kuid, self.Rc + bytes(self.clientsessionid) + role_and_name)
        if not hmac.compare_digest(expected, bytes(data[8:])):
            self._rakp_error("rakp4", tag, codec.RMCP_INVALID_INTEGRITY_CHECK)
            return
        assert self.kg is not None and self.suite is not None
        self.sik = self._hmac(self.kg, self.Rm + self.Rc + role_and_name)
        self.k1 = self._hmac(self.sik, RAKP_CONSTANT_1)
        self.k2 = self._hmac(self.sik, RAKP_CONSTANT_2)
        self.aeskey = self.k2[:16]
        check = self._hmac(self.sik, self.Rm + self.managedsessionid + self.uuiddata)
        self._send_setup(
            bytearray([tag, 0, 0, 0]) + self.clientsessionid + check[: self.suite.icv_length],
            "rakp4",
        )
        # From here on every packet is authenticated and encrypted both ways.
        self.integrityalgo = "sha256" if self.suite.auth == 0x03 else "sha1"
        self.confalgo = "aes"
        self.sequencenumber = 1
        self.sessionid = struct.unpack("<I", bytes(self.clientsessionid))[0]
        self.ipmicallback = self._request
        self.established = True

    def _rakp_error(self, kind: str, tag: int, status: int) -> None:
        self.closed = True
        self._send_setup(bytearray([tag, status, 0, 0]) + self.clientsessionid, kind)

    # -- requests -----------------------------------------------------------------------

    def _request(self, request: dict[str, Any]) -> None:
        # pyghmi keeps the reply's routing in attributes that the next request overwrites;
        # replies are sent later (after the machine answered), so it is captured here.
        header: Header = (
            self.clientnetfn,
            self.clientcommand,
            self.seqlun,
            self.rqlun,
            self.clientaddr,
        )
        key = (self.seqlun, request["netfn"], request["command"], bytes(request["data"]))
        now = time.monotonic()
        if key == self.last_request and now - self.last_request_at < 5:
            if self.last_reply is not None:
                self.reply(*self.last_reply)
            return  # still being carried out: the reply will come
        self.last_request, self.last_request_at, self.last_reply = key, now, None
        self._on_request(self, header, request)

    def reply(self, header: Header, code: int, data: bytes = b"") -> None:
        if self.closed:
            return
        if self.last_request is not None and header[2] == self.last_request[0]:
            self.last_reply = (header, code, data)
        self.clientnetfn, self.clientcommand, self.seqlun, self.rqlun, self.clientaddr = header
        self._send_ipmi_net_payload(code=code, data=data)

    def set_privilege(self, requested: int) -> tuple[int, bytes]:
        """Set Session Privilege Level (section 22.18)."""
        if requested == 0:
            return codec.OK, bytes([self.privilege])
        if requested == codec.CALLBACK or requested > codec.OEM:
            return codec.INVALID_DATA_FIELD, b""
        if requested > self.max_privilege:
            return 0x81, b""  # exceeds the user's or the session's limit
        self.privilege = requested
        return codec.OK, bytes([self.privilege])


__all__ = ["Header", "RmcpPlusSession", "SocketShim"]
