"""Who is asking, and may they: Basic credentials or a session token, and the role privileges.

The refusals carry nothing of what was sent (no user name, no token): a 401 only says that
no valid credentials came, as DSP0266 asks and the DMTF protocol validator checks.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from vdc_runtime.bmc.redfish.messages import RedfishError, message
from vdc_runtime.bmc.redfish.resources import PRIVILEGES
from vdc_runtime.bmc.redfish.sessions import Session, SessionStore
from vdc_runtime.bmc.users import BmcUser, Users

REALM = 'Basic realm="vdc BMC", charset="UTF-8"'


@dataclass(frozen=True)
class Principal:
    user: BmcUser
    session: Session | None  # None: Basic authentication, request by request

    def may(self, privilege: str) -> bool:
        return privilege in PRIVILEGES[self.user.role]


def unauthorized(summary: str = "Authentication is required.") -> RedfishError:
    return RedfishError(
        401, summary, [message("NoValidSession")], headers={"WWW-Authenticate": REALM}
    )


def forbidden(privilege: str) -> RedfishError:
    return RedfishError(
        403,
        f"This request needs the {privilege} privilege, which the account's role has not.",
        [message("InsufficientPrivilege")],
    )


def basic_credentials(header: str) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic` header; None if it is not one."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def authenticate(
    users: Users, sessions: SessionStore, token: str | None, authorization: str | None
) -> Principal:
    """The principal of a request's X-Auth-Token or Authorization header; 401 otherwise.

    A token, when sent, decides alone: a stale token with valid Basic credentials beside it
    is still refused, so a client learns its session ended instead of silently falling back."""
    if token is not None:
        session = sessions.authenticate(token)
        if session is None:
            raise unauthorized("The session token is not valid (unknown, ended or timed out).")
        # An account that left the data center file takes its sessions with it.
        user = users.get(session.user.name)
        if user is None:
            sessions.delete(session.id)
            raise unauthorized("The session's account no longer exists.")
        return Principal(user, session)
    if authorization is not None:
        credentials = basic_credentials(authorization)
        if credentials is not None:
            user = users.check(*credentials)
            if user is not None:
                return Principal(user, None)
        raise unauthorized("The credentials are not valid.")
    raise unauthorized()


__all__ = ["REALM", "Principal", "authenticate", "basic_credentials", "forbidden", "unauthorized"]
