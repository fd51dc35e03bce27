"""A BMC that answers late or fails (faults): what the IPMI and Redfish servers ask before
they carry out a request. A BMC that does not answer at all needs nothing here: its
packets are dropped on the way (`faults.plan.bmc_drop`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from vdc_runtime.bmc.redfish.messages import RedfishError

DEFAULT_DELAY = 5.0
RETRY_AFTER = 5


@dataclass(frozen=True)
class Misbehaviour:
    effect: Literal["slow", "errors"]
    delay: float


class BmcFaults:
    """Each node's BMC's misbehaviour, set and cleared by the run's fault manager."""

    def __init__(self) -> None:
        self._by_node: dict[str, Misbehaviour] = {}

    def set(self, node: str, effect: str, delay: float | None) -> None:
        assert effect in ("slow", "errors")
        self._by_node[node] = Misbehaviour(effect, delay or DEFAULT_DELAY)  # type: ignore[arg-type]

    def clear(self, node: str) -> None:
        self._by_node.pop(node, None)

    async def _fails(self, node: str) -> bool:
        """Whether the node's BMC fails this request, once a slow one has taken its time."""
        fault = self._by_node.get(node)
        if fault is not None and fault.effect == "slow":
            await asyncio.sleep(fault.delay)
        return fault is not None and fault.effect == "errors"

    async def ipmi(self, node: str) -> int | None:
        """The completion code to answer a command with instead of carrying it out (None:
        carry it out), once any delay has passed. Node Busy (0xC0) is what a real BMC
        answers when it cannot take the command."""
        # Imported here as the servers themselves are (`BmcManager.start`).
        from vdc_runtime.bmc.ipmi.codec import NODE_BUSY

        return NODE_BUSY if await self._fails(node) else None

    async def redfish(self, node: str) -> RedfishError | None:
        """The error to answer a request with (503 with Retry-After), after any delay."""
        from vdc_runtime.bmc.redfish.messages import RedfishError, message

        if not await self._fails(node):
            return None
        return RedfishError(
            503,
            "The service is temporarily unavailable.",
            [message("GeneralError")],
            {"Retry-After": str(RETRY_AFTER)},
        )


__all__ = ["BmcFaults", "Misbehaviour"]
