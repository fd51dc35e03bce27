"""The run's active faults: applied, listed, cleared by hand or when their time is up, and
all cleared at teardown.

A fault is checked in full (fields, targets, what it would clash with, what the kernel
lacks) before anything changes; its steps are then applied in order, and a step that
fails undoes the ones before it, so a fault is applied whole or not at all. The only
object a fault creates that outlives the links it sits on is the run's bridge-family
nftables table, written to the ledger before it exists: teardown removes it as it removes
the inet table, also after a SIGKILL.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from vdc_runtime.fabric import nft
from vdc_runtime.faults import kernel, leftovers
from vdc_runtime.faults import plan as fp
from vdc_runtime.ledger import Ledger
from vdc_runtime.spec.faults import (
    BmcFault,
    FaultConflict,
    FaultError,
    LinkFault,
    MachineFault,
    PartitionFault,
    parse_fault,
)

if TYPE_CHECKING:
    # Loaded by runs with machines only (QMP's client comes with it).
    from vdc_runtime.nodes.machine import Machine

log = logging.getLogger("vdc.faults")

AnyFault = LinkFault | PartitionFault | MachineFault | BmcFault


class Step(NamedTuple):
    apply: Callable[[], Awaitable[Any]]
    undo: Callable[[], Awaitable[Any]]
    leftover: dict[str, Any] | None = None
    """The undo as data, for a run that adopts the machines after this one is killed
    (`leftovers`); None where nothing outlives the run (the BMC's own hooks, a QEMU that
    is gone) or the run's bridge table holds it (dropped whole on adoption)."""


STEP_ERRORS = (nft.NftError, OSError, kernel.CommandError)
"""What a failed step raises: a machine's step turns its NodeError into CommandError
(`_on_machine`), so that a run without machines never loads their code."""


class FaultApplyError(RuntimeError):
    """The kernel or QEMU refused a step; whatever the fault had changed is undone."""


@dataclass
class ActiveFault:
    id: int
    fault: AnyFault
    created_at: float
    claims: frozenset[str]
    undo: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)
    key: str = ""
    """Names the fault in the ledger (ids start again at 1 in every run)."""
    recorded: bool = False
    """Something it changed outlives the run: its clearing goes to the ledger too."""
    timer: asyncio.Task[None] | None = None

    @property
    def expires_at(self) -> float | None:
        return self.created_at + self.fault.duration if self.fault.duration else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.fault.body(),
            "created_at": round(self.created_at, 3),
            "expires_at": round(self.expires_at, 3) if self.expires_at else None,
            "summary": describe(self.fault),
        }


def describe(fault: AnyFault) -> str:
    """One line for logs, the CLI's list and events."""
    if isinstance(fault, LinkFault):
        parts = ["down"] if fault.down else []
        if fault.loss is not None:
            parts.append(f"loss {fault.loss:g}%")
        if fault.rate is not None:
            parts.append(f"rate {_rate(fault.rate)}")
        if fault.delay is not None:
            jitter = f" ± {fault.jitter * 1000:g}ms" if fault.jitter else ""
            parts.append(f"delay {fault.delay * 1000:g}ms{jitter}")
        where = "" if fault.direction == "both" or fault.down else f" ({fault.direction})"
        text = f"link {fault.target} {', '.join(parts)}{where}"
    elif isinstance(fault, PartitionFault):
        text = f"partition {','.join(fault.between)} | {','.join(fault.and_)}"
    elif isinstance(fault, MachineFault):
        disk = f" {fault.volume}" if fault.volume else ""
        text = f"machine {fault.target} {fault.effect}{disk}"
    else:
        slow = f" {fault.delay:g}s" if fault.delay else ""
        text = f"bmc {fault.target} {fault.effect}{slow}"
    return text + (f" for {fault.duration:g}s" if fault.duration else "")


def _rate(bits: int) -> str:
    for unit, size in (("gbit", 10**9), ("mbit", 10**6), ("kbit", 10**3)):
        if bits >= size and bits % size == 0:
            return f"{bits // size}{unit}"
    return f"{bits}bit"


class BmcHooks:
    """What the BMC servers consult for a slow or failing BMC (`bmc.faults.BmcFaults`)."""

    def set(self, node: str, effect: str, delay: float | None) -> None: ...

    def clear(self, node: str) -> None: ...


