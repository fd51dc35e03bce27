"""Walk raw YAML alongside the models' types: key lookup, case folding and error paths.

Placemat decoded YAML through Go's encoding/json, which matches keys case-insensitively
(`UEFI: true` works). We keep that, but drive it from the models' aliases so there is no
second list of keys to maintain, and we map pydantic's error locations back to the keys
exactly as the user spelt them.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

_DISCRIMINATOR = "kind"

KeyStyle = Callable[[str], str]
"""How a key is written for a Python field name; None means the models' own aliases
(Placemat's kebab-case, matched case-insensitively)."""


def unwrap(tp: Any) -> Any:
    """Strip Annotated[...] and Optional[...] down to the type that shapes the data."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def fields_by_key(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The model's fields keyed by the YAML key (its alias)."""
    return {(info.alias or name): info for name, info in model.model_fields.items()}


def _names_by_key(model: type[BaseModel]) -> dict[str, str]:
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def styled_keys(model: type[BaseModel], style: KeyStyle | None) -> dict[str, str]:
    """The model's keys as written in `style` -> the canonical keys (aliases)."""
    return {(style(name) if style else key): key for key, name in _names_by_key(model).items()}


def _written(model: type[BaseModel], canonical: str, style: KeyStyle | None) -> str:
    if style is None:
        return canonical
    name = _names_by_key(model).get(canonical)
    return style(name) if name is not None else canonical


def union_members(tp: Any) -> dict[str, type[BaseModel]] | None:
    """For a union of models told apart by `kind`, map each `kind` value to its model."""
    tp = unwrap(tp)
    if get_origin(tp) not in (Union, types.UnionType):
        return None
    members: dict[str, type[BaseModel]] = {}
    for arg in get_args(tp):
        if not _is_model(arg) or _DISCRIMINATOR not in arg.model_fields:
            return None
        annotation = arg.model_fields[_DISCRIMINATOR].annotation
        if get_origin(annotation) is not Literal:
            return None
        for tag in get_args(annotation):
            members[str(tag)] = arg
    return members


def find_key(mapping: dict[Any, Any], key: str) -> Any:
    """The key of `mapping` that stands for `key`: exact, else the case-insensitive match."""
    if key in mapping:
        return key
    folded = key.lower()
    for candidate in mapping:
        if isinstance(candidate, str) and candidate.lower() == folded:
            return candidate
    return None


def item_type(tp: Any) -> Any:
    tp = unwrap(tp)
    if get_origin(tp) is list:
        return get_args(tp)[0]
    return None


def normalize(value: Any, tp: Any) -> Any:
    """Rename keys to their canonical spelling where they match case-insensitively.

    Unknown keys are kept as written so pydantic reports them. An explicit null on a key
    with a default counts as absent, as it did in Placemat (Go leaves the zero value).
    """
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        if isinstance(value, dict):
            kind_key = find_key(value, _DISCRIMINATOR)
            if kind_key is not None and kind_key != _DISCRIMINATOR and _DISCRIMINATOR not in value:
                value = {(_DISCRIMINATOR if k == kind_key else k): v for k, v in value.items()}
            tag = value.get(_DISCRIMINATOR)
            if isinstance(tag, str) and tag in members:
                return normalize(value, members[tag])
        return value
    if _is_model(tp) and isinstance(value, dict):
        known = fields_by_key(tp)
        folded = {k.lower(): k for k in known}
        out: dict[Any, Any] = {}
        for key, item in value.items():
            canonical = key
            if isinstance(key, str) and key not in known:
                match = folded.get(key.lower())
                # When the exact spelling is present too, the variant is a duplicate and
                # stays unknown so the user hears about it.
                if match is not None and match not in value:
                    canonical = match
            info = known.get(canonical) if isinstance(canonical, str) else None
            if info is None:
                out[key] = item
            elif item is None and not info.is_required():
                continue
            else:
                out[canonical] = normalize(item, info.annotation)
        return out
    item_tp = item_type(tp)
    if item_tp is not None and isinstance(value, list):
        return [normalize(item, item_tp) for item in value]
    return value


def rename(value: Any, tp: Any, style: KeyStyle) -> Any:
    """Rename keys written in `style` (exactly) to the models' canonical keys.

    Unknown keys are kept as written so pydantic reports them; nulls stay (a CR has none
    that mean anything else than what the schema says).
    """
    tp = unwrap(tp)
    members = union_members(tp)
    if members is not None:
        tag = value.get(_DISCRIMINATOR) if isinstance(value, dict) else None
        if isinstance(tag, str) and tag in members:
            return rename(value, members[tag], style)
        return value
    if _is_model(tp) and isinstance(value, dict):
        keys = styled_keys(tp, style)
        fields = fields_by_key(tp)
        out: dict[Any, Any] = {}
        for key, item in value.items():
            canonical = keys.get(key) if isinstance(key, str) else None
            if canonical is None:
                out[key] = item
            else:
                out[canonical] = rename(item, fields[canonical].annotation, style)
        return out
    item_tp = item_type(tp)
    if item_tp is not None and isinstance(value, list):
        return [rename(item, item_tp, style) for item in value]
    return value


@dataclass(frozen=True)
class Location:
    """Where a pydantic error location points, in the user's terms."""

    path: tuple[str | int, ...]
    type: Any
    """The type found at the location (a model class for mappings), or None if unknown."""
    siblings: dict[str, type[BaseModel]] | None
    """When `type` was chosen by `kind` from a union: all the union's models by kind."""


def locate(
    loc: Sequence[str | int],
    tp: Any,
    raw: Any,
    *,
    tagged: bool = True,
    style: KeyStyle | None = None,
) -> Location:
    """Translate a location made of canonical keys into the path the user wrote.

    Pydantic puts the discriminator value into locations inside tagged unions
    (`volumes.1.localds.user-data`); with `tagged` those segments are dropped. Without it
    (locations built by `checks`), the union member is picked by the data's own `kind`.
    Canonical keys are replaced by the user's spelling found in `raw`, or by their
    spelling in `style` where `raw` does not have them.
    """
    path: list[str | int] = []
    siblings: dict[str, type[BaseModel]] | None = None
    for seg in loc:
        tp = unwrap(tp)
        members = union_members(tp)
        if members is not None:
            if tagged and isinstance(seg, str) and seg in members:
                tp, siblings = members[seg], members
                continue
            if not tagged:
                tag = raw.get(find_key(raw, _DISCRIMINATOR)) if isinstance(raw, dict) else None
                tp = members.get(tag) if isinstance(tag, str) else None
        siblings = None
        if _is_model(tp) and isinstance(raw, str):
            # A mapping written in its one-string short form (a node interface given as
            # just the network name): the string itself is what the user can fix.
            break
        if _is_model(tp):
            written = _written(tp, str(seg), style)
            key = find_key(raw, written) if isinstance(raw, dict) else None
            info = fields_by_key(tp).get(str(seg))
            path.append(written if key is None else key)
            raw = raw.get(key) if isinstance(raw, dict) and key is not None else None
            tp = info.annotation if info is not None else None
        else:
            path.append(seg)
            in_range = isinstance(raw, list) and isinstance(seg, int) and 0 <= seg < len(raw)
            raw = raw[seg] if in_range else None
            tp = item_type(tp)
    return Location(tuple(path), unwrap(tp), siblings)


def remove(data: Any, loc: Sequence[str | int], tp: Any) -> None:
    """Delete the key at a pydantic `loc` (tag segments included) from `data`.

    Raises KeyError, IndexError or TypeError when `loc` does not lead to a key.
    """
    parent = data
    for seg in loc[:-1]:
        tp = unwrap(tp)
        members = union_members(tp)
        if members is not None and isinstance(seg, str) and seg in members:
            tp = members[seg]
            continue
        if _is_model(tp):
            info = fields_by_key(tp).get(str(seg))
            tp = info.annotation if info is not None else None
        else:
            tp = item_type(tp)
        parent = parent[seg]
    del parent[loc[-1]]
