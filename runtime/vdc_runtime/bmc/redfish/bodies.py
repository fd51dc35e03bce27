"""Request bodies: JSON decoding and the checks of every PATCH and POST, as pure functions.

Each check collects every problem of a body before refusing it, so a client sees all its
mistakes in one 400, and a body with any problem changes nothing (a half-applied boot
override would boot the machine from somewhere nobody asked for).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vdc_runtime.bmc.redfish.messages import RedfishError, bad_request, message
from vdc_runtime.bmc.redfish.resources import BOOT_ENABLED, BOOT_MODES, BOOT_TARGETS
from vdc_runtime.bmc.redfish.sessions import MAX_TIMEOUT, MIN_TIMEOUT
from vdc_runtime.bmc.target import BootOverride

Json = dict[str, Any]


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> Json:
    body: Json = {}
    for key, value in pairs:
        if key in body:
            raise _Duplicate(key)
        body[key] = value
    return body


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(data: bytes, *, action: str | None = None) -> Json:
    """The JSON object in a request body; `action` names the action for its messages."""
    if not data.strip():
        if action is not None:
            return {}  # an action without parameters: its own check says what is missing
        raise bad_request("The request body is empty.", message("EmptyJSON"))
    try:
        body = json.loads(
            data.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except _Duplicate as dup:
        info = (
            message("ActionParameterDuplicate", action, dup.key)
            if action
            else message("PropertyDuplicate", dup.key)
        )
        raise bad_request(f"{dup.key} appears more than once in the request body.", info) from None
    except (UnicodeDecodeError, ValueError) as exc:
        summary = f"The request body is not JSON: {exc}"
        raise bad_request(summary, message("MalformedJSON")) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", message("MalformedJSON"))
    return body


def annotation(key: str) -> bool:
    return key.startswith("@") or "@odata." in key or "@Redfish." in key or "@Message." in key


def no_parameters(body: Json, action: str) -> None:
    """400 naming every parameter given to an action that takes none (annotations aside)."""
    extra = [k for k in body if not annotation(k)]
    if extra:
        raise refuse(
            [message("ActionParameterUnknown", action, k, related=[f"/{k}"]) for k in extra]
        )


def _problems_summary(infos: list[Json]) -> str:
    return "; ".join(i["Message"] for i in infos)


def refuse(infos: list[Json]) -> RedfishError:
    return RedfishError(400, _problems_summary(infos), infos)


def _check_enum(
    infos: list[Json], container: Json, name: str, pointer: str, table: dict[str, str]
) -> str | None:
    if name not in container:
        return None
    value = container[name]
    if not isinstance(value, str):
        infos.append(message("PropertyValueTypeError", json.dumps(value), name, related=[pointer]))
        return None
    if value not in table:
        infos.append(message("PropertyValueNotInList", value, name, related=[pointer]))
        return None
    return table[value]


# Properties of ComputerSystem a client may send back from a GET: named as read-only rather
# than unknown, which is what they are.
_SYSTEM_READ_ONLY = frozenset(
    {
        "Id", "Name", "Description", "SystemType", "Manufacturer", "Model", "SerialNumber",
        "UUID", "PowerState", "Status", "ProcessorSummary", "MemorySummary",
        "EthernetInterfaces", "Links", "Actions", "TrustedModules",
    }
)  # fmt: skip
_BOOT_WRITABLE = ("BootSourceOverrideTarget", "BootSourceOverrideEnabled", "BootSourceOverrideMode")


def system_patch(body: Json, current: BootOverride) -> BootOverride:
    """The boot override a ComputerSystem PATCH asks for, merged into the current one."""
    infos: list[Json] = []
    boot = None
    properties = [k for k in body if not annotation(k)]
    if not properties:
        raise bad_request("The request changes nothing.", message("NoOperation"))
    for key in properties:
        if key == "Boot":
            boot = body[key]
            if not isinstance(boot, dict):
                infos.append(
                    message("PropertyValueTypeError", json.dumps(boot), "Boot", related=["/Boot"])
                )
                boot = None
        elif key in _SYSTEM_READ_ONLY:
            infos.append(message("PropertyNotWritable", key, related=[f"/{key}"]))
        else:
            infos.append(message("PropertyUnknown", key, related=[f"/{key}"]))
    target = enabled = mode = None
    if boot is not None:
        for key in boot:
            if key in _BOOT_WRITABLE or annotation(key):
                continue
            known = key.startswith("BootSourceOverride") or key in ("BootOrder", "HttpBootUri")
            info = "PropertyNotWritable" if known else "PropertyUnknown"
            infos.append(message(info, f"Boot/{key}", related=[f"/Boot/{key}"]))
        target = _check_enum(
            infos, boot, "BootSourceOverrideTarget", "/Boot/BootSourceOverrideTarget", BOOT_TARGETS
        )
        enabled = _check_enum(
            infos,
            boot,
            "BootSourceOverrideEnabled",
            "/Boot/BootSourceOverrideEnabled",
            BOOT_ENABLED,
        )
        mode = _check_enum(
            infos, boot, "BootSourceOverrideMode", "/Boot/BootSourceOverrideMode", BOOT_MODES
        )
        if not infos and not any(k in boot for k in _BOOT_WRITABLE):
            infos.append(message("NoOperation"))
    if infos:
        raise refuse(infos)
    if enabled is None:
        if target is not None and target != "none" and current.enabled == "disabled":
            # A boot device asked for without saying for how long is read as the next boot:
            # left disabled, the override would silently do nothing.
            enabled = "once"
        elif target == "none":
            enabled = "disabled"
        else:
            enabled = current.enabled
    if target is None:
        target = current.target
    return BootOverride(
        target=target,  # type: ignore[arg-type]
        enabled=enabled,  # type: ignore[arg-type]
        mode=mode or current.mode,  # type: ignore[arg-type]
    )


_SESSION_SERVICE_READ_ONLY = frozenset(
    {"Id", "Name", "Description", "Status", "Sessions", "ServiceEnabled"}
)


def session_service_patch(body: Json) -> int:
    """The new SessionTimeout of a SessionService PATCH."""
    infos: list[Json] = []
    properties = [k for k in body if not annotation(k)]
    if not properties:
        raise bad_request("The request changes nothing.", message("NoOperation"))
    timeout = None
    for key in properties:
        value = body[key]
        if key == "SessionTimeout":
            if not isinstance(value, int) or isinstance(value, bool):
                infos.append(
                    message("PropertyValueTypeError", json.dumps(value), key, related=[f"/{key}"])
                )
            elif not MIN_TIMEOUT <= value <= MAX_TIMEOUT:
                infos.append(message("PropertyValueOutOfRange", value, key, related=[f"/{key}"]))
            else:
                timeout = value
        elif key in _SESSION_SERVICE_READ_ONLY:
            # ServiceEnabled is writable in the schema, but sessions cannot be switched off.
            infos.append(message("PropertyNotWritable", key, related=[f"/{key}"]))
        else:
            infos.append(message("PropertyUnknown", key, related=[f"/{key}"]))
    if infos:
        raise refuse(infos)
    assert timeout is not None
    return timeout


def reset_type(body: Json, action: str, allowed: tuple[str, ...]) -> str:
    """The ResetType of a Reset action body; `action` is e.g. ComputerSystem.Reset."""
    infos: list[Json] = []
    for key in body:
        if key != "ResetType" and not annotation(key):
            infos.append(message("ActionParameterUnknown", action, key, related=[f"/{key}"]))
    value = body.get("ResetType")
    if "ResetType" not in body:
        infos.append(message("ActionParameterMissing", action, "ResetType"))
    elif not isinstance(value, str):
        infos.append(
            message(
                "ActionParameterValueTypeError",
                json.dumps(value),
                "ResetType",
                action,
                related=["/ResetType"],
            )
        )
    elif value not in allowed:
        infos.append(
            message(
                "ActionParameterValueNotInList", value, "ResetType", action, related=["/ResetType"]
            )
        )
    if infos:
        raise refuse(infos)
    assert isinstance(value, str)
    return value


@dataclass(frozen=True)
class Login:
    user: str
    password: str
    context: str | None = None


def login(body: Json) -> Login:
    """The credentials of a session-creating POST (the password is never echoed back)."""
    infos: list[Json] = []
    values: dict[str, str] = {}
    context = body.get("Context")
    if context is not None and not isinstance(context, str):
        infos.append(message("PropertyValueTypeError", json.dumps(context), "Context"))
    for key in ("UserName", "Password"):
        if key not in body:
            infos.append(message("PropertyMissing", key, related=[f"/{key}"]))
        elif not isinstance(body[key], str):
            shown = json.dumps(body[key]) if key == "UserName" else "(hidden)"
            infos.append(message("PropertyValueTypeError", shown, key, related=[f"/{key}"]))
        else:
            values[key] = body[key]
    for key in body:
        if key not in ("UserName", "Password", "Context") and not annotation(key):
            infos.append(message("PropertyUnknown", key, related=[f"/{key}"]))
    if infos:
        raise refuse(infos)
    return Login(values["UserName"], values["Password"], context)


__all__ = ["Login", "decode", "login", "reset_type", "session_service_patch", "system_patch"]