class FaultManager:
    def __init__(
        self,
        topology: Callable[[], fp.Topology],
        ledger: Ledger,
        machines: Mapping[str, Machine],
        bmc_hooks: BmcHooks | None = None,
    ) -> None:
        self._topology = topology
        self._ledger = ledger
        self._machines = machines
        self._bmc_hooks = bmc_hooks
        self.active: dict[int, ActiveFault] = {}
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._table_made = False
        self._run_key = uuid.uuid4().hex[:8]
        self._closing = False
        """Teardown: a machine that lost its power is not booted only to be stopped."""
        self.cleared = 0
        """Faults cleared so far, by hand or by their time (metrics)."""

    def list(self) -> list[dict[str, Any]]:
        return [f.as_json() for f in self.active.values()]

    def count(self, kind: str) -> int:
        return sum(1 for f in self.active.values() if f.fault.kind == kind)

    # -- add -------------------------------------------------------------------------------

    async def add(self, body: Any) -> ActiveFault:
        """Apply the fault `body` (JSON): FaultError (bad input, 400), FaultConflict (409)
        or FaultApplyError (500), with nothing changed."""
        fault = parse_fault(body)
        async with self._lock:
            fault_id = next(self._ids)
            topo = self._topology()
            claims, steps = await self._plan(topo, fault_id, fault)
            for other in self.active.values():
                if claims & other.claims:
                    raise FaultConflict(
                        "target",
                        f"clashes with fault {other.id} ({describe(other.fault)}); clear it first",
                    )
            key = f"{self._run_key}-{fault_id}"
            active = ActiveFault(fault_id, fault, time.time(), claims, key=key)
            for step in steps:
                try:
                    await step.apply()
                except FaultError:
                    await self._undo(active)
                    raise
                except STEP_ERRORS as exc:
                    await self._undo(active)
                    raise FaultApplyError(f"fault not applied ({describe(fault)}): {exc}") from exc
                active.undo.append(step.undo)
                if step.leftover is not None:
                    self._ledger.record(leftovers.UNDO, fault=key, **step.leftover)
                    active.recorded = True
            self.active[fault_id] = active
            if fault.duration is not None:
                active.timer = asyncio.create_task(
                    self._expire(fault_id, fault.duration), name=f"fault {fault_id} expiry"
                )
            if isinstance(fault, MachineFault) and fault.effect == "power-loss":
                # Powered on again (BMC, API), the machine has its power back: the fault is over.
                machine = self._machines[fault.target]
                watch = asyncio.create_task(self._while_unpowered(fault_id, machine))
                active.undo.insert(0, lambda: _cancel(watch))
        log.info("fault %d applied: %s", fault_id, describe(fault))
        return active

    async def _plan(self, topo: fp.Topology, fault_id: int, fault: AnyFault) -> tuple[
        frozenset[str], list[Step]
    ]:  # fmt: skip
        if isinstance(fault, LinkFault):
            return await self._plan_link(topo, fault_id, fault)
        if isinstance(fault, PartitionFault):
            rules = fp.partition_rules(topo, fault)
            return frozenset(), [self._nft_step(topo, fault_id, rules)]
        if isinstance(fault, MachineFault):
            return self._plan_machine(topo, fault)
        return self._plan_bmc(topo, fault_id, fault)

    async def _plan_link(
        self, topo: fp.Topology, fault_id: int, fault: LinkFault
    ) -> tuple[frozenset[str], list[Step]]:
        port = fp.find_port(topo, fault.target)
        if fault.delay is not None:
            missing = await kernel.netem_missing()
            if missing is not None:
                raise FaultError("delay", missing)
        steps: list[Step] = []
        claims: set[str] = set()
        rules = fp.link_rules(port, fault)
        if rules:
            steps.append(self._nft_step(topo, fault_id, rules))
        for command in fp.link_commands(topo, port, fault):
            claims.add(f"{command.apply[0]}:{' '.join(command.undo)}")
            steps.append(
                Step(
                    lambda c=command: kernel.run(c.apply),
                    lambda c=command: kernel.run(c.undo),
                    {"argv": list(command.undo)},
                )
            )
        if fault.down:
            claims.add(f"down:{port.host_link}")
            if port.netns is None:
                machine = self._machines[port.endpoint]
                up = fp.link_qmp(port, up=True)
                steps.append(
                    Step(
                        _on_machine(machine.control.execute, *fp.link_qmp(port, up=False)),
                        _on_machine(machine.control.execute, *up),
                        _qmp_leftover(machine.name, *up),
                    )
                )
        return frozenset(claims), steps

    def _plan_machine(
        self, topo: fp.Topology, fault: MachineFault
    ) -> tuple[frozenset[str], list[Step]]:
        node = fp.node_of(topo, fault.target)
        machine = self._machines[node]
        if fault.effect == "power-loss":
            if machine.power_lost:
                raise FaultConflict("target", f"node {node} has no power already")
            # No leftover: the machine's QEMU is gone; an adopting run finds it off.
            return frozenset({f"power:{node}"}), [
                Step(_on_machine(machine.lose_power), _on_machine(self._power_back, machine))
            ]
        if fault.effect == "hang":
            steps = [
                Step(
                    _on_machine(machine.control.hang),
                    _on_machine(machine.control.unhang),
                    _qmp_leftover(node, "cont"),
                )
            ]
            return frozenset({f"power:{node}"}), steps
        index = fp.disk_index(topo, fault)
        from vdc_runtime.nodes.qemu_args import drive_id

        device = drive_id(index)
        iops = fault.iops if fault.iops or fault.bps else fp.DEFAULT_SLOW_IOPS
        slow = fp.throttle_qmp(device, iops, fault.bps)
        lifted = fp.throttle_qmp(device, None, None)
        return frozenset({f"disk:{node}/{fault.volume}"}), [
            Step(
                _on_machine(machine.control.execute, "block_set_io_throttle", slow),
                _on_machine(machine.control.execute, "block_set_io_throttle", lifted),
                _qmp_leftover(node, "block_set_io_throttle", lifted),
            )
        ]

    def _plan_bmc(
        self, topo: fp.Topology, fault_id: int, fault: BmcFault
    ) -> tuple[frozenset[str], list[Step]]:
        address = fp.bmc_address(topo, fault)
        claims = frozenset({f"bmc:{fault.target}"})
        if fault.effect == "unresponsive":
            undrop = fp.bmc_undrop(topo, fault_id)
            return claims, [
                Step(
                    lambda: nft.apply(fp.bmc_drop(topo, fault_id, address)),
                    lambda: nft.apply(undrop),
                    # In the run's inet table, which an adopting run keeps.
                    {"nft": undrop},
                )
            ]
        hooks = self._bmc_hooks
        if hooks is None:
            raise FaultError("target", f"node {fault.target} has no BMC")

        async def slow() -> None:
            hooks.set(fault.target, fault.effect, fault.delay)

        async def answer() -> None:
            hooks.clear(fault.target)

        return claims, [Step(slow, answer)]

    def _nft_step(self, topo: fp.Topology, fault_id: int, rules: dict[str, list[str]]) -> Step:
        async def apply() -> None:
            if not self._table_made:
                # Recorded before it exists: a run killed right after still removes it.
                self._ledger.record("nft-table", name=topo.table, family="bridge")
                self._table_made = True
            await nft.apply(fp.nft_apply(topo, fault_id, rules))

        async def undo() -> None:
            await nft.apply(fp.delete_chains(topo.table, fault_id, list(rules)))

        return Step(apply, undo)

    # -- clear -----------------------------------------------------------------------------

    async def clear(self, fault_id: int, why: str = "cleared") -> bool:
        async with self._lock:
            active = self.active.pop(fault_id, None)
            if active is None:
                return False
            if active.timer is not None and active.timer is not asyncio.current_task():
                active.timer.cancel()
            problems = await self._undo(active)
            self._record_cleared(active)
        self.cleared += 1
        log.info("fault %d %s: %s", fault_id, why, describe(active.fault))
        for problem in problems:
            log.warning("fault %d: undoing: %s", fault_id, problem)
        return True

    async def clear_all(self, why: str = "cleared") -> list[int]:
        ids = list(self.active)
        for fault_id in ids:
            await self.clear(fault_id, why)
        return ids

    def _record_cleared(self, active: ActiveFault) -> None:
        # Even where an undo step failed: an adopting run would fail at it the same way.
        if active.recorded:
            self._ledger.record(leftovers.CLEARED, fault=active.key)

    async def _undo(self, active: ActiveFault) -> list[str]:
        problems = []
        for undo in reversed(active.undo):
            try:
                await undo()
            except (*STEP_ERRORS, FaultError) as exc:
                problems.append(str(exc))
        active.undo.clear()
        return problems

    async def _expire(self, fault_id: int, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.clear(fault_id, "expired")

    async def _while_unpowered(self, fault_id: int, machine: Machine) -> None:
        await machine.wait_power_back()
        # Not through `clear`'s undo: the machine has its power already.
        async with self._lock:
            active = self.active.pop(fault_id, None)
        if active is not None:
            if active.timer is not None:
                active.timer.cancel()
            self._record_cleared(active)
            self.cleared += 1
            log.info("fault %d over: node %s powered on", fault_id, machine.name)

    async def _power_back(self, machine: Machine) -> None:
        """Clearing a power loss gives the power back: the machine boots, as a server set
        to power on when its power returns."""
        if machine.power_lost and not self._closing:
            await machine.control.power_on()

    async def close(self) -> None:
        """Teardown: every fault undone while what it sits on still exists."""
        self._closing = True
        await self.clear_all("cleared at teardown")


def _qmp_leftover(node: str, command: str, arguments: Any = None) -> dict[str, Any]:
    return {"node": node, "qmp": command, **({"arguments": arguments} if arguments else {})}


def _on_machine(action: Callable[..., Awaitable[Any]], *args: Any) -> Callable[[], Awaitable[Any]]:
    """A step on a machine: a PowerError (the machine is off, or has no power) is a
    clash with its state (409), any other NodeError (QMP failed) a CommandError."""
    from vdc_runtime.nodes.errors import NodeError, PowerError

    async def step() -> Any:
        try:
            return await action(*args)
        except PowerError as exc:
            raise FaultConflict("target", str(exc)) from exc
        except NodeError as exc:
            raise kernel.CommandError(str(exc)) from exc

    return step


async def _cancel(task: asyncio.Task[None]) -> None:
    if task is not asyncio.current_task():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


__all__ = ["ActiveFault", "BmcHooks", "FaultApplyError", "FaultManager", "describe"]
