"""What a fault is, as a client asks for it (REST, the CLI, a VirtualDataCenter's
spec.faults): one pydantic model per kind, checked on its own (ranges, units, what goes
together). Whether its targets exist is `faults.plan.resolve`'s part, as only the run knows
them. With the spec's models, because a CR's spec is checked with them too."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

FaultKind = Literal["link", "partition", "machine", "bmc"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)

MAX_DURATION = 7 * 24 * 3600.0
"""A fault meant to last longer is one to clear by hand: a week bounds typos (`60d`)."""
MAX_DELAY = 60.0

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE_UNITS = {
    "bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9,
    "bps": 8, "kbps": 8 * 10**3, "mbps": 8 * 10**6, "gbps": 8 * 10**9,
}  # fmt: skip
"""tc's spelling: `bit` units are bits per second, `bps` units bytes per second."""


class FaultError(ValueError):
    """A fault that cannot be applied; `field` names what is wrong with it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class FaultConflict(FaultError):
    """A fault that clashes with one already active (HTTP 409)."""


def parse_seconds(value: Any) -> float:
    """`60`, `60s`, `1.5m`, `500ms`, `2h` → seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 60s, 5m or 500ms")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*([-+]?[0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration such as 60s, 5m or 500ms")
        seconds = float(match[1]) * _UNITS[match[2] or "s"]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be more than zero")
    return seconds


def parse_percent(value: Any) -> float:
    """`30%`, `30` or `0.5%` → percent, 0 < p ≤ 100."""
    if isinstance(value, bool):
        raise ValueError("expected a percentage such as 30%")
    text = str(value).strip().removesuffix("%")
    try:
        percent = float(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a percentage such as 30%") from None
    if not math.isfinite(percent) or not 0 < percent <= 100:
        raise ValueError(f"{value!r} is outside 0–100 % (more than 0, at most 100)")
    return percent


def parse_rate(value: Any) -> int:
    """`10mbit`, `1gbit`, `500kbit`, `2mbps` (bytes) or a plain number of bits/s → bits/s."""
    if isinstance(value, bool):
        raise ValueError("expected a rate such as 10mbit")
    if isinstance(value, int | float):
        bits = float(value)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]+)?\s*", str(value))
        unit = (match[2] or "bit").lower() if match else None
        if match is None or unit not in _RATE_UNITS:
            raise ValueError(
                f"{value!r} is not a rate such as 10mbit, 500kbit or 1gbit (tc's units)"
            )
        bits = float(match[1]) * _RATE_UNITS[unit]
    if not math.isfinite(bits) or bits < 8000:
        raise ValueError(f"{value!r}: a rate must be at least 8kbit")
    return int(bits)


def _duration(value: Any) -> float | None:
    if value is None:
        return None
    seconds = parse_seconds(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"{value!r} is longer than a week; clear such a fault by hand instead")
    return seconds


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    duration: float | None = Field(default=None, alias="for")
    """Seconds after which the fault undoes itself; None: until cleared."""

    _check_duration = field_validator("duration", mode="before")(lambda v: _duration(v))

    def body(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True) | {
            "kind": self.kind  # type: ignore[attr-defined]
        }


class LinkFault(_Fault):
    """One interface of a node or a namespace, `NAME:ethI` (its I-th interface) or
    `NAME:NETWORK`."""

    kind: Literal["link"] = "link"
    target: str
    down: bool = False
    loss: float | None = None
    """Percent of frames dropped, in each direction the fault covers."""
    rate: int | None = None
    """Bits per second."""
    delay: float | None = None
    jitter: float | None = None
    direction: Literal["both", "in", "out"] = "both"
    """`in`: frames towards the node or namespace; `out`: frames it sends."""

    _check_loss = field_validator("loss", mode="before")(
        lambda v: None if v is None else parse_percent(v)
    )
    _check_rate = field_validator("rate", mode="before")(
        lambda v: None if v is None else parse_rate(v)
    )

    @field_validator("delay", "jitter", mode="before")
    @classmethod
    def _check_delay(cls, value: Any) -> float | None:
        if value is None:
            return None
        seconds = parse_seconds(value)
        if seconds > MAX_DELAY:
            raise ValueError(f"{value!r} is more than {MAX_DELAY:.0f}s")
        return seconds

    @field_validator("target")
    @classmethod
    def _check_target(cls, value: str) -> str:
        name, sep, iface = value.partition(":")
        if not sep or not name or not iface:
            raise ValueError(f"{value!r}: expected NAME:INTERFACE, e.g. worker-1:eth0")
        return value

    def check(self) -> None:
        """What goes together (pydantic checked each value already)."""
        effects = [self.loss, self.rate, self.delay]
        if self.down and any(e is not None for e in effects):
            raise FaultError("down", "a link that is down carries nothing: give it alone")
        if self.jitter is not None and self.delay is None:
            raise FaultError("jitter", "jitter varies a delay: give delay too")
        if not self.down and all(e is None for e in effects):
            raise FaultError("link", "nothing to do: give down, loss, rate or delay")
        if self.jitter is not None and self.delay is not None and self.jitter > self.delay:
            raise FaultError("jitter", "more than the delay it varies")
        if self.delay is not None and self.direction != "in":
            raise FaultError(
                "direction",
                "delay is added to frames towards the node or namespace only: give direction in",
            )


