"""One data center's life: check, build, run, and tear down on every exit path."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from vdc_runtime import fabric, groups, procs, runstate
from vdc_runtime.fabric import leftovers, tunnels
from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.forward import ForwardError, Forwards
from vdc_runtime.holder.client import HolderClient, HolderError
from vdc_runtime.holder.namespaces import HeldNamespaces
from vdc_runtime.launch import HolderLauncher, Launcher, LocalLauncher
from vdc_runtime.ledger import Ledger, RunLock
from vdc_runtime.options import GroupOptions, RunOptions, StartupError
from vdc_runtime.phases import RunPhase
from vdc_runtime.spec import DataCenter

if TYPE_CHECKING:
    from vdc_runtime.bmc.service import BmcManager
    from vdc_runtime.faults import FaultManager, Topology
    from vdc_runtime.fleet import Fleet
    from vdc_runtime.nodes.machine import Machine
    from vdc_runtime.snapshot.manifest import Manifest
    from vdc_runtime.snapshot.store import SnapshotStore

log = logging.getLogger("vdc.datacenter")
_NO_NODE = runstate.NodeRecord()
_NO_APP = runstate.AppRecord()
T = TypeVar("T")
STATE_INTERVAL = 1.0


async def _finish(awaitable: Awaitable[T]) -> T:
    """Await work that must not be abandoned halfway (it creates kernel objects from a
    thread that a cancellation cannot stop); a cancellation waits for it, then propagates."""
    task = asyncio.ensure_future(awaitable)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class DataCenterRun:
    def __init__(
        self, dc: DataCenter, options: RunOptions, *, canonical: dict[str, Any] | None = None
    ) -> None:
        self.spec = dc
        """The whole data center; `dc` is the part this run builds (all of it, unless the
        run builds one group)."""
        self._canonical_whole = canonical
        """`dc.canonical()` when known already (a cached spec's): dumping it builds every
        model's serializer, which is most of a cached spec's reading."""
        self.layout = groups.layout(dc)
        self.dc = dc if options.group is None else groups.part(dc, options.group.name, self.layout)
        self.tunnels: fabric.Tunnels | None = None
        self.peers: dict[str, str] = {}
        """The other groups' tunnel addresses, when this run builds one group."""
        self.options = options
        self.phase = RunPhase.PENDING
        self.failure: str | None = None
        self.failed = asyncio.Event()
        self.table, self.group = fabric.run_identity(str(options.run_dir.resolve()))
        self.plan: fabric.FabricPlan | None = None
        self.ledger: Ledger | None = None
        self.lock = RunLock(options.run_dir)
        self.apps: procs.AppSupervisor | None = None  # exists once the ledger does
        self.started_at: float | None = None
        self.timings: dict[str, float] = {}
        self.fleet: Fleet | None = None  # exists once planned, when the spec has nodes
        self.forwards = Forwards({ns.name for ns in dc.netns}, on_change=self._state_changed)
        self._saved_state: runstate.RunState | None = None
        self._state_keeper: asyncio.Task[None] | None = None
        self._adopting = False
        """A failed adoption leaves what it found: it was not this run's to remove."""
        self.holder = HolderClient(options.holder) if options.holder is not None else None
        self.launcher: Launcher = (
            HolderLauncher(self.holder) if self.holder is not None else LocalLauncher()
        )
        self.held = HeldNamespaces(self.holder) if self.holder is not None else None
        self.stop_requested = asyncio.Event()
        """Set when the run is to end by itself (a snapshot saved with --stop)."""
        self._snapshotting = asyncio.Lock()
        self._faults: FaultManager | None = None
        self.adopted: dict[str, int] | None = None
        """After an adoption: how many machines and apps ran on, and how many had ended
        and were started again."""

    @property
    def machines(self) -> dict[str, Machine]:
        return self.fleet.machines if self.fleet is not None else {}

    @property
    def bmc(self) -> BmcManager | None:
        return self.fleet.bmc if self.fleet is not None else None

    @property
    def accel(self) -> str | None:
        return self.fleet.accel if self.fleet is not None else None

    @property
    def accel_reason(self) -> str | None:
        return self.fleet.accel_reason if self.fleet is not None else None

    def _fatal(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.failed.set()

    # -- start ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Build everything. On failure, whatever was made is removed before raising."""
        if os.geteuid() != 0:
            raise StartupError("vdc run must run as root (it creates bridges and namespaces)")
        self.phase = RunPhase.BUILDING
        self.options.run_dir.mkdir(parents=True, exist_ok=True)
        self.lock.acquire()
        try:
            if self.holder is not None:
                try:
                    await self.holder.wait_ready()
                except HolderError as exc:
                    raise StartupError(f"the holder does not answer: {exc}") from None
            if self.options.adopt:
                await self._adopt()
            else:
                await self._clear_leftovers()
                self.ledger = Ledger(self.options.run_dir)
                self.apps = self._app_supervisor()
                await self._build()
        except BaseException:
            self.phase = RunPhase.FAILED
            await self.teardown()
            raise
        assert self.ledger is not None
        self.phase = RunPhase.RUNNING
        self.started_at = time.time()
        self.save_state()
        self._state_keeper = asyncio.create_task(self._keep_state(), name="run state")

    @property
    def faults(self) -> FaultManager | None:
        """Faults on demand: from the end of start-up until teardown, None before and after.
        Made when first asked for: its models and plans are not the start-up's."""
        if self._faults is None and self.phase == RunPhase.RUNNING:
            from vdc_runtime.faults import FaultManager

            assert self.ledger is not None
            self._faults = FaultManager(
                self._fault_topology,
                self.ledger,
                self.machines,
                self.bmc.faults if self.bmc is not None else None,
            )
        return self._faults

    @faults.setter
    def faults(self, manager: FaultManager | None) -> None:
        self._faults = manager

    def _fault_topology(self) -> Topology:
        from vdc_runtime.faults import topology

        assert self.plan is not None
        return topology(self.plan, self.machines, self.bmc, nsutil.NETNS_DIR)

    # -- what a later run adopts ---------------------------------------------------------

    @functools.cached_property
    def _canonical_spec(self) -> dict[str, Any]:
        """Dumped once: the state is compared every STATE_INTERVAL, the spec never changes."""
        if self._canonical_whole is not None and self.dc is self.spec:
            return self._canonical_whole
        return runstate.canonical(self.dc)

    def _app_supervisor(self) -> procs.AppSupervisor:
        assert self.ledger is not None
        return procs.AppSupervisor(
            self.ledger,
            on_fatal=self._fatal,
            cwd=self.options.workdir,
            launcher=self.launcher,
            on_started=self._state_changed,
        )

    def state(self) -> runstate.RunState:
        apps = self.apps.records() if self.apps is not None else {}
        return runstate.RunState(
            spec=self._canonical_spec,
            group=self.options.group.name if self.options.group is not None else None,
            nodes={name: m.record() for name, m in self.machines.items()},
            apps={
                label: runstate.AppRecord(runstate.ProcessRef(pid, start), restarts)
                for label, (pid, start, restarts) in apps.items()
            },
            forwards=tuple(
                runstate.ForwardRecord(f.local_port, f.netns, f.remote_host, f.remote_port, f.bind)
                for f in self.forwards.items.values()
            ),
        )

    def save_state(self) -> None:
        self._saved_state = self.state()
        runstate.save(self.options.run_dir, self._saved_state)

    def _state_changed(self) -> None:
        """A machine's boots, readiness or announced BMC address changed, an app started
        again, or a forward was added or deleted: saved at once, before the API, the BMCs
        or the agent's report can show it, so that whatever a run was seen to have, a run
        adopting it after a kill has too: its BMCs served again above all (a guest never
        announces its address twice), and an app's new process, which an adopter knowing
        only the old pid would start a second time. In the event loop, not a thread:
        neco's lab writes 23 kB in about 3 ms, and one writer at a time keeps the file's
        replacement whole."""
        if self.phase == RunPhase.RUNNING and self.state() != self._saved_state:
            self.save_state()

    async def _keep_state(self) -> None:
        """The state on disk follows the rest of the run within a second (a machine's
        firmware for its next boot): a later run adopts what runs when this one is
        killed."""
        while True:
            await asyncio.sleep(STATE_INTERVAL)
            if self.phase != RunPhase.RUNNING:
                continue
            if self.state() != self._saved_state:
                self.save_state()
            if self.held is not None and self.plan is not None:
                await self.held.check(ns.name for ns in self.plan.namespaces)

    async def _adopt(self) -> None:
        """Take over the data center a killed run with this run dir left running, built
        from this same spec: its fabric as it is, its apps and machines where they run
        (those that ended meanwhile as their restart policy says), its BMCs and the API
        served again. StartupError, touching nothing, when there is nothing to adopt or
        the spec changed."""
        run_dir = self.options.run_dir
        try:
            state = runstate.load(run_dir)
        except ValueError as exc:
            raise StartupError(f"cannot adopt: {exc}") from None
        entries = Ledger.load(run_dir)
        if state is None or not entries:
            raise StartupError(
                f"nothing to adopt in {run_dir}: no earlier run left a data center running"
                " there (run without --adopt; --force clears what a run left)"
            )
        found = runstate.differences(state.spec, self._canonical_spec)
        if found:
            raise StartupError(
                f"cannot adopt the data center running from {run_dir}: it was built from"
                f" another spec ({runstate.describe(found)}); run with --force to build this"
                " one instead"
            )
        group = self.options.group.name if self.options.group is not None else None
        if state.group != group:
            raise StartupError(
                f"cannot adopt: the data center running from {run_dir} is group"
                f" {state.group or '(all)'}, not {group or '(all)'}"
            )
        self._adopting = True
        # Faults do not outlive the run that made them (their timers and undo steps were
        # its); their rules would, so they go before anything else is taken over, and out
        # of the ledger (this run's faults record their table again when they make it).
        faults_tables = [
            e for e in entries if e["kind"] == "nft-table" and e.get("family") == "bridge"
        ]
        await fabric.teardown(faults_tables)
        entries = [e for e in entries if e not in faults_tables]
        fault_leftovers: list[dict[str, Any]] = []
        if any(e["kind"].startswith("fault-") for e in entries):
            from vdc_runtime.faults import leftovers as fault_records

            fault_leftovers = fault_records.pending(entries)
            entries = fault_records.without_records(entries)
        self.ledger = Ledger(run_dir, entries)
        self.apps = self._app_supervisor()
        if self.held is not None:
            try:
                await self.held.restore()
            except (HolderError, OSError) as exc:
                raise StartupError(f"cannot adopt: the holder's namespaces: {exc}") from None
        present = nsutil.list_netns()
        missing = [ns.name for ns in self.dc.netns if ns.name not in present]
        if missing:
            # Gone with their holder, or removed by hand: what ran in them is gone too.
            raise StartupError(
                f"cannot adopt the data center running from {run_dir}: its network"
                f" namespaces {', '.join(missing)} are gone (run with --force to build it again)"
            )
        if fault_leftovers:
            # The kernel's part first: the namespaces the qdiscs and links sit in are back.
            await fault_records.undo_in_kernel(fault_leftovers)
        await self._prepare()
        for ns in self.dc.netns:
            for app in ns.apps:
                app_state = self._app_state(ns.name, app)
                record = state.apps.get(app_state.label)
                if record is not None and record.process is not None:
                    ref = record.process
                    await self.apps.adopt(app_state, ref.pid, ref.start, record.restarts)
                else:
                    await self.apps.start(app_state)
        if self.fleet is not None:
            await self.fleet.adopt(self.ledger, state.nodes)
        if fault_leftovers:
            await fault_records.undo_in_machines(fault_leftovers, self.machines)
            # The file still holds their records: a later adoption must not undo them again.
            for key in dict.fromkeys(e["fault"] for e in fault_leftovers):
                self.ledger.record(fault_records.CLEARED, fault=key)
            log.info("a killed run's faults undone: %d changes", len(fault_leftovers))
        for fwd in state.forwards:
            try:
                await self.forwards.add(
                    fwd.local_port, fwd.netns, fwd.remote_host, fwd.remote_port, fwd.bind
                )
            except ForwardError as exc:
                log.warning("forward %d not served again: %s", fwd.local_port, exc)
        restarted_nodes = sum(
            1
            for m in self.machines.values()
            if m.restarts > state.nodes.get(m.name, _NO_NODE).restarts
        )
        restarted_apps = sum(
            1 for a in self.apps.apps if a.restarts > state.apps.get(a.label, _NO_APP).restarts
        )
        self.adopted = {
            "machines": len(self.machines) - restarted_nodes,
            "machines_restarted": restarted_nodes,
            "apps": len(self.apps.apps) - restarted_apps,
            "apps_restarted": restarted_apps,
            "forwards": len(self.forwards.items),
        }
        log.info(
            "adopted the data center running from %s: %d machines (%d started again),"
            " %d apps (%d started again), %d forwards",
            run_dir, len(self.machines), restarted_nodes, len(self.apps.apps), restarted_apps,
            len(self.forwards.items),
        )  # fmt: skip

    async def _prepare(self) -> None:
        """Everything up to the fabric's plan: the machines' files and volumes, the MTU,
        the tunnels (what building makes, and what adopting takes over)."""
        t0 = time.perf_counter()
        if self.dc.nodes:
            # Only a spec with machines loads their machinery.
            from vdc_runtime.fleet import Fleet

            # Reads password files: a bad one must fail before anything exists.
            self.fleet = Fleet(
                self.dc,
                self.options,
                launcher=self.launcher,
                publish_order=[node.name for node in self.spec.nodes],
                nft_table=self.table,
                on_fatal=self._fatal,
                on_record=self._state_changed,
                accepting_bmcs=lambda: self.phase in (RunPhase.BUILDING, RunPhase.RUNNING),
            )
        mtu = await asyncio.to_thread(fabric.detect_mtu)
        if self.options.group is not None:
            self.tunnels, mtu = await asyncio.to_thread(self._plan_tunnels, self.options.group, mtu)
            self.peers = dict(self.options.group.peers)
        if self.fleet is not None:
            # Downloads and volumes first: a bad image URL must fail before any kernel
            # object exists.
            await self.fleet.plan(mtu)
            self.timings["volumes"] = time.perf_counter() - t0
        taps = self.fleet.taps() if self.fleet is not None else ()
        self.plan = fabric.plan_fabric(
            self.dc, mtu=mtu, group=self.group, table=self.table, taps=taps, tunnels=self.tunnels
        )

    def _app_state(self, netns: str, app: Any) -> procs.AppState:
        return procs.AppState(
            netns=netns,
            name=app.name,
            command=list(app.command),
            restart=app.restart,
            log_path=self.options.log_dir / "apps" / f"{netns}.{app.name}.log",
        )

    async def _build(self) -> None:
        assert self.ledger is not None and self.apps is not None
        t0 = time.perf_counter()
        await self._prepare()
        assert self.plan is not None
        try:
            await _finish(fabric.build(self.plan, self.ledger))
        except (fabric.FabricError, OSError) as exc:
            raise StartupError(str(exc)) from exc
        if self.held is not None:
            try:
                await self.held.hold(ns.name for ns in self.plan.namespaces)
            except (HolderError, OSError) as exc:
                raise StartupError(f"cannot hand the namespaces to the holder: {exc}") from exc
        self.timings["fabric"] = time.perf_counter() - t0
        log.info(
            "fabric ready in %.2f s: %d bridges, %d namespaces, %d veths (mtu %s)",
            self.timings["fabric"],
            len(self.plan.bridges),
            len(self.plan.namespaces),
            sum(len(ns.veths) for ns in self.plan.namespaces),
            self.plan.mtu or "kernel default",
        )
        t1 = time.perf_counter()
        # Namespaces are independent: their scripts run concurrently, each one's in order.
        results = await asyncio.gather(
            *(
                procs.run_init_scripts(ns.name, ns.init_scripts, self.ledger, self.options.workdir)
                for ns in self.dc.netns
                if ns.init_scripts
            ),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, procs.InitScriptError | OSError):
                raise error
        if errors:
            raise StartupError("; ".join(str(e) for e in errors))
        self.timings["init-scripts"] = time.perf_counter() - t1
        for ns in self.dc.netns:
            for app in ns.apps:
                try:
                    await self.apps.start(self._app_state(ns.name, app))
                except RuntimeError as exc:
                    raise StartupError(str(exc)) from exc
        if self.fleet is not None:
            t2 = time.perf_counter()
            if self.options.restore is not None:
                await self._restore_machines(self.options.restore)
            else:
                await self.fleet.start(self.ledger)
            self.timings["machines"] = time.perf_counter() - t2

    async def _restore_machines(self, name: str) -> None:
        """The machines from snapshot NAME, once it is found whole and fit for the spec."""
        from vdc_runtime import capture
        from vdc_runtime.nodes.errors import NodeError
        from vdc_runtime.snapshot.store import SnapshotStore

        assert self.fleet is not None and self.ledger is not None
        theirs = self.options.restore_dir
        store = self.snapshots if theirs is None else SnapshotStore(theirs)
        try:
            manifest = await asyncio.to_thread(
                capture.restorable, store, name, self.dc, clean=theirs is None
            )
        except capture.CaptureError as exc:
            raise StartupError(str(exc)) from None
        try:
            await self.fleet.restore(self.ledger, store, manifest)
        except (capture.CaptureError, NodeError, OSError) as exc:
            raise StartupError(f"restoring snapshot {name}: {exc}") from exc

    # -- snapshots -------------------------------------------------------------------------

    # Imported where used: a run that takes no snapshot never loads them (zstandard, the
    # machines' modules for a spec without machines).

    @property
    def snapshots(self) -> SnapshotStore:
        from vdc_runtime.snapshot.store import SnapshotStore

        return SnapshotStore(self.options.snapshots)

    async def snapshot(self, name: str, stop: bool = False) -> Manifest:
        """Save the running data center's machines as snapshot NAME (`capture.save`); with
        `stop`, the machines stay paused and the run ends once it is saved."""
        from vdc_runtime import capture

        if self.phase != RunPhase.RUNNING:
            raise capture.CaptureError(f"the data center is {self.phase}, not running")
        if self._snapshotting.locked():
            raise capture.CaptureError("a snapshot is being saved already")
        store = self.snapshots
        async with self._snapshotting:
            await asyncio.to_thread(store.clean_partials)
            manifest = await capture.save(
                store, name, self.machines, self._canonical_spec,
                self.options.group.name if self.options.group is not None else None,
                keep_paused=stop,
                boot_overrides=self.fleet.boot_overrides() if self.fleet is not None else None,
            )  # fmt: skip
        if stop:
            self.stop_requested.set()
        return manifest

    def _plan_tunnels(
        self, options: GroupOptions, mtu: int | None
    ) -> tuple[fabric.Tunnels, int | None]:
        try:
            plan, lowered, under = tunnels.plan_group(
                self.layout, options.name, options.peers, options.local, options.port, mtu
            )
        except tunnels.TunnelError as exc:
            raise StartupError(str(exc)) from exc
        if lowered != mtu:
            log.info(
                "group %s: MTU %s for the whole data center: %s's %d less VXLAN's overhead",
                options.name, lowered, under.device, under.mtu,
            )  # fmt: skip
        for tunnel in plan.tunnels:
            log.info(
                "group %s: network %s stretched over VXLAN %d from %s to %s",
                options.name, tunnel.bridge, tunnel.vni, plan.local,
                ", ".join(tunnel.peers) or "no peer yet",
            )  # fmt: skip
        return plan, lowered

    async def set_peers(self, peers: Mapping[str, str]) -> None:
        """Tunnel to these groups' new addresses (a peer pod replaced, or known at last):
        each stretched network floods to the new address instead of the old one, and the
        machines of this group notice nothing. ValueError says what is wrong with `peers`."""
        if self.options.group is None or self.tunnels is None or self.plan is None:
            raise ValueError("this run builds the whole data center: it has no peers")
        name = self.options.group.name
        merged = {**self.peers, **peers}
        problems = groups.run_problems(self.layout, name, merged, every_peer=False)
        if problems:
            raise ValueError("; ".join(problems))
        plan = fabric.plan_tunnels(self.layout, name, self.tunnels.local, merged, self.tunnels.port)
        for tunnel in plan.tunnels:
            await asyncio.to_thread(tunnels.set_peers, tunnel, tunnel.peers)
        self.peers, self.tunnels = merged, plan
        self.plan = dataclasses.replace(self.plan, tunnels=plan)
        log.info("group %s: peers now %s", name,
                 ", ".join(f"{g}={a}" for g, a in sorted(merged.items())))  # fmt: skip

    async def _let_go(self) -> list[str]:
        """An adoption that failed halfway: this run's connections and servers close,
        what the earlier run left keeps running and stays in its ledger, for another
        adoption or for --force."""
        await self.forwards.close()
        if self.fleet is not None:
            await self.fleet.bmc.close()
            for machine in self.fleet.machines.values():
                await machine.release()
        if self.apps is not None:
            await self.apps.release()
        if self.ledger is not None:
            self.ledger.close(remove=False)
            self.ledger = None
        self.lock.release()
        return []

    # -- leftovers -------------------------------------------------------------------------

    async def _clear_leftovers(self) -> None:
        entries = Ledger.load(self.options.run_dir)
        if self.held is not None and entries and self.options.force:
            # Mounted again so that they are removed as any other leftover.
            with contextlib.suppress(HolderError, OSError):
                await self.held.restore()
        conflicts = await leftovers.find(self.dc, self.group, self.table)
        if not entries and not conflicts:
            return
        if not self.options.force:
            parts = []
            if entries:
                parts.append(
                    f"an earlier run with run dir {self.options.run_dir} did not clean up "
                    f"({len(entries)} objects in its ledger)"
                )
            if conflicts:
                parts.append("already exist: " + ", ".join(conflicts[:10]))
            raise StartupError("; ".join(parts) + "; run again with --force to remove them")
        log.warning("--force: removing what an earlier run left behind")
        problems = await self._undo(entries)
        problems += await leftovers.remove(self.dc, self.group, self.table)
        problems += await self._release_namespaces()
        for problem in problems:
            log.warning("--force: %s", problem)
        (self.options.run_dir / "vdc-ledger.jsonl").unlink(missing_ok=True)

    async def _release_namespaces(self) -> list[str]:
        return await self.held.release() if self.held is not None else []

    @staticmethod
    async def _undo(entries: list[dict[str, Any]]) -> list[str]:
        problems = await procs.reap_recorded(entries)
        problems += await fabric.teardown(entries)
        return problems

    # -- stop ------------------------------------------------------------------------------

    async def teardown(self) -> list[str]:
        """Remove everything this run created. Safe to call more than once."""
        if self._state_keeper is not None:
            self._state_keeper.cancel()
            await asyncio.gather(self._state_keeper, return_exceptions=True)
            self._state_keeper = None
        if self.phase == RunPhase.FAILED and self._adopting:
            return await self._let_go()
        if self.phase != RunPhase.FAILED:
            self.phase = RunPhase.STOPPING
        await self.forwards.close()
        if self._faults is not None:
            # Undone while the machines and links they sit on still exist.
            await self._faults.close()
        if self.fleet is not None:
            await self.fleet.stop()
        if self.apps is not None:
            await self.apps.stop()
        problems: list[str] = []
        if self.ledger is not None:
            problems = await self._undo(self.ledger.entries)
            problems += await self._release_namespaces()
            self.ledger.close(remove=not problems)
            self.ledger = None
            runstate.remove(self.options.run_dir)
        self.lock.release()
        for problem in problems:
            log.warning("teardown: %s", problem)
        if self.phase != RunPhase.FAILED:
            self.phase = RunPhase.STOPPED
        return problems
