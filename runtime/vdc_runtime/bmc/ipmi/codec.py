"""IPMI 2.0 values and encodings, as pure functions: cipher suites, command data, boot flags.

Section and table numbers refer to the IPMI v2.0 rev 1.1 specification.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from vdc_runtime.bmc.target import BootOverride, BootTarget

# -- completion codes (table 5-2) ---------------------------------------------------------

OK = 0x00
NODE_BUSY = 0xC0
INVALID_COMMAND = 0xC1
REQUEST_DATA_LENGTH_INVALID = 0xC7
PARAMETER_OUT_OF_RANGE = 0xC9
INVALID_DATA_FIELD = 0xCC
INSUFFICIENT_PRIVILEGE = 0xD4
NOT_IN_PRESENT_STATE = 0xD5
UNSPECIFIED_ERROR = 0xFF
PARAMETER_NOT_SUPPORTED = 0x80  # Get/Set System Boot Options (table 28-14)

# -- privilege levels (table 22-27) -------------------------------------------------------

CALLBACK, USER, OPERATOR, ADMINISTRATOR, OEM = 1, 2, 3, 4, 5

# -- netfns and commands --------------------------------------------------------------------

NETFN_CHASSIS = 0x00
NETFN_APP = 0x06

# -- RMCP+ status codes (table 13-15) -------------------------------------------------------

RMCP_INSUFFICIENT_RESOURCES = 0x01
RMCP_INVALID_AUTH_ALGORITHM = 0x04
RMCP_INVALID_INTEGRITY_ALGORITHM = 0x05
RMCP_INVALID_ROLE = 0x09
RMCP_UNAUTHORIZED_ROLE = 0x0A
RMCP_INVALID_NAME_LENGTH = 0x0C
RMCP_UNAUTHORIZED_NAME = 0x0D
RMCP_INVALID_INTEGRITY_CHECK = 0x0F
RMCP_INVALID_CONFIDENTIALITY_ALGORITHM = 0x10
RMCP_NO_CIPHER_SUITE_MATCH = 0x11


# -- cipher suites (table 22-20) --------------------------------------------------------------


@dataclass(frozen=True)
class CipherSuite:
    id: int
    auth: int  # 01h RAKP-HMAC-SHA1, 03h RAKP-HMAC-SHA256
    integrity: int  # 01h HMAC-SHA1-96, 04h HMAC-SHA256-128
    confidentiality: int  # 01h AES-CBC-128

    @property
    def hash(self) -> Callable[..., hashlib._Hash]:
        return hashlib.sha256 if self.auth == 0x03 else hashlib.sha1

    @property
    def icv_length(self) -> int:
        """Bytes of HMAC kept in RAKP 4's check value and in every session packet."""
        return 16 if self.auth == 0x03 else 12


SUITE_3 = CipherSuite(3, 0x01, 0x01, 0x01)
SUITE_17 = CipherSuite(17, 0x03, 0x04, 0x01)
SUITES = (SUITE_17, SUITE_3)
"""Offered suites, strongest first (a client that proposes wildcards gets 17). Suites
without integrity or confidentiality (0, 1, 2, 15, 16) are refused, as current BMC
firmware does: they would send passwords' HMACs and commands in the clear."""


def negotiate(request: bytes) -> tuple[int, CipherSuite | None]:
    """(RMCP+ status, suite) for an Open Session Request (table 13-9).

    Each of the three algorithm payloads names one algorithm, or has length 0, which lets
    the BMC choose."""
    wanted: list[int | None] = []
    for offset in (8, 16, 24):
        length, algorithm = request[offset + 3], request[offset + 4] & 0x3F
        wanted.append(None if length == 0 else algorithm)
    auth, integrity, conf = wanted
    for suite in SUITES:
        if (
            auth in (None, suite.auth)
            and integrity in (None, suite.integrity)
            and conf in (None, suite.confidentiality)
        ):
            return OK, suite
    if auth is not None and auth not in {s.auth for s in SUITES}:
        return RMCP_INVALID_AUTH_ALGORITHM, None
    if integrity is not None and integrity not in {s.integrity for s in SUITES}:
        return RMCP_INVALID_INTEGRITY_ALGORITHM, None
    if conf is not None and conf not in {s.confidentiality for s in SUITES}:
        return RMCP_INVALID_CONFIDENTIALITY_ALGORITHM, None
    return RMCP_NO_CIPHER_SUITE_MATCH, None


def algorithm_payloads(suite: CipherSuite) -> bytes:
    """The three algorithm payloads of an Open Session Response (table 13-10)."""
    return (
        bytes([0, 0, 0, 8, suite.auth, 0, 0, 0])
        + bytes([1, 0, 0, 8, suite.integrity, 0, 0, 0])
        + bytes([2, 0, 0, 8, suite.confidentiality, 0, 0, 0])
    )


