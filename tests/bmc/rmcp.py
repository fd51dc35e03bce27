"""A small RMCP+ client for tests that ipmitool cannot express: tampered packets,
retransmissions, session exhaustion, wildcard algorithms, ASF ping.

Written from the IPMI 2.0 specification (sections 13.28-13.32), independently of the
server code under test and of pyghmi, so that both sides are not wrong the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

RMCP_IPMI = b"\x06\x00\xff\x07"
SUITES = {3: (0x01, 0x01, 0x01), 17: (0x03, 0x04, 0x01)}


class RmcpError(Exception):
    def __init__(self, stage: str, status: int) -> None:
        super().__init__(f"{stage}: RMCP+ status {status:#04x}")
        self.stage, self.status = stage, status


def checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


@dataclass
class Reply:
    netfn: int
    command: int
    seq: int
    code: int
    data: bytes


class RmcpClient:
    def __init__(self, host: str, port: int, timeout: float = 2.0) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        self.address = (host, port)
        self.session_seq = 0
        self.rq_seq = 0
        self.managed_id = b"\0" * 4

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RmcpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- raw packets ------------------------------------------------------------------

    def send_raw(self, packet: bytes) -> None:
        self.sock.sendto(packet, self.address)

    def receive(self) -> bytes | None:
        try:
            return self.sock.recv(4096)
        except TimeoutError:
            return None

    def _presession(self, ptype: int, payload: bytes) -> bytes:
        self.send_raw(
            RMCP_IPMI + bytes([0x06, ptype]) + bytes(8) + struct.pack("<H", len(payload)) + payload
        )
        reply = self.receive()
        if reply is None:
            raise TimeoutError(f"no reply to payload type {ptype:#x}")
        length = struct.unpack_from("<H", reply, 14)[0]
        return reply[16 : 16 + length]

    def ping(self) -> bytes | None:
        """ASF Presence Ping; the pong's data, or None."""
        self.send_raw(b"\x06\x00\xff\x06" + struct.pack(">IBBBB", 4542, 0x80, 0x42, 0, 0))
        pong = self.receive()
        if pong is None or pong[8] != 0x40 or pong[9] != 0x42:
            return None
        return pong[12:]

    # -- session set-up -------------------------------------------------------------------

    def open_session(
        self, algorithms_: tuple[int | None, int | None, int | None], privilege: int = 4
    ) -> tuple[int, bytes]:
        """Open Session Request; (status, chosen algorithms payloads). None = wildcard."""
        self.console_id = os.urandom(4)
        payload = bytes([0x01, privilege, 0, 0]) + self.console_id
        for kind, algorithm in enumerate(algorithms_):
            payload += bytes([kind, 0, 0, 0 if algorithm is None else 8, algorithm or 0, 0, 0, 0])
        reply = self._presession(0x10, payload)
        if reply[1] == 0:
            self.managed_id = reply[8:12]
        return reply[1], reply[12:36]

    def login(self, user: str, password: str, suite: int = 17, privilege: int = 4) -> None:
        auth, integrity, conf = SUITES[suite]
        status, _ = self.open_session((auth, integrity, conf), privilege)
        if status:
            raise RmcpError("open session", status)
        digest = hashlib.sha256 if auth == 0x03 else hashlib.sha1
        self.icv_length = 16 if auth == 0x03 else 12
        rm = os.urandom(16)
        role, name = 0x10 | privilege, user.encode()  # name-only lookup, as ipmitool does
        rakp1 = bytes([0x02, 0, 0, 0]) + self.managed_id + rm + bytes([role, 0, 0, len(name)])
        rakp2 = self._presession(0x12, rakp1 + name)
        if rakp2[1]:
            raise RmcpError("RAKP 2", rakp2[1])
        rc, guid, code = rakp2[8:24], rakp2[24:40], rakp2[40:]
        kuid = password.encode()
        role_name = bytes([role, len(name)]) + name
        expected = hmac.new(
            kuid, self.console_id + self.managed_id + rm + rc + guid + role_name, digest
        ).digest()
        if not hmac.compare_digest(expected, code):
            raise RmcpError("RAKP 2 check", 0x0F)
        rakp3 = bytes([0x03, 0, 0, 0]) + self.managed_id
        rakp3 += hmac.new(kuid, rc + self.console_id + role_name, digest).digest()
        rakp4 = self._presession(0x14, rakp3)
        if rakp4[1]:
            raise RmcpError("RAKP 4", rakp4[1])
        sik = hmac.new(kuid, rm + rc + role_name, digest).digest()
        check = hmac.new(sik, rm + self.managed_id + guid, digest).digest()[: self.icv_length]
        if not hmac.compare_digest(check, rakp4[8:]):
            raise RmcpError("RAKP 4 check", 0x0F)
        self.digest = digest
        self.k1 = hmac.new(sik, b"\x01" * 20, digest).digest()
        self.aes = hmac.new(sik, b"\x02" * 20, digest).digest()[:16]
        self.session_seq = 1

    # -- requests ---------------------------------------------------------------------------

    def packet(self, netfn: int, command: int, data: bytes = b"", seq: int | None = None) -> bytes:
        """An authenticated, encrypted request (does not send it)."""
        if seq is None:
            self.rq_seq = (self.rq_seq + 1) & 0x3F
            seq = self.rq_seq
        head = bytes([0x20, netfn << 2])
        body = bytes([0x81, seq << 2, command]) + data
        message = head + bytes([checksum(head)]) + body + bytes([checksum(body)])
        pad = -(len(message) + 1) % 16
        plain = message + bytes(range(1, pad + 1)) + bytes([pad])
        iv = os.urandom(16)
        encryptor = Cipher(algorithms.AES(self.aes), modes.CBC(iv)).encryptor()
        payload = iv + encryptor.update(plain) + encryptor.finalize()
        self.session_seq += 1
        packet = (
            bytes([0x06, 0xC0])
            + self.managed_id
            + struct.pack("<IH", self.session_seq, len(payload))
            + payload
        )
        integrity_pad = -(len(packet) + 2) % 4
        packet += b"\xff" * integrity_pad + bytes([integrity_pad, 0x07])
        code = hmac.new(self.k1, packet, self.digest).digest()[: self.icv_length]
        return RMCP_IPMI + packet + code

    def read_reply(self) -> Reply | None:
        raw = self.receive()
        if raw is None:
            return None
        body, code = raw[4 : -self.icv_length], raw[-self.icv_length :]
        expected = hmac.new(self.k1, body, self.digest).digest()[: self.icv_length]
        if not hmac.compare_digest(code, expected):
            raise AssertionError("reply with a bad integrity code")
        length = struct.unpack_from("<H", raw, 14)[0]
        payload = raw[16 : 16 + length]
        decryptor = Cipher(algorithms.AES(self.aes), modes.CBC(payload[:16])).decryptor()
        plain = decryptor.update(payload[16:]) + decryptor.finalize()
        message = plain[: -(plain[-1] + 1)]
        return Reply(message[1] >> 2, message[5], message[4] >> 2, message[6], message[7:-1])

    def request(self, netfn: int, command: int, data: bytes = b"") -> Reply:
        self.send_raw(self.packet(netfn, command, data))
        reply = self.read_reply()
        if reply is None:
            raise TimeoutError(f"no reply to netfn {netfn:#x} command {command:#x}")
        return reply
