"""Field types shared by the models: each validates one value and explains what is wrong.

Messages are written for the person who wrote the YAML, so every check raises a
`PydanticCustomError` with a message of our own instead of pydantic's generic wording.
User values go into the error context, never into the template, so braces in them are safe.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from vdc_runtime.spec import strings
from vdc_runtime.spec.errors import describe

IPInterface = IPv4Interface | IPv6Interface
IPAddress = IPv4Address | IPv6Address


def _error(kind: str, template: str, **context: object) -> PydanticCustomError:
    return PydanticCustomError(kind, template, context)


def _require_str(value: object) -> str:
    # pydantic's lax mode would turn some non-strings into strings; YAML users get surprises
    # from that (e.g. `name: 0123`), so names must be written as strings.
    if not isinstance(value, str):
        raise _error("string_type", "expected a string, got {got}", got=describe(value))
    return value


def _ruled(
    rule: strings.StringRule, explain: Callable[[str], None], generic: str
) -> Callable[[str], str]:
    """A validator that accepts exactly what `rule` accepts (so the CRD agrees); when it
    refuses, `explain` may raise a message naming the problem, else `generic` is used."""

    def validate(value: str) -> str:
        if rule.accepts(value):
            return value
        explain(value)
        raise _error("invalid", generic, value=value)

    return validate


def ruled_str(
    rule: strings.StringRule,
    generic: str,
    explain: Callable[[str], None] = lambda value: None,
    *after: Callable[[str], str],
) -> Any:
    """A string type that accepts exactly what `rule` accepts, with the rule's JSON schema
    (so the CRD agrees), `generic` (or `explain`'s) message when it refuses, and `after`
    applied to what it accepts (e.g. lower-casing)."""
    return Annotated[
        str,
        BeforeValidator(_require_str),
        AfterValidator(_ruled(rule, explain, generic)),
        *(AfterValidator(fn) for fn in after),
        WithJsonSchema(rule.json_schema()),
    ]


def _explain_file_name(value: str) -> None:
    if not value:
        raise _error("empty", "must not be empty")
    if "/" in value or "\0" in value or value in {".", ".."}:
        raise _error(
            "file_name",
            "'{value}' is not usable as a file name (no '/', not '.' or '..')",
            value=value,
        )


def _explain_interface_name(value: str) -> None:
    if not value:
        raise _error("empty", "must not be empty")
    if len(value) > strings.IFNAME_MAX:
        raise _error(
            "ifname",
            "'{value}' is {n} characters long; Linux interface names have at most {max}",
            value=value,
            n=len(value),
            max=strings.IFNAME_MAX,
        )
    raise _error(
        "ifname",
        "'{value}' is not a valid Linux interface name (no '/', ':', NUL or whitespace;"
        " not '.' or '..')",
        value=value,
    )


def _explain_path_name(what: str, max_length: int, why: str = "") -> Callable[[str], None]:
    def explain(value: str) -> None:
        if len(value) > max_length:
            raise _error(
                what,
                "'{value}' is {n} characters long; at most {max} are allowed" + why,
                value=value,
                n=len(value),
                max=max_length,
            )
        if any(c in _ASCII_SPACE for c in value):
            raise _error(what, "'{value}' must not contain whitespace", value=value)
        _explain_file_name(value)

    return explain


_ASCII_SPACE = " \t\n\x0b\f\r"


def _name_type(rule: strings.StringRule, explain: Callable[[str], None], what: str) -> Any:
    return ruled_str(rule, f"'{{value}}' is not a valid {what}", explain)


Text = Annotated[str, BeforeValidator(_require_str)]
"""Any string, possibly empty, but written as a string."""

Name = _name_type(strings.NAME, _explain_file_name, "name")
"""Any non-empty string; used for names that are only labels or keys."""

FileName = _name_type(strings.FILE_NAME, _explain_file_name, "file name")
"""A name that becomes part of a file path (node volumes, sockets)."""

NetworkName = _name_type(strings.NETWORK_NAME, _explain_interface_name, "interface name")
"""A Network's name is its bridge's name, so it must be a valid Linux interface name."""

NodeName = _name_type(
    strings.NODE_NAME,
    _explain_path_name("node_name", strings.NODE_NAME_MAX, " (the name is part of socket paths)"),
    "node name",
)
"""A node's name names its sockets, log, NVRAM and volume folder."""

NetNSName = _name_type(
    strings.NETNS_NAME, _explain_path_name("netns_name", strings.NETNS_NAME_MAX), "namespace name"
)
"""A namespace's name is a file under /run/netns."""

GroupName = ruled_str(
    strings.GROUP_NAME,
    f"'{{value}}' is not a valid group name (at most {strings.GROUP_NAME_MAX} lower-case"
    " letters, digits and '-', starting and ending with a letter or digit: it names a pod)",
)
"""A group's name, part of its pod's name."""


def _is_network_address(iface: IPInterface) -> bool:
    # /31 and /32 (and their IPv6 equivalents) have no network or broadcast address to avoid.
    net = iface.network
    return net.prefixlen < net.max_prefixlen - 1 and iface.ip == net.network_address


def _interface(value: object, *, network_address_ok: bool = False) -> IPInterface:
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
    if _is_network_address(iface) and not network_address_ok:
        raise _error(
            "ip_interface",
            "'{value}' is the network address of {net}, not a host address",
            value=value,
            net=str(net),
        )
    if (
        net.prefixlen < net.max_prefixlen - 1
        and iface.version == 4
        and iface.ip == net.broadcast_address
    ):
        raise _error(
            "ip_interface",
            "'{value}' is the broadcast address of {net}, not a host address",
            value=value,
            net=str(net),
        )
    return iface


def _host_interface(value: object) -> IPInterface:
    return _interface(value)


LENIENT_NOTES = "lenient_notes"
"""The validation context's key for a list that, when present, asks for Placemat's
leniency: validators that Placemat is more lenient than let such values through and
append `(location, message)` to it."""


def _bridge_interface(value: object, info: ValidationInfo) -> IPInterface:
    notes = (info.context or {}).get(LENIENT_NOTES)
    iface = _interface(value, network_address_ok=notes is not None)
    if notes is not None and _is_network_address(iface):
        # Placemat gives it to the kernel, which takes it (it is only unusual on a bridge).
        where = (info.field_name,) if info.field_name else ()
        notes.append((where, f"'{value}' is the network address of {iface.network}; "
                      "the bridge gets it as written, as with Placemat"))  # fmt: skip
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


_INTERFACE_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "format": "ip-interface",
        "maxLength": 64,
        "description": "a host address with its prefix length, e.g. 10.0.0.1/24 or fd00::1/64",
    }
)

