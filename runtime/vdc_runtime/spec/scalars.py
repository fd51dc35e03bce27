"""Plain scalars written where a string belongs, read as Placemat reads them (`goyaml`).

`command: [python3, -m, http.server, 8000]`, `serial: 12345678` or an app named `1e3` are
strings to Placemat. Read leniently, each such scalar becomes the text Placemat's decoder
makes of it, with a warning where that text is not what the file says (`0x1F` is "31",
`yes` is "true"). The walk follows the models' types over the YAML nodes, which keep each
scalar as written; quoted scalars are strings already and stay as they are.

Only Placemat's own string fields are read so (`PLACEMAT_STRINGS`, from its Go structs):
vdc's additions, such as an app's `restart: no`, are vdc's and read as YAML reads them.
"""

from __future__ import annotations

import ipaddress
import types
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel

from vdc_runtime.spec.goyaml import plain_scalar_as_string
from vdc_runtime.spec.keys import fields_by_key, find_key, item_type, union_members, unwrap

_TEXT_TYPES = (
    str,
    PurePath,
    ipaddress.IPv4Address,
    ipaddress.IPv6Address,
    ipaddress.IPv4Interface,
    ipaddress.IPv6Interface,
    ipaddress.IPv4Network,
    ipaddress.IPv6Network,
)

Note = tuple[tuple[str | int, ...], str]

_VOLUME = {"kind", "name", "image", "user-data", "network-config", "size", "path", "cache",
           "format", "vg", "device-class"}  # fmt: skip
PLACEMAT_STRINGS: dict[str, set[str]] = {
    "Network": {"kind", "name", "type", "address"},
    "NetworkNamespace": {"kind", "name", "init-scripts"},
    "NetNSInterface": {"network", "addresses"},
    "App": {"name", "command"},
    "DeviceClass": {"kind", "name", "path"},
    "Node": {"kind", "name", "interfaces", "ignition", "memory"},
    "SMBIOS": {"manufacturer", "product", "serial"},
    "ImageVolume": _VOLUME,
    "LocaldsVolume": _VOLUME,
    "RawVolume": _VOLUME,
    "HostPathVolume": _VOLUME,
    "Image": {"kind", "name", "url", "file", "compression"},
}
"""The keys of each model that are strings (or lists of strings) in Placemat v2.4.11's
structs (pkg/types/cluster.go); Go's named string types (NetworkType, NodeVolumeKind, ...)
count, as the decoder converts into them too."""


def _is_text(tp: Any) -> bool:
    """Whether a field of this type is a string in Placemat's Go structs."""
    tp = unwrap(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return all(isinstance(arg, str) for arg in get_args(tp))
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        return bool(members) and all(_is_text(a) for a in members)
    return isinstance(tp, type) and issubclass(tp, _TEXT_TYPES)


def as_placemat_reads(
    value: Any,
    node: yaml.Node | None,
    tp: Any,
    notes: list[Note],
    loc: tuple[str | int, ...] = (),
    placemat_string: bool = False,
) -> Any:
    """`value` (a document as PyYAML read it, keys as written) with each plain scalar in one
    of Placemat's string fields replaced by Placemat's text for it; `notes` gets
    `(path, message)` for each one whose text changes."""
    if node is None:
        return value
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        if isinstance(value, dict):
            kind_key = find_key(value, "kind")
            tag = value.get(kind_key) if kind_key is not None else None
            if isinstance(tag, str) and tag in members:
                return as_placemat_reads(value, node, members[tag], notes, loc, placemat_string)
        return value
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if not isinstance(value, dict) or not isinstance(node, yaml.MappingNode):
            return value
        known = fields_by_key(tp)
        folded = {key.lower(): key for key in known}
        nodes = {k.value: v for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        strings = PLACEMAT_STRINGS.get(tp.__name__, set())
        out: dict[Any, Any] = {}
        for key, item in value.items():
            canonical = key if key in known else folded.get(str(key).lower())
            info = known.get(canonical) if canonical is not None else None
            out[key] = (
                item
                if info is None
                else as_placemat_reads(
                    item, nodes.get(key), info.annotation, notes, (*loc, key), canonical in strings
                )
            )
        return out
    inner = item_type(tp)
    if inner is not None:
        if not isinstance(value, list) or not isinstance(node, yaml.SequenceNode):
            return value
        if len(node.value) != len(value):
            return value
        return [
            as_placemat_reads(item, item_node, inner, notes, (*loc, i), placemat_string)
            for i, (item, item_node) in enumerate(zip(value, node.value, strict=True))
        ]
    if not placemat_string or not _is_text(tp):
        return value
    if not isinstance(node, yaml.ScalarNode) or node.style is not None:
        return value
    if not isinstance(value, str | int | float | bool):
        return value
    text = plain_scalar_as_string(node.value)
    if text is None:
        return value  # null: the field is left as if absent, as Placemat leaves it
    if text != node.value:
        message = f"'{node.value}' is read as '{text}', as Placemat reads it; quote it to keep it"
        notes.append((loc, message + " as written"))
    return text


__all__ = ["as_placemat_reads"]
