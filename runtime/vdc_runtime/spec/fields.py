"""Field types shared by the models: each validates one value and explains what is wrong.

Messages are written for the person who wrote the YAML, so every check raises a
`PydanticCustomError` with a message of our own instead of pydantic's generic wording.
User values go into the error context, never into the template, so braces in them are safe.
"""

from __future__ import annotations

import ipaddress
import os
import re
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from vdc_runtime.spec.errors import describe

IPInterface = IPv4Interface | IPv6Interface
IPAddress = IPv4Address | IPv6Address

# Linux limits from dev_valid_name(): IFNAMSIZ is 16 including the terminating NUL.
IFNAME_MAX = 15
NETNS_NAME_MAX = 64
# A node's name ends up in unix socket paths (108 bytes including the NUL) next to the run
# dir; 63 leaves room for a reasonable run dir and matches a DNS label, which guests may use.
NODE_NAME_MAX = 63

_SIZE = re.compile(r"(?:[0-9]+|[0-9]+\.[0-9]+(?=[KMGT]))[KMGT]?", re.IGNORECASE)
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")


def _error(kind: str, template: str, **context: object) -> PydanticCustomError:
    return PydanticCustomError(kind, template, context)


def _require_str(value: object) -> str:
    # pydantic's lax mode would turn some non-strings into strings; YAML users get surprises
    # from that (e.g. `name: 0123`), so names must be written as strings.
    if not isinstance(value, str):
        raise _error("string_type", "expected a string, got {got}", got=describe(value))
    return value


def _non_empty(value: str) -> str:
    if not value:
        raise _error("empty", "must not be empty")
    return value


def _file_name(value: str) -> str:
    if "/" in value or "\0" in value or value in {".", ".."}:
        raise _error(
            "file_name",
            "'{value}' is not usable as a file name (no '/', not '.' or '..')",
            value=value,
        )
    return value


def _interface_name(value: str) -> str:
    if len(value) > IFNAME_MAX:
        raise _error(
            "ifname",
            "'{value}' is {n} characters long; Linux interface names have at most {max}",
            value=value,
            n=len(value),
            max=IFNAME_MAX,
        )
    if value in {".", ".."} or any(c in "/:" or c.isspace() for c in value):
        raise _error(
            "ifname",
            "'{value}' is not a valid Linux interface name (no '/', ':' or whitespace;"
            " not '.' or '..')",
            value=value,
        )
    return value


def _netns_name(value: str) -> str:
    if len(value) > NETNS_NAME_MAX:
        raise _error(
            "netns_name",
            "'{value}' is {n} characters long; at most {max} are allowed",
            value=value,
            n=len(value),
            max=NETNS_NAME_MAX,
        )
    if any(c.isspace() for c in value):
        raise _error("netns_name", "'{value}' must not contain whitespace", value=value)
    return _file_name(value)


def _node_name(value: str) -> str:
    if len(value) > NODE_NAME_MAX:
        raise _error(
            "node_name",
            "'{value}' is {n} characters long; at most {max} are allowed (the name is part"
            " of socket paths)",
            value=value,
            n=len(value),
            max=NODE_NAME_MAX,
        )
    if any(c.isspace() for c in value):
        raise _error("node_name", "'{value}' must not contain whitespace", value=value)
    return _file_name(value)


Text = Annotated[str, BeforeValidator(_require_str)]
"""Any string, possibly empty, but written as a string."""

Name = Annotated[
    str,
    BeforeValidator(_require_str),
    AfterValidator(_non_empty),
    WithJsonSchema({"type": "string", "minLength": 1}),
]
"""Any non-empty string; used for names that are only labels or keys."""

FileName = Annotated[
    Name,
    AfterValidator(_file_name),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"^[^/]+$"}),
]
"""A name that becomes part of a file path (node volumes, sockets)."""

