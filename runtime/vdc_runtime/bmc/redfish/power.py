"""What each Reset does to the machine, through its `BmcTarget` only.

Requests that do not fit the power state answer 409, as Placemat's did and with its
"already powered ON/OFF" wording where it had one: the target raises PowerStateError, or
reports that there was nothing to do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from vdc_runtime.bmc.redfish.messages import RedfishError, message
from vdc_runtime.bmc.target import BmcTarget, TargetError

log = logging.getLogger("vdc.bmc.redfish")

GRACEFUL_RESTART_TIMEOUT = 300.0
"""How long GracefulRestart waits for the guest to power off before it gives up."""
POLL_INTERVAL = 0.5

Spawn = Callable[[Coroutine[Any, Any, None]], None]


def already(node: str, state: str) -> RedfishError:
    key = "ChassisPowerStateOffRequired" if state == "ON" else "ChassisPowerStateOnRequired"
    return RedfishError(409, f"Server is already powered {state}.", [message(key, node)])


async def reset_system(
    target: BmcTarget, reset_type: str, spawn: Spawn, graceful_timeout: float
) -> None:
    """Carry out ComputerSystem.Reset; the caller has checked `reset_type` is advertised."""
    node = target.facts.name
    if reset_type in ("On", "ForceOn"):
        if not await target.power_on():
            raise already(node, "ON")
    elif reset_type == "ForceOff":
        if not await target.power_off():
            raise already(node, "OFF")
    elif reset_type == "GracefulShutdown":
        await target.graceful_shutdown()
    elif reset_type == "GracefulRestart":
        # Raises PowerStateError (409) when off, before anything is started in the background.
        await target.graceful_shutdown()
        spawn(_on_when_off(target, graceful_timeout))
    elif reset_type == "ForceRestart":
        await target.reset()
    elif reset_type == "PowerCycle":
        await target.power_cycle()
    elif reset_type == "Nmi":
        await target.nmi()
    elif reset_type == "PushPowerButton":
        state = await target.power_state()
        if state == "Off":
            await target.power_on()
        elif state == "On":
            await target.graceful_shutdown()
        else:
            raise TargetError(f"node {node}: its power state cannot be read")
    else:  # pragma: no cover - the advertised list and this function move together
        raise AssertionError(reset_type)


async def reset_chassis(target: BmcTarget, reset_type: str) -> None:
    node = target.facts.name
    if reset_type == "On":
        if not await target.power_on():
            raise already(node, "ON")
    elif reset_type == "ForceOff":
        if not await target.power_off():
            raise already(node, "OFF")
    else:  # pragma: no cover
        raise AssertionError(reset_type)


async def _on_when_off(target: BmcTarget, bound: float) -> None:
    """The second half of GracefulRestart: power on once the guest has shut itself down."""
    node = target.facts.name
    deadline = time.monotonic() + bound
    while await target.power_state() != "Off":
        if time.monotonic() > deadline:
            # The guest's OS refused the button, as a real one may: a server BMC does not
            # pull the plug on its behalf, and neither do we.
            log.warning(
                "node %s: GracefulRestart: still on after %.0f s; not powering it on again",
                node,
                bound,
            )
            return
        await asyncio.sleep(POLL_INTERVAL)
    try:
        await target.power_on()
    except Exception as exc:  # a background task has nobody else to tell
        log.error("node %s: GracefulRestart: power on failed: %s", node, exc)
        return
    log.info("node %s: GracefulRestart: shut down, powered on again", node)


__all__ = ["GRACEFUL_RESTART_TIMEOUT", "already", "reset_chassis", "reset_system"]
