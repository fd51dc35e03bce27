"""Redfish VirtualMedia: one CD/DVD drive per system, as pure functions of its state.

The drive is served twice, as iDRAC and sushy-tools lay it out, so both kinds of client
find it: under the Manager (`Managers/BMC/VirtualMedia/Cd`, where Redfish first put
virtual media) and under the System (`Systems/<id>/VirtualMedia/Cd`, ComputerSystem
1.13 and later, which Ironic looks at first). Both are the same drive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from vdc_runtime.bmc.media import MediaError, MediaState
from vdc_runtime.bmc.redfish import resources as rs
from vdc_runtime.bmc.redfish.bodies import no_parameters, refuse
from vdc_runtime.bmc.redfish.messages import RedfishError, message

Json = dict[str, Any]

MEDIA_ID = "Cd"
INSERT = "VirtualMedia.InsertMedia"
EJECT = "VirtualMedia.EjectMedia"
PRIVILEGE = "ConfigureManager"
"""What DMTF's privilege registry asks for a VirtualMedia POST."""
PROTOCOLS = {"HTTP": "http", "HTTPS": "https"}
TRANSFER_METHODS = ("Stream", "Upload")


def locations(ident: rs.Identity) -> list[tuple[str, str]]:
    """(URI served, canonical URI) of each VirtualMedia collection: the system's under each
    of its names, and the manager's."""
    found = [
        (f"{rs.SYSTEMS}/{rs.segment(system_id)}/VirtualMedia", f"{ident.system_uri}/VirtualMedia")
        for system_id in (ident.system_id, rs.PLACEMAT_ID)
    ]
    found.append((f"{ident.manager_uri}/VirtualMedia", f"{ident.manager_uri}/VirtualMedia"))
    return found


def collection(uri: str) -> Json:
    """The VirtualMedia collection at `uri`: the one CD drive."""
    return rs.collection(
        "VirtualMediaCollection", uri, "Virtual Media Collection", [f"{uri}/{MEDIA_ID}"]
    )


def virtual_media(collection_uri: str, state: MediaState) -> Json:
    uri = f"{collection_uri}/{MEDIA_ID}"
    protocol = None
    if state.image is not None:
        scheme = state.image.split(":", 1)[0].lower()
        protocol = next((k for k, v in PROTOCOLS.items() if v == scheme), None)
    return {
        "@odata.id": uri,
        "@odata.type": rs.odata_type("VirtualMedia"),
        "Id": MEDIA_ID,
        "Name": "Virtual CD/DVD",
        "Description": "The machine's CD/DVD drive; an inserted image is downloaded first.",
        "MediaTypes": ["CD", "DVD"],
        "Image": state.image,
        "ImageName": state.name,
        "Inserted": state.inserted,
        "WriteProtected": True,
        "ConnectedVia": "URI" if state.inserted else "NotConnected",
        # The whole image is fetched before it goes in (Stream would read it remotely).
        "TransferMethod": "Upload",
        "TransferProtocolType": protocol,
        "UserName": state.user,
        "Password": None,  # never shown
        "VerifyCertificate": False,
        "EjectPolicy": "Persistent",
        "Status": {"State": "Enabled", "Health": "OK"},
        "Actions": {
            f"#{INSERT}": {"target": f"{uri}/Actions/{INSERT}"},
            f"#{EJECT}": {"target": f"{uri}/Actions/{EJECT}"},
        },
    }


@dataclass(frozen=True)
class Insert:
    image: str
    user: str | None = None
    password: str | None = None


def _parameter_type(infos: list[Json], body: Json, name: str, kind: type) -> Any:
    value = body.get(name)
    if name in body and not isinstance(value, kind):
        shown = "(hidden)" if name == "Password" else json.dumps(value)
        infos.append(
            message("ActionParameterValueTypeError", shown, name, INSERT, related=[f"/{name}"])
        )
        return None
    return value


def insert_request(body: Json) -> Insert:
    """The parameters of an InsertMedia POST; every problem with them in one 400."""
    infos: list[Json] = []
    known = {
        "Image": str,
        "UserName": str,
        "Password": str,
        "Inserted": bool,
        "WriteProtected": bool,
        "TransferProtocolType": str,
        "TransferMethod": str,
    }
    for key in body:
        if key not in known and not key.startswith("@"):
            infos.append(message("ActionParameterUnknown", INSERT, key, related=[f"/{key}"]))
    values = {name: _parameter_type(infos, body, name, kind) for name, kind in known.items()}
    image = values["Image"]
    if "Image" not in body:
        infos.append(message("ActionParameterMissing", INSERT, "Image"))
    elif image is not None:
        scheme = image.split(":", 1)[0].lower() if ":" in image else ""
        if scheme not in PROTOCOLS.values() or not image.lower().startswith(f"{scheme}://"):
            infos.append(
                message(
                    "ActionParameterValueFormatError", image, "Image", INSERT, related=["/Image"]
                )
            )
        protocol = values["TransferProtocolType"]
        if protocol is not None and PROTOCOLS.get(protocol) != scheme:
            known_protocol = protocol in PROTOCOLS
            infos.append(
                message(
                    # HTTPS with an http URL is a mismatch; NFS is not offered at all.
                    "ActionParameterValueFormatError"
                    if known_protocol
                    else "ActionParameterValueNotInList",
                    protocol,
                    "TransferProtocolType",
                    INSERT,
                    related=["/TransferProtocolType"],
                )
            )
    method = values["TransferMethod"]
    if method is not None and method not in TRANSFER_METHODS:
        infos.append(
            message(
                "ActionParameterValueNotInList",
                method,
                "TransferMethod",
                INSERT,
                related=["/TransferMethod"],
            )
        )
    # A CD drive is read-only and an insertion inserts: anything else is not supported.
    for name in ("Inserted", "WriteProtected"):
        if values[name] is False:
            infos.append(message("ActionParameterNotSupported", name, INSERT, related=[f"/{name}"]))
    if values["Password"] is not None and values["UserName"] is None:
        infos.append(message("ActionParameterMissing", INSERT, "UserName"))
    if infos:
        raise refuse(infos)
    return Insert(image, values["UserName"], values["Password"])


def eject_request(body: Json) -> None:
    """EjectMedia takes no parameters."""
    no_parameters(body, EJECT)


def refusal(error: MediaError) -> RedfishError:
    """The DMTF error an insertion that failed gets."""
    url = error.url
    if error.kind == "in-use":
        return RedfishError(409, f"{error} (eject it first)", [message("ResourceInUse")])
    if error.kind == "denied":
        return RedfishError(400, str(error), [message("AccessDenied", url)])
    if error.kind == "missing":
        return RedfishError(400, str(error), [message("ResourceMissingAtURI", url)])
    if error.kind == "bad-image":
        return RedfishError(400, str(error), [message("ResourceAtUriInUnknownFormat", url)])
    if error.kind == "bad-url":
        info = message("ActionParameterValueFormatError", url, "Image", INSERT, related=["/Image"])
        return RedfishError(400, str(error), [info])
    return RedfishError(400, str(error), [message("CouldNotEstablishConnection", url)])


__all__ = [
    "EJECT",
    "INSERT",
    "MEDIA_ID",
    "PRIVILEGE",
    "Insert",
    "collection",
    "eject_request",
    "insert_request",
    "locations",
    "refusal",
    "virtual_media",
]
