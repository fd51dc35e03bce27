"""DMTF error bodies and message annotations, from the Base message registry.

Clients match on `MessageId` (Ironic, the DMTF tools) and show `Message`; both come from the
registry, so only the messages this service sends are copied here, with their registry text
as published in Base 1.16.0 (the version bmcweb ships), and only their arguments vary.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

REGISTRY = "Base.1.16.0"
MESSAGE_TYPE = "#Message.v1_3_0.Message"


@dataclass(frozen=True)
class _Entry:
    text: str
    severity: str
    resolution: str


BASE: Mapping[str, _Entry] = {
    "Success": _Entry("The request completed successfully.", "OK", "None."),
    "GeneralError": _Entry(
        "A general error has occurred.  See Resolution for information on how to resolve the "
        "error, or @Message.ExtendedInfo if Resolution is not provided.",
        "Critical",
        "None.",
    ),
    "MalformedJSON": _Entry(
        "The request body submitted was malformed JSON and could not be parsed by the receiving"
        " service.",
        "Critical",
        "Ensure that the request body is valid JSON and resubmit the request.",
    ),
    "EmptyJSON": _Entry(
        "The request body submitted contained an empty JSON object and the service is unable to"
        " process it.",
        "Warning",
        "Add properties in the JSON object and resubmit the request.",
    ),
    "NoOperation": _Entry(
        "The request body submitted contain no data to act upon and no changes to the resource"
        " took place.",
        "Warning",
        "Add properties in the JSON object and resubmit the request.",
    ),
    "PropertyUnknown": _Entry(
        "The property %1 is not in the list of valid properties for the resource.",
        "Warning",
        "Remove the unknown property from the request body and resubmit the request if the"
        " operation failed.",
    ),
    "PropertyNotWritable": _Entry(
        "The property %1 is a read only property and cannot be assigned a value.",
        "Warning",
        "Remove the property from the request body and resubmit the request if the operation"
        " failed.",
    ),
    "PropertyDuplicate": _Entry(
        "The property %1 was duplicated in the request.",
        "Warning",
        "Remove the duplicate property from the request body and resubmit the request if the"
        " operation failed.",
    ),
    "PropertyMissing": _Entry(
        "The property %1 is a required property and must be included in the request.",
        "Warning",
        "Ensure that the property is in the request body and has a valid value and resubmit the"
        " request if the operation failed.",
    ),
    "PropertyValueTypeError": _Entry(
        "The value '%1' for the property %2 is of a different type than the property can accept.",
        "Warning",
        "Correct the value for the property in the request body and resubmit the request if the"
        " operation failed.",
    ),
    "PropertyValueNotInList": _Entry(
        "The value '%1' for the property %2 is not in the list of acceptable values.",
        "Warning",
        "Choose a value from the enumeration list that the implementation can support and"
        " resubmit the request if the operation failed.",
    ),
    "PropertyValueOutOfRange": _Entry(
        "The value '%1' for the property %2 is not in the supported range of acceptable values.",
        "Warning",
        "Correct the value for the property in the request body and resubmit the request if the"
        " operation failed.",
    ),
    "ActionParameterMissing": _Entry(
        "The action %1 requires the parameter %2 to be present in the request body.",
        "Critical",
        "Supply the action with the required parameter in the request body when the request is"
        " resubmitted.",
    ),
    "ActionParameterUnknown": _Entry(
        "The action %1 was submitted with the invalid parameter %2.",
        "Warning",
        "Correct the invalid action parameter and resubmit the request if the operation failed.",
    ),
    "ActionParameterDuplicate": _Entry(
        "The action %1 was submitted with more than one value for the parameter %2.",
        "Warning",
        "Resubmit the action with only one instance of the action parameter in the request body"
        " if the operation failed.",
    ),
    "ActionParameterValueTypeError": _Entry(
        "The value '%1' for the parameter %2 in the action %3 is of a different type than the"
        " parameter can accept.",
        "Warning",
        "Correct the value for the parameter in the request body and resubmit the request if the"
        " operation failed.",
    ),
    "ActionParameterValueNotInList": _Entry(
        "The value '%1' for the parameter %2 in the action %3 is not in the list of acceptable"
        " values.",
        "Warning",
        "Choose a value from the enumeration list that the implementation can support and"
        " resubmit the request if the operation failed.",
    ),
    "ActionParameterValueFormatError": _Entry(
        "The value '%1' for the parameter %2 in the action %3 is of a different format than the"
        " parameter can accept.",
        "Warning",
        "Correct the value for the parameter in the request body and resubmit the request if the"
        " operation failed.",
    ),
    "ActionParameterNotSupported": _Entry(
        "The parameter %1 for the action %2 is not supported on the target resource.",
        "Warning",
        "Remove the parameter supplied and resubmit the request if the operation failed.",
    ),
    "CouldNotEstablishConnection": _Entry(
        "The service failed to establish a connection with the URI '%1'.",
        "Critical",
        "Ensure that the URI contains a valid and reachable node name, protocol information and"
        " other URI components.",
    ),
    "AccessDenied": _Entry(
        "While attempting to establish a connection to '%1', the service denied access.",
        "Critical",
        "Attempt to ensure that the URI is correct and that the service has the appropriate"
        " credentials.",
    ),
    "ResourceAtUriInUnknownFormat": _Entry(
        "The resource at '%1' is in a format not recognized by the service.",
        "Critical",
        "Place an image or resource or file that is recognized by the service at the URI.",
    ),
    "ResourceInUse": _Entry(
        "The change to the requested resource failed because the resource is in use or in"
        " transition.",
        "Warning",
        "Remove the condition and resubmit the request if the operation failed.",
    ),
    "ChassisPowerStateOnRequired": _Entry(
        "The chassis with Id '%1' requires to be powered on to perform this request.",
        "Warning",
        "Power on the specified chassis and resubmit the request.",
    ),
    "ChassisPowerStateOffRequired": _Entry(
        "The Chassis with Id '%1' requires to be powered off to perform this request.",
        "Warning",
        "Power off the specified chassis and resubmit the request.",
    ),
    "NoValidSession": _Entry(
        "There is no valid session established with the implementation.",
        "Critical",
        "Establish a session before attempting any operations.",
    ),
    "ResourceAtUriUnauthorized": _Entry(
        "While accessing the resource at '%1', the service received an authorization error '%2'.",
        "Critical",
        "Ensure that the appropriate access is provided for the service in order for it to"
        " access the URI.",
    ),
    "InsufficientPrivilege": _Entry(
        "There are insufficient privileges for the account or credentials associated with the"
        " current session to perform the requested operation.",
        "Critical",
        "Either abandon the operation or change the associated access rights and resubmit the"
        " request if the operation failed.",
    ),
    "ResourceMissingAtURI": _Entry(
        "The resource at the URI '%1' was not found.",
        "Critical",
        "Place a valid resource at the URI or correct the URI and resubmit the request.",
    ),
    "OperationNotAllowed": _Entry(
        "The HTTP method is not allowed on this resource.", "Critical", "None."
    ),
    "ResourceCannotBeDeleted": _Entry(
        "The delete request failed because the resource requested cannot be deleted.",
        "Critical",
        "Do not attempt to delete a non-deletable resource.",
    ),
    "PreconditionFailed": _Entry(
        "The ETag supplied did not match the ETag required to change this resource.",
        "Critical",
        "Try the operation again using the appropriate ETag.",
    ),
    "HeaderInvalid": _Entry(
        "Header '%1' is invalid.", "Critical", "Resubmit the request with a valid request header."
    ),
    "QueryParameterUnsupported": _Entry(
        "Query parameter '%1' is not supported.",
        "Warning",
        "Correct or remove the query parameter and resubmit the request.",
    ),
    "PayloadTooLarge": _Entry(
        "The supplied payload exceeds the maximum size supported by the service.",
        "Critical",
        "Check that the supplied payload is correct and supported by this service.",
    ),
    "SessionLimitExceeded": _Entry(
        "The session establishment failed due to the number of simultaneous sessions exceeding"
        " the limit of the implementation.",
        "Critical",
        "Reduce the number of other sessions before trying to establish the session or increase"
        " the limit of simultaneous sessions, if supported.",
    ),
    "InternalError": _Entry(
        "The request failed due to an internal service error.  The service is still operational.",
        "Critical",
        "Resubmit the request.  If the problem persists, consider resetting the service.",
    ),
}


def message(
    key: str, *args: object, related: Iterable[str] = (), resolution: str | None = None
) -> dict[str, Any]:
    """One `Message` object (an `@Message.ExtendedInfo` entry) for a Base registry message.

    `related` are JSON pointers into the request body (`/Boot/BootSourceOverrideTarget`);
    `resolution` replaces the registry's, as the registry asks for GeneralError."""
    entry = BASE[key]
    text = entry.text
    # Highest placeholder first, so %1 does not eat the start of %10.
    for i in range(len(args), 0, -1):
        text = text.replace(f"%{i}", str(args[i - 1]))
    related = list(related)
    body: dict[str, Any] = {
        "@odata.type": MESSAGE_TYPE,
        "MessageId": f"{REGISTRY}.{key}",
        "Message": text,
        "MessageArgs": [str(a) for a in args],
        "MessageArgs@odata.count": len(args),
        "MessageSeverity": entry.severity,
        # Deprecated in Message 1.1 but still what older clients (and Placemat's) read.
        "Severity": entry.severity,
        "Resolution": resolution or entry.resolution,
    }
    if related:
        body["RelatedProperties"] = related
        body["RelatedProperties@odata.count"] = len(related)
    return body


def error_body(summary: str, infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The DMTF error response: `error.code` is the one message's id, GeneralError for several."""
    code = infos[0]["MessageId"] if len(infos) == 1 else f"{REGISTRY}.GeneralError"
    return {"error": {"code": code, "message": summary, "@Message.ExtendedInfo": infos}}


@dataclass
class RedfishError(Exception):
    """A request the service refuses: becomes the DMTF error response with this status."""

    status: int
    summary: str
    infos: list[dict[str, Any]]
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.summary)

    def body(self) -> dict[str, Any]:
        return error_body(self.summary, self.infos)


def bad_request(summary: str, *infos: dict[str, Any]) -> RedfishError:
    return RedfishError(400, summary, list(infos))


__all__ = ["BASE", "REGISTRY", "RedfishError", "bad_request", "error_body", "message"]
