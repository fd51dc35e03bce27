"""Values derived from a node's name that must be identical wherever they are computed.

They live in `spec` because validation needs them (a generated MAC must not clash with an
explicit one) and every later layer (node layout, API, BMC) must agree with validation.
All are stable across runs, so DHCP reservations and a later `--force` keep working.
"""

from __future__ import annotations

import hashlib
import uuid

MAC_PREFIX = "52:54:00"
"""QEMU's OUI, as Placemat used."""


def _nic_digest(node: str, index: int) -> bytes:
    return hashlib.sha1(f"{node}/{index}".encode()).digest()


def generated_mac(node: str, index: int) -> str:
    """The MAC of a node's `index`-th NIC when the spec gives none."""
    return MAC_PREFIX + "".join(f":{b:02x}" for b in _nic_digest(node, index)[:3])


def netns_mac(netns: str, index: int) -> str:
    """The MAC of a network namespace's eth<index>: locally administered, stable per name.

    A namespace rebuilt (its group's pod replaced, `vdc run` started again) keeps its MACs,
    as a rebooted router does, so the neighbour caches of every other machine and router
    stay right and traffic resumes at once instead of after their entries expire.
    """
    digest = hashlib.sha1(f"netns:{netns}/{index}".encode()).digest()
    return "02" + "".join(f":{b:02x}" for b in digest[:5])


def tap_name(node: str, index: int) -> str:
    """The host tap of a node's `index`-th NIC: `vdt` + 11 hex digits, within IFNAMSIZ."""
    return "vdt" + _nic_digest(node, index).hex()[:11]


def default_serial(node: str) -> str:
    """Placemat's default SMBIOS serial: the lowercase hex SHA-1 of the node name."""
    return hashlib.sha1(node.encode()).hexdigest()


UUID_NAMESPACE = uuid.UUID("6f1f5c52-3a0e-5b7c-9d43-76a1d3c0b2e1")


def system_uuid(node: str) -> str:
    """The SMBIOS system UUID: stable per name, so the guest and its BMC report the same one."""
    return str(uuid.uuid5(UUID_NAMESPACE, node))


__all__ = [
    "MAC_PREFIX",
    "default_serial",
    "generated_mac",
    "netns_mac",
    "system_uuid",
    "tap_name",
]
