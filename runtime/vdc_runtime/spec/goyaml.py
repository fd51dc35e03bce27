"""What Placemat's YAML decoder makes of a plain scalar written where a string belongs.

Placemat decodes with sigs.k8s.io/yaml v1.6.0: go-yaml v2 resolves a plain scalar (YAML 1.1
rules, `resolve.go`), then, for a struct field of type string, a number or boolean is
turned back into text (`yaml.go`, convertToJSONableObject): an integer in decimal, a float
as Go's `strconv.FormatFloat(v, 'g', -1, 32)`, a boolean as true/false. So `8000` is
"8000" but `0x1F` is "31", `1e3` is "1000" and `yes` is "true". PyYAML resolves some of
these differently (`1e3` stays text, `12:30` is an integer), so the text is worked out
here from the scalar as written, with go-yaml's rules; no library does this in Python.
"""

from __future__ import annotations

import math
import re
import struct

_TRUE = {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"}
_FALSE = {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
_NULL = {"", "~", "null", "Null", "NULL"}
_SPECIAL_FLOATS = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
# Go's strconv.ParseFloat syntax for decimal floats (hex floats need a 0x prefix, which a
# scalar starting with '.' cannot have).
_GO_DECIMAL_FLOAT = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?")
_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1
# The largest float32; beyond it (by more than rounding), the conversion gives infinity.
_FLOAT32_MAX = struct.unpack("f", struct.pack("I", 0x7F7FFFFF))[0] * (1 + 2**-25)


def _go_parse_float(text: str) -> float | None:
    """strconv.ParseFloat(text, 64) for the decimal forms go-yaml passes it; None for out
    of range (Go reports an error, and go-yaml then keeps the text)."""
    value = float(text)
    return None if math.isinf(value) else value


def _go_parse_int(text: str) -> int | None:
    """strconv.ParseInt, else ParseUint, with base 0: a sign (ParseInt only), then a 0x,
    0o or 0b prefix, a leading 0 (octal), or decimal digits."""
    body, sign = text, ""
    if body[:1] in ("+", "-"):
        sign, body = body[0], body[1:]
    base = 10
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        base, body = {"0x": 16, "0o": 8, "0b": 2}[prefix], body[2:]
    elif len(body) > 1 and body[0] == "0":
        base, body = 8, body[1:]
    allowed = "0123456789abcdef"[:base]
    if not body or any(c.lower() not in allowed for c in body):
        return None
    value = int(body, base) * (-1 if sign == "-" else 1)
    limit = _UINT64_MAX if not sign else (1 << 63) - 1  # a signed number is ParseInt's
    return value if _INT64_MIN <= value <= limit else None


def _format_float32(value: float) -> str:
    """strconv.FormatFloat(value, 'g', -1, 32)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if abs(value) > _FLOAT32_MAX:  # Go's float32() conversion overflows to infinity
        return "+Inf" if value > 0 else "-Inf"
    single = struct.unpack("f", struct.pack("f", value))[0]
    if single == 0:
        return "-0" if math.copysign(1, single) < 0 else "0"
    # The fewest significant digits that read back as the same float32.
    for precision in range(1, 10):
        mantissa, exponent = f"{single:.{precision - 1}e}".split("e")
        if struct.unpack("f", struct.pack("f", float(f"{mantissa}e{exponent}")))[0] == single:
            break
    negative = mantissa.startswith("-")
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exp = int(exponent)
    sign = "-" if negative else ""
    if exp < -4 or exp >= 6:  # Go's rule for the shortest 'g' form
        fraction = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{fraction}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    point = exp + 1  # digits before the decimal point
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def plain_scalar_as_string(text: str) -> str | None:
    """The string Placemat gets for a plain (unquoted) scalar in a string field; None when
    go-yaml reads it as null (the field is then left empty)."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    if text in _SPECIAL_FLOATS:
        return _format_float32(_SPECIAL_FLOATS[text])
    first = text[0]
    if first == ".":
        value = _go_parse_float(text) if _GO_DECIMAL_FLOAT.fullmatch(text) else None
        return text if value is None else _format_float32(value)
    if not (first.isdigit() or first in "+-"):
        return text
    if _TIMESTAMP.fullmatch(text):
        return text  # go-yaml v2 keeps timestamps as text when decoding into interface{}
    plain = text.replace("_", "")
    number = _go_parse_int(plain)
    if number is not None:
        return str(number)
    value = _go_parse_float(plain) if _YAML_STYLE_FLOAT.fullmatch(plain) else None
    return text if value is None else _format_float32(value)


__all__ = ["plain_scalar_as_string"]