def cipher_suite_records(by_suite: bool) -> bytes:
    """Get Channel Cipher Suites data (table 22-19), unpaginated.

    By suite: a 0xC0 record per suite (tag, suite id, auth, 0x40|integrity, 0x80|conf).
    Otherwise: every supported algorithm once, tagged the same way."""
    if by_suite:
        return b"".join(
            bytes([0xC0, s.id, s.auth, 0x40 | s.integrity, 0x80 | s.confidentiality])
            for s in sorted(SUITES, key=lambda s: s.id)
        )
    auths = sorted({s.auth for s in SUITES})
    integrities = sorted({0x40 | s.integrity for s in SUITES})
    confs = sorted({0x80 | s.confidentiality for s in SUITES})
    return bytes(auths + integrities + confs)


def cipher_suites_page(request: bytes, channel: int) -> tuple[int, bytes]:
    """Reply to Get Channel Cipher Suites: 16 bytes of records per list index."""
    if len(request) < 3:
        return REQUEST_DATA_LENGTH_INVALID, b""
    if request[1] != 0:  # payload type: only IPMI has cipher suites here
        return INVALID_DATA_FIELD, b""
    index = request[2] & 0x3F
    records = cipher_suite_records(bool(request[2] & 0x80))
    return OK, bytes([channel]) + records[16 * index : 16 * index + 16]


# -- App commands ---------------------------------------------------------------------------