HostInterface = Annotated[
    IPInterface,
    PlainValidator(_host_interface),
    PlainSerializer(str, return_type=str),
    _INTERFACE_SCHEMA,
]
"""An address assigned to an interface: host part and prefix, like `ip addr add` takes."""


BridgeInterface = Annotated[
    IPInterface,
    PlainValidator(_bridge_interface),
    PlainSerializer(str, return_type=str),
    _INTERFACE_SCHEMA,
]
"""A bridge's address: a `HostInterface`, but read leniently its network address passes
with a warning, as Placemat passes it to the kernel."""


def _size(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _error("size_type", "expected a size like 512M or 2G, got {got}", got=describe(value))
    if strings.SIZE.accepts(value):
        return value
    if re.fullmatch(r"[0.]*[KMGTkmgt]?", value) and any(c == "0" for c in value):
        raise _error("size", "'{value}': size must be greater than zero", value=value)
    raise _error(
        "size",
        "'{value}' is not a size; use a number with an optional K, M, G or T suffix,"
        " e.g. 512M or 2G",
        value=value,
    )


_UNIT_BYTES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_bytes(size: str, *, bare_unit: int = 1) -> int:
    """The bytes a Size stands for; a bare number counts in `bare_unit` (QEMU's `-m` takes
    MiB, qemu-img bytes). ValueError for what is not a Size."""
    if not strings.SIZE.accepts(size):
        raise ValueError(f"not a size: {size!r}")
    unit = size[-1].upper() if size[-1].isalpha() else ""
    number = size[:-1] if unit else size
    return int(float(number) * (_UNIT_BYTES[unit] if unit else bare_unit))


Size = Annotated[
    str,
    PlainValidator(_size),
    WithJsonSchema(
        strings.SIZE.json_schema(
            description="a size in QEMU syntax: bytes, or a number with a K/M/G/T suffix"
        )
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


URL = ruled_str(strings.HTTP_URL, "'{value}' is not an http:// or https:// URL")

SHA256 = ruled_str(
    strings.SHA256,
    "'{value}' is not a SHA-256 digest (64 hexadecimal digits)",
    lambda value: None,
    str.lower,
)


def _explain_mac(value: str) -> None:
    if re.fullmatch("[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}", value):
        if int(value[:2], 16) & 1:
            raise _error(
                "mac",
                "'{value}' is a multicast address; a NIC needs a unicast one (the lowest bit"
                " of the first byte clear, e.g. 52:54:00:...)",
                value=value,
            )
        raise _error("mac", "'{value}' is the all-zero address", value=value)


MAC = ruled_str(
    strings.MAC,
    "'{value}' is not a MAC address; write six hexadecimal pairs separated by ':',"
    " e.g. 52:54:00:12:34:56",
    _explain_mac,
    str.lower,
)
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