class PartitionFault(_Fault):
    """No frames between any endpoint of `between` and any of `and_`, on every network."""

    kind: Literal["partition"] = "partition"
    between: tuple[str, ...] = Field(min_length=1)
    and_: tuple[str, ...] = Field(alias="and", min_length=1)

    def check(self) -> None:
        both = sorted(set(self.between) & set(self.and_))
        if both:
            raise FaultError("and", f"{', '.join(both)} on both sides of the partition")


class MachineFault(_Fault):
    kind: Literal["machine"] = "machine"
    target: str
    effect: Literal["power-loss", "hang", "slow-disk"]
    volume: str | None = None
    iops: int | None = Field(default=None, gt=0)
    bps: int | None = Field(default=None, gt=0)
    """Bytes per second, for slow-disk."""

    def check(self) -> None:
        disk = self.effect == "slow-disk"
        if disk and self.volume is None:
            raise FaultError("volume", f"{self.effect} needs the volume's name")
        if not disk:
            for name in ("volume", "iops", "bps"):
                if getattr(self, name) is not None:
                    raise FaultError(name, f"only for slow-disk, not {self.effect}")


class BmcFault(_Fault):
    kind: Literal["bmc"] = "bmc"
    target: str
    effect: Literal["unresponsive", "slow", "errors"]
    delay: float | None = None
    """How much later a slow BMC answers."""

    _check_delay = field_validator("delay", mode="before")(
        lambda v: None if v is None else parse_seconds(v)
    )

    def check(self) -> None:
        if self.delay is not None and self.effect != "slow":
            raise FaultError("delay", f"only for a slow BMC, not {self.effect}")
        if self.delay is not None and self.delay > MAX_DELAY:
            raise FaultError("delay", f"more than {MAX_DELAY:.0f}s")


Fault = Annotated[LinkFault | PartitionFault | MachineFault | BmcFault, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[LinkFault | PartitionFault | MachineFault | BmcFault] = TypeAdapter(Fault)


def parse_fault(body: Any) -> LinkFault | PartitionFault | MachineFault | BmcFault:
    """A fault from its JSON body, or FaultError naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise FaultError("fault", "expected a JSON object with a kind")
    if body.get("kind") not in FAULT_KINDS:
        raise FaultError("kind", f"{body.get('kind')!r}: one of {', '.join(FAULT_KINDS)}")
    try:
        fault = _ADAPTER.validate_python(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "fault"
        message = first["msg"].removeprefix("Value error, ")
        raise FaultError(where, message) from None
    fault.check()
    return fault


def named(body: dict[str, Any]) -> tuple[str, ...]:
    """The nodes and namespaces a fault's body names (before it is checked)."""
    if body.get("kind") == "partition":
        return (*(body.get("between") or ()), *(body.get("and") or ()))
    target = str(body.get("target") or "")
    return (target.partition(":")[0],) if target else ()


__all__ = [
    "FAULT_KINDS",
    "BmcFault",
    "Fault",
    "FaultConflict",
    "FaultError",
    "FaultKind",
    "LinkFault",
    "MachineFault",
    "PartitionFault",
    "named",
    "parse_fault",
    "parse_percent",
    "parse_rate",
    "parse_seconds",
]  # fmt: skip