NetworkName = Annotated[
    Name,
    AfterValidator(_interface_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": IFNAME_MAX, "pattern": r"^[^/:\s]+$"}
    ),
]
"""A Network's name is its bridge's name, so it must be a valid Linux interface name."""

NodeName = Annotated[
    Name,
    AfterValidator(_node_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": NODE_NAME_MAX, "pattern": r"^[^/\s]+$"}
    ),
]
"""A node's name names its sockets, log, NVRAM and volume folder."""

NetNSName = Annotated[
    Name,
    AfterValidator(_netns_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": NETNS_NAME_MAX, "pattern": r"^[^/\s]+$"}
    ),
]
"""A namespace's name is a file under /run/netns."""


def _host_interface(value: object) -> IPInterface:
    if isinstance(value, IPv4Interface | IPv6Interface):
        return value
    if not isinstance(value, str):
        raise _error(
            "ip_interface_type",
            "expected an address with a prefix length like 10.0.0.1/24, got {got}",
            got=describe(value),
        )
    if "/" not in value:
        raise _error(
            "ip_interface",
            "'{value}' has no prefix length; write it as e.g. {value}/24",
            value=value,
        )
    try:
        iface = ipaddress.ip_interface(value.strip())
    except ValueError:
        raise _error(
            "ip_interface",
            "'{value}' is not an IP address with a prefix length (e.g. 10.0.0.1/24)",
            value=value,
        ) from None
    net = iface.network
    # /31 and /32 (and their IPv6 equivalents) have no network or broadcast address to avoid.
    if net.prefixlen < net.max_prefixlen - 1:
        if iface.ip == net.network_address:
            raise _error(
                "ip_interface",
                "'{value}' is the network address of {net}, not a host address",
                value=value,
                net=str(net),
            )
        if iface.version == 4 and iface.ip == net.broadcast_address:
            raise _error(
                "ip_interface",
                "'{value}' is the broadcast address of {net}, not a host address",
                value=value,
                net=str(net),
            )
    return iface


def _host_address(value: object) -> IPAddress:
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    if not isinstance(value, str):
        raise _error(
            "ip_address_type", "expected an address like 10.0.0.1, got {got}", got=describe(value)
        )
    if "/" in value:
        raise _error(
            "ip_address",
            "'{value}' has a prefix length; write the address alone, it takes its network's",
            value=value,
        )
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        raise _error(
            "ip_address", "'{value}' is not an IP address (e.g. 10.0.0.1 or fd00::1)", value=value
        ) from None
    if address.is_unspecified or address.is_multicast or address.is_loopback:
        raise _error("ip_address", "'{value}' cannot be a host's address", value=value)
    return address


HostAddress = Annotated[
    IPAddress,
    PlainValidator(_host_address),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "ip",
            "maxLength": 64,
            "description": "an IP address, e.g. 10.72.16.11 or fd00::11",
        }
    ),
]
"""One unicast address without a prefix length."""


HostInterface = Annotated[
    IPInterface,
    PlainValidator(_host_interface),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "ip-interface",
            "maxLength": 64,
            "description": "a host address with its prefix length, e.g. 10.0.0.1/24 or fd00::1/64",
        }
    ),
]
"""An address assigned to an interface: host part and prefix, like `ip addr add` takes."""


def _size(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _error("size_type", "expected a size like 512M or 2G, got {got}", got=describe(value))
    if not _SIZE.fullmatch(value):
        raise _error(
            "size",
            "'{value}' is not a size; use a number with an optional K, M, G or T suffix,"
            " e.g. 512M or 2G",
            value=value,
        )
    if float(value.rstrip("KMGTkmgt")) == 0:
        raise _error("size", "'{value}': size must be greater than zero", value=value)
    return value


Size = Annotated[
    str,
    PlainValidator(_size),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([0-9]+|[0-9]+\.[0-9]+[KMGTkmgt])[KMGTkmgt]?$",
            "description": "a size in QEMU syntax: bytes, or a number with a K/M/G/T suffix",
        }
    ),
]
"""A size passed to QEMU or qemu-img verbatim (`-m 2G`, `qemu-img create ... 10G`)."""


