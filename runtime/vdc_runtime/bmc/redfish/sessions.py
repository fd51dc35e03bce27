"""Redfish login sessions of one BMC: tokens, idle timeout, limit.

Only a hash of each token is kept, so a lookup compares digests rather than secrets and a
dump of the store holds nothing a client could replay. The clocks are injectable so the
timeout is unit tested without waiting for it.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from vdc_runtime.bmc.redfish.resources import SessionView
from vdc_runtime.bmc.users import BmcUser

DEFAULT_TIMEOUT = 1800  # 30 minutes idle, the usual default of server BMCs
MIN_TIMEOUT, MAX_TIMEOUT = 30, 86400  # the range SessionService.SessionTimeout allows
SESSION_LIMIT = 64


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass
class Session:
    id: str
    user: BmcUser
    created: datetime.datetime
    client: str | None
    last_used: float
    _digest: bytes
    context: str | None = None

    def view(self) -> SessionView:
        return SessionView(self.id, self.user.name, self.created, self.client, self.context)


class SessionLimitError(RuntimeError):
    pass


class SessionStore:
    def __init__(
        self,
        *,
        timeout: int = DEFAULT_TIMEOUT,
        limit: int = SESSION_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.timeout = timeout
        self.limit = limit
        self._clock = clock
        self._wall_clock = wall_clock
        self._by_id: dict[str, Session] = {}
        self._by_digest: dict[bytes, Session] = {}

    def create(
        self, user: BmcUser, client: str | None, context: str | None = None
    ) -> tuple[Session, str]:
        """A new session and its token (returned once, never stored)."""
        self._expire()
        if len(self._by_id) >= self.limit:
            raise SessionLimitError(f"{len(self._by_id)} sessions are open (limit {self.limit})")
        # 128 random bits as hex: what the DMTF protocol validator checks for randomness.
        token = secrets.token_hex(16)
        session_id = secrets.token_hex(8)
        while session_id in self._by_id:
            session_id = secrets.token_hex(8)
        session = Session(
            session_id, user, self._wall_clock(), client, self._clock(), _digest(token), context
        )
        self._by_id[session_id] = session
        self._by_digest[session._digest] = session
        return session, token

    def authenticate(self, token: str) -> Session | None:
        """The live session of `token`, its idle time restarted; None if unknown or expired."""
        session = self._by_digest.get(_digest(token))
        if session is None:
            return None
        if self._expired(session):
            self._drop(session)
            return None
        session.last_used = self._clock()
        return session

    def get(self, session_id: str) -> Session | None:
        self._expire()
        return self._by_id.get(session_id)

    def sessions(self) -> list[Session]:
        self._expire()
        return sorted(self._by_id.values(), key=lambda s: (s.created, s.id))

    def delete(self, session_id: str) -> bool:
        session = self._by_id.get(session_id)
        if session is None:
            return False
        self._drop(session)
        return True

    def clear(self) -> None:
        self._by_id.clear()
        self._by_digest.clear()

    def __len__(self) -> int:
        self._expire()
        return len(self._by_id)

    def _expired(self, session: Session) -> bool:
        return self._clock() - session.last_used > self.timeout

    def _expire(self) -> None:
        for session in [s for s in self._by_id.values() if self._expired(s)]:
            self._drop(session)

    def _drop(self, session: Session) -> None:
        self._by_id.pop(session.id, None)
        self._by_digest.pop(session._digest, None)


__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "MIN_TIMEOUT",
    "SESSION_LIMIT",
    "Session",
    "SessionLimitError",
    "SessionStore",
]
