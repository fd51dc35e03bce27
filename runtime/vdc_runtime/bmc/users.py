"""BMC accounts: who may log in to IPMI and Redfish, and with what role."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["Administrator", "Operator", "ReadOnly"]

IPMI_PRIVILEGE: dict[Role, int] = {"ReadOnly": 2, "Operator": 3, "Administrator": 4}
"""The highest IPMI privilege level a role may take: User (2), Operator (3), Administrator (4)."""

PLACEMAT_USER = "cybozu"
PLACEMAT_PASSWORD = "cybozu"  # Placemat's well-known default, kept for its scripts


@dataclass(frozen=True)
class BmcUser:
    name: str
    password: str
    role: Role = "Administrator"

    def __repr__(self) -> str:  # never print a password into a log
        return f"BmcUser(name={self.name!r}, role={self.role!r})"


class Users:
    """The accounts of every BMC of a data center (all BMCs share them, as Placemat's did)."""

    def __init__(self, users: tuple[BmcUser, ...]) -> None:
        self._by_name = {u.name: u for u in users}

    def get(self, name: str) -> BmcUser | None:
        return self._by_name.get(name)

    def check(self, name: str, password: str) -> BmcUser | None:
        """The user if `password` is theirs, else None (constant-time comparison)."""
        import hmac

        user = self._by_name.get(name)
        if user is None or not hmac.compare_digest(user.password.encode(), password.encode()):
            return None
        return user

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    @classmethod
    def placemat_default(cls) -> Users:
        return cls((BmcUser(PLACEMAT_USER, PLACEMAT_PASSWORD, "Administrator"),))


__all__ = ["IPMI_PRIVILEGE", "PLACEMAT_PASSWORD", "PLACEMAT_USER", "BmcUser", "Role", "Users"]