def _path_input(value: object) -> object:
    if isinstance(value, Path):
        return value
    value = _require_str(value)
    if not value:
        raise _error("empty", "must not be empty")
    if "\0" in value:
        raise _error("path", "a path must not contain NUL characters")
    return value


def _resolve(path: Path, info: ValidationInfo) -> Path:
    # Relative paths are relative to the folder of the file that names them; the loader
    # passes that folder in the validation context. Without one, paths stay as written.
    base = (info.context or {}).get("base_dir")
    if isinstance(base, Path | str) and not path.is_absolute():
        path = Path(base) / path
    return Path(os.path.normpath(path)) if path.is_absolute() else path


def _absolute(path: Path) -> Path:
    if not path.is_absolute():
        raise _error("absolute_path", "'{path}' is not an absolute path", path=str(path))
    return Path(os.path.normpath(path))


FilePath = Annotated[Path, BeforeValidator(_path_input), AfterValidator(_resolve)]
"""A path to an input file; stored absolute. Existence is checked by `checks`, not here."""

AbsolutePath = Annotated[Path, BeforeValidator(_path_input), AfterValidator(_absolute)]
"""A path that must be written absolute (host directories)."""


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
        raise _error("url", "'{value}' is not an http:// or https:// URL", value=value)
    return value


URL = Annotated[
    str,
    BeforeValidator(_require_str),
    AfterValidator(_url),
    WithJsonSchema({"type": "string", "pattern": r"^[hH][tT][tT][pP][sS]?://"}),
]


def _sha256(value: str) -> str:
    if not _SHA256.fullmatch(value):
        raise _error(
            "sha256", "'{value}' is not a SHA-256 digest (64 hexadecimal digits)", value=value
        )
    return value.lower()


SHA256 = Annotated[
    str,
    BeforeValidator(_require_str),
    AfterValidator(_sha256),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9a-fA-F]{64}$"}),
]


def _mac(value: str) -> str:
    if not _MAC.fullmatch(value):
        raise _error(
            "mac",
            "'{value}' is not a MAC address; write six hexadecimal pairs separated by ':',"
            " e.g. 52:54:00:12:34:56",
            value=value,
        )
    if int(value[:2], 16) & 1:
        raise _error(
            "mac",
            "'{value}' is a multicast address; a NIC needs a unicast one (the lowest bit of"
            " the first byte clear, e.g. 52:54:00:...)",
            value=value,
        )
    if value.replace(":", "").strip("0") == "":
        raise _error("mac", "'{value}' is the all-zero address", value=value)
    return value.lower()


MAC = Annotated[
    str,
    BeforeValidator(_require_str),
    AfterValidator(_mac),
    WithJsonSchema({"type": "string", "pattern": r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"}),
]
"""A unicast Ethernet address, stored in lower case."""

RestartPolicy = Literal["no", "on-failure", "always"]


def _restart(value: object) -> object:
    # YAML 1.1 reads a bare `no` as false; that is what the user meant.
    return "no" if value is False else value


Restart = Annotated[RestartPolicy, BeforeValidator(_restart)]

NodeRestart = Annotated[Literal["no", "on-failure"], BeforeValidator(_restart)]
"""What the runtime does when a node's QEMU dies unexpectedly."""


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise _error(
            "regex", "'{value}' is not a regular expression: {why}", value=value, why=str(exc)
        ) from None
    if re.fullmatch(value, ""):
        raise _error("regex", "'{value}' matches an empty text, so anything", value=value)
    return value


Regex = Annotated[
    str,
    BeforeValidator(_require_str),
    AfterValidator(_regex),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 1024}),
]
"""A Python regular expression that cannot match nothing at all."""
