"""The BMC's FRU inventory (device 0), in the Platform Management FRU Information Storage
Definition v1.0 format: chassis, board and product areas with the node's SMBIOS strings."""

from __future__ import annotations

from vdc_runtime.bmc.target import SystemFacts

FORMAT_VERSION = 0x01
RACK_MOUNT_CHASSIS = 0x17
END_OF_FIELDS = 0xC1
ENGLISH = 0x00


def _checksum(data: bytes) -> int:
    return -sum(data) & 0xFF


def field(text: str) -> bytes:
    """A type/length byte (8-bit ASCII + Latin 1) and the text. One character is padded to
    two: C1h, a one-character field's type/length, marks the end of the fields."""
    data = text.encode("latin-1", errors="replace")[:63]
    if len(data) == 1:
        data += b" "
    return bytes([0xC0 | len(data)]) + data


def area(prefix: bytes, fields: list[str]) -> bytes:
    """An area: version, length in 8-byte units, `prefix`, fields, end marker, padding and
    a checksum that makes the area sum to zero."""
    body = prefix + b"".join(field(f) for f in fields) + bytes([END_OF_FIELDS])
    size = -(-(len(body) + 3) // 8) * 8
    data = bytes([FORMAT_VERSION, size // 8]) + body
    data += bytes(size - len(data) - 1)
    return data + bytes([_checksum(data)])


def inventory(facts: SystemFacts) -> bytes:
    """The whole FRU image for `facts`."""
    chassis = area(bytes([RACK_MOUNT_CHASSIS]), [facts.model, facts.serial])
    board = area(
        bytes([ENGLISH, 0, 0, 0]),  # manufacturing date unspecified
        [facts.manufacturer, facts.model, facts.serial, "", ""],
    )
    product = area(
        bytes([ENGLISH]),
        [facts.manufacturer, facts.model, facts.model, "", facts.serial, "", ""],
    )
    offsets = []
    position = 8
    for part in (chassis, board, product):
        offsets.append(position // 8)
        position += len(part)
    header = bytes([FORMAT_VERSION, 0, *offsets, 0, 0])
    header += bytes([_checksum(header)])
    return header + chassis + board + product


__all__ = ["area", "field", "inventory"]