def _firmware_revision() -> tuple[int, int]:
    """vdc's version as IPMI firmware revision: major binary, minor two BCD digits."""
    try:
        parts = metadata.version("vdc").split(".")
        major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except (metadata.PackageNotFoundError, ValueError):
        major, minor = 0, 0
    minor %= 100
    return major & 0x7F, (minor // 10) << 4 | minor % 10


MANUFACTURER_ID = 0x000000  # none: vdc has no IANA enterprise number of its own
PRODUCT_ID = 0x0001
CHASSIS_DEVICE = 0x80  # additional device support: "chassis device" (what we implement)
FRU_SEL_SDR_SENSOR = 0x0F  # ... and FRU inventory, SEL, SDR repository and sensor devices


def device_id() -> bytes:
    """Get Device ID reply (table 20-2).

    pyghmi packs the manufacturer and product IDs in 4 bytes each, where IPMI has 3 and
    2; FreeIPMI's bmc-info rejects that reply, so it is built here."""
    major, minor = _firmware_revision()
    return (
        bytes([0x20, 0x01, major, minor, 0x02, CHASSIS_DEVICE | FRU_SEL_SDR_SENSOR])
        + struct.pack("<I", MANUFACTURER_ID)[:3]
        + struct.pack("<H", PRODUCT_ID)
        + bytes(4)
    )


LAN_CHANNEL = 1
CURRENT_CHANNEL = 0x0E


def channel_info(request: bytes, active_sessions: int) -> tuple[int, bytes]:
    """Get Channel Info (table 22-29): one 802.3 LAN channel, multi-session."""
    if not request:
        return REQUEST_DATA_LENGTH_INVALID, b""
    channel = request[0] & 0x0F
    if channel not in (LAN_CHANNEL, CURRENT_CHANNEL):
        return INVALID_DATA_FIELD, b""
    ipmi_iana = (0xF2, 0x1B, 0x00)  # 7154, the IPMI forum, as the spec requires here
    return OK, bytes([LAN_CHANNEL, 0x04, 0x01, 0x80 | min(active_sessions, 0x3F), *ipmi_iana, 0, 0])


# -- Chassis ----------------------------------------------------------------------------------

POWER_RESTORE_ALWAYS_ON = 0b10 << 5  # vdc run powers every machine on when it starts


def chassis_status(power: str) -> bytes:
    """Get Chassis Status (table 28-3). A machine whose QEMU cannot be asked has no power
    and reports a main power fault, as a server whose supply failed does."""
    current = POWER_RESTORE_ALWAYS_ON
    if power == "On":
        current |= 0x01
    elif power != "Off":
        current |= 0x08
    return bytes([current, 0x00, 0x00])


# Chassis Control (table 28-4)
POWER_DOWN, POWER_UP, POWER_CYCLE, HARD_RESET, PULSE_DIAG, SOFT_SHUTDOWN = range(6)


# -- boot flags (table 28-14, parameter 5) ------------------------------------------------------

BOOT_PARAM_SET_IN_PROGRESS = 0
BOOT_PARAM_VALID_BIT_CLEARING = 3
BOOT_PARAM_INFO_ACK = 4
BOOT_PARAM_FLAGS = 5
BOOT_PARAM_INITIATOR_INFO = 6

_SELECTOR_TO_TARGET: dict[int, BootTarget] = {
    0x0: "none",
    0x1: "pxe",
    0x2: "hdd",
    0x3: "hdd",  # disk, safe mode: a VM has no safe mode of its own
    0x5: "cd",
    0x6: "bios-setup",
}
_TARGET_TO_SELECTOR: dict[BootTarget, int] = {
    "none": 0x0,
    "pxe": 0x1,
    "hdd": 0x2,
    "cd": 0x5,
    "bios-setup": 0x6,
    "uefi-http": 0x1,  # IPMI knows no HTTP boot; it is a network boot
}


def decode_boot_flags(data: bytes) -> BootOverride | None:
    """The override that Set System Boot Options' boot-flag bytes ask for; None when they
    select a device vdc cannot boot from (diagnostic partition, floppy)."""
    flags, device = data[0], data[1]
    mode = "uefi" if flags & 0x20 else "legacy"
    selector = (device >> 2) & 0x0F
    if selector not in _SELECTOR_TO_TARGET:
        return None
    target = _SELECTOR_TO_TARGET[selector]
    if not flags & 0x80 or target == "none":
        return BootOverride(target="none", enabled="disabled", mode=mode)
    enabled = "continuous" if flags & 0x40 else "once"
    return BootOverride(target=target, enabled=enabled, mode=mode)


def encode_boot_flags(override: BootOverride) -> bytes:
    """Boot-flag bytes (5) that Get System Boot Options reports for an override."""
    flags = 0x20 if override.mode == "uefi" else 0
    device = 0
    if override.enabled != "disabled" and override.target != "none":
        flags |= 0x80 | (0x40 if override.enabled == "continuous" else 0)
        device = _TARGET_TO_SELECTOR[override.target] << 2
    return bytes([flags, device, 0, 0, 0])


# -- serial over LAN (section 26) --------------------------------------------------------------

NETFN_TRANSPORT = 0x0C
PAYLOAD_SOL = 0x01
BIT_RATE_115200 = 0x0A


def sol_parameter(parameter: int, port: int) -> tuple[int, bytes]:
    """Get SOL Configuration Parameters (table 26-5), revision 11h; fixed values: SOL is
    enabled, encrypted and authenticated, for User privilege and up, at 115200 bit/s."""
    values = {
        0: bytes([0x00]),  # set complete
        1: bytes([0x01]),  # enabled
        2: bytes([0xC0 | USER]),  # force encryption and authentication; User and up
        3: bytes([12, 96]),  # character accumulate interval (5 ms units), send threshold
        4: bytes([7, 50]),  # retry count, retry interval (10 ms units)
        5: bytes([BIT_RATE_115200]),
        6: bytes([BIT_RATE_115200]),
        7: bytes([LAN_CHANNEL]),
        8: struct.pack("<H", port),
    }
    if parameter not in values:
        return PARAMETER_NOT_SUPPORTED, b""
    return OK, bytes([0x11]) + values[parameter]


def activate_payload_reply(max_payload: int, port: int) -> bytes:
    """Activate Payload's reply for SOL (table 24-2): payload sizes, UDP port, no VLAN."""
    return bytes(4) + struct.pack("<HHHH", max_payload, max_payload, port, 0xFFFF)


# -- user accounts (tables 22-33, 22-37) ----------------------------------------------------------


def user_access(user_id: int, users: list[tuple[str, int]]) -> tuple[int, bytes]:
    """Get User Access for `user_id` (1-based; 1 is the null user, which is disabled).

    `users` are (name, privilege limit) of the accounts in IDs 2, 3, ..."""
    max_ids = len(users) + 1
    if not 1 <= user_id <= max_ids:
        return PARAMETER_OUT_OF_RANGE, b""
    enabled = 0x40 | len(users)  # bits 7:6 01b = "user ID enabled via Set User Password"
    limit = 0x0F if user_id == 1 else users[user_id - 2][1]  # 0Fh: no access
    access = (0x30 if user_id > 1 else 0) | limit  # link auth + IPMI messaging enabled
    return OK, bytes([max_ids, enabled, 0x01, access])


def user_name(user_id: int, users: list[tuple[str, int]]) -> tuple[int, bytes]:
    if not 1 <= user_id <= len(users) + 1:
        return PARAMETER_OUT_OF_RANGE, b""
    name = b"" if user_id == 1 else users[user_id - 2][0].encode()[:16]
    return OK, name.ljust(16, b"\0")


__all__ = [
    "SUITES",
    "SUITE_3",
    "SUITE_17",
    "CipherSuite",
    "activate_payload_reply",
    "algorithm_payloads",
    "channel_info",
    "chassis_status",
    "cipher_suite_records",
    "cipher_suites_page",
    "decode_boot_flags",
    "device_id",
    "encode_boot_flags",
    "negotiate",
    "sol_parameter",
    "user_access",
    "user_name",
]
