"""One data center's life: check, build, run, and tear down on every exit path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from vdc_runtime import fabric, procs
from vdc_runtime.bmc.service import BmcError, BmcManager
from vdc_runtime.fabric import leftovers
from vdc_runtime.fabric.plan import TapPlan
from vdc_runtime.forward import Forwards
from vdc_runtime.ledger import Ledger, RunLock
from vdc_runtime.nodes.host import find_ovmf, probe_accel, vhost_available
from vdc_runtime.nodes.layout import DriveLayout, HostFacts, NodeLayout, plan_node
from vdc_runtime.nodes.machine import Machine, NodeError
from vdc_runtime.phases import RunPhase
from vdc_runtime.spec import DataCenter, Node

if TYPE_CHECKING:
    from vdc_runtime.storage.images import ImageCache

log = logging.getLogger("vdc.datacenter")
T = TypeVar("T")


class StartupError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunOptions:
    run_dir: Path = Path("/run/vdc")
    data_dir: Path = Path("/var/lib/vdc")
    cache_dir: Path = Path("/var/cache/vdc")
    force: bool = False
    accel: str = "auto"  # auto / kvm / tcg
    # Where apps and init-scripts run, so relative paths in their commands work as in
    # Placemat, which ran everything from the first YAML file's folder.
    workdir: Path | None = None
    recreate_volumes: bool = False


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
    def __init__(self, dc: DataCenter, options: RunOptions) -> None:
        self.dc = dc
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
        self.machines: dict[str, Machine] = {}
        self.layouts: dict[str, NodeLayout] = {}
        self.accel: str | None = None
        self.accel_reason: str | None = None
        self.forwards = Forwards({ns.name for ns in dc.netns})
        self._cache: ImageCache | None = None
        self.bmc: BmcManager | None = None
        self._bmc_started: asyncio.Task[None] | None = None

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
            await self._clear_leftovers()
            self.ledger = Ledger(self.options.run_dir)
            self.apps = procs.AppSupervisor(
                self.ledger, on_fatal=self._fatal, cwd=self.options.workdir
            )
            await self._build()
        except BaseException:
            self.phase = RunPhase.FAILED
            await self.teardown()
            raise
        self.phase = RunPhase.RUNNING
        self.started_at = time.time()

    async def _build(self) -> None:
        assert self.ledger is not None and self.apps is not None
        t0 = time.perf_counter()
        if self.dc.nodes:
            try:  # reads password files: a bad one must fail before anything exists
                self.bmc = BmcManager(
                    self.dc,
                    data_dir=self.options.data_dir,
                    run_dir=self.options.run_dir,
                    nft_table=self.table,
                )
            except BmcError as exc:
                raise StartupError(str(exc)) from exc
        mtu = await asyncio.to_thread(fabric.detect_mtu)
        if self.dc.nodes:
            # Downloads and volumes first: a bad image URL must fail before any kernel
            # object exists.
            await self._plan_nodes(mtu)
            self.timings["volumes"] = time.perf_counter() - t0
        self.plan = fabric.plan_fabric(
            self.dc, mtu=mtu, group=self.group, table=self.table, taps=self._taps()
        )
        try:
            await _finish(fabric.build(self.plan, self.ledger))
        except (fabric.FabricError, OSError) as exc:
            raise StartupError(str(exc)) from exc
        self.timings["fabric"] = time.perf_counter() - t0
        log.info(
            "fabric ready in %.2f s: %d bridges, %d namespaces, %d veths (mtu %s)",
            self.timings["fabric"],
            len(self.plan.bridges),
            len(self.plan.namespaces),
            sum(len(ns.veths) for ns in self.plan.namespaces),
            mtu or "kernel default",
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
                state = procs.AppState(
                    netns=ns.name, name=app.name, command=list(app.command), restart=app.restart
                )
                try:
                    await self.apps.start(state)
                except RuntimeError as exc:
                    raise StartupError(str(exc)) from exc
        if self.dc.nodes:
            t2 = time.perf_counter()
            await self._start_machines()
            self.timings["machines"] = time.perf_counter() - t2

    # -- machines --------------------------------------------------------------------------

    def _host_facts(self, mtu: int | None) -> HostFacts:
        try:
            self.accel, self.accel_reason = probe_accel(self.options.accel)
        except ValueError as exc:
            raise StartupError(str(exc)) from exc
        log.info("acceleration: %s (%s)", self.accel, self.accel_reason)
        ovmf = find_ovmf()
        wants_uefi = [n.name for n in self.dc.nodes if n.uefi]
        if wants_uefi and ovmf is None:
            raise StartupError(
                f"nodes {', '.join(wants_uefi)} want UEFI but no OVMF firmware was found "
                "(Debian: apt-get install ovmf)"
            )
        return HostFacts(
            accel=self.accel,  # type: ignore[arg-type]
            vhost=vhost_available(),
            mtu=mtu,
            ovmf_code=ovmf[0] if ovmf else None,
            ovmf_vars_template=ovmf[1] if ovmf else None,
        )

    async def _plan_nodes(self, mtu: int | None) -> None:
        host = self._host_facts(mtu)
        for node in self.dc.nodes:
            for volume in node.volumes:
                if volume.kind == "hostPath":
                    await asyncio.to_thread(volume.path.mkdir, parents=True, exist_ok=True)
        try:
            all_drives = await asyncio.gather(*(self._drives(node) for node in self.dc.nodes))
        except (OSError, RuntimeError, ValueError) as exc:
            raise StartupError(f"preparing volumes: {exc}") from exc
        for node, drives in zip(self.dc.nodes, all_drives, strict=True):
            try:
                self.layouts[node.name] = plan_node(
                    node,
                    run_dir=self.options.run_dir,
                    data_dir=self.options.data_dir,
                    log_dir=self.options.data_dir / "logs",
                    drives=drives,
                    host=host,
                )
            except ValueError as exc:  # e.g. a socket path too long for this run dir
                raise StartupError(str(exc)) from exc

    async def _drives(self, node: Node) -> list[DriveLayout]:
        disks = [v for v in node.volumes if v.kind != "hostPath"]
        if not disks:
            return []
        # Only nodes with disks load the image machinery (aiohttp, pycdlib).
        from vdc_runtime.storage.images import ImageCache
        from vdc_runtime.storage.volumes import prepare_volume

        if self._cache is None:  # one cache, so an image shared by several nodes is fetched once
            self._cache = ImageCache(self.options.cache_dir)
        prepared = await asyncio.gather(
            *(
                prepare_volume(
                    volume,
                    node_name=node.name,
                    data_dir=self.options.data_dir,
                    device_classes={c.name: c.path for c in self.dc.device_classes},
                    images={image.name: image for image in self.dc.images},
                    cache=self._cache,
                    recreate=self.options.recreate_volumes,
                )
                for volume in disks
            )
        )
        return [
            DriveLayout(
                name=p.name,
                kind=p.kind,
                path=p.path,
                format=p.format,
                cache=volume.cache,
                read_only=p.read_only,
            )
            for volume, p in zip(disks, prepared, strict=True)
        ]

    def _taps(self) -> tuple[TapPlan, ...]:
        return tuple(
            TapPlan(name=nic.tap, bridge=nic.network, queues=nic.queues, node=name)
            for name, layout in self.layouts.items()
            for nic in layout.nics
        )

    async def _start_machines(self) -> None:
        assert self.ledger is not None
        for node in self.dc.nodes:
            self.machines[node.name] = Machine(
                node,
                self.layouts[node.name],
                self.ledger,
                on_fatal=self._fatal,
                on_bmc_address=self._bmc_announced,
            )
        results = await asyncio.gather(
            *(m.start() for m in self.machines.values()), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, NodeError | OSError):
                raise error
        if errors:
            raise StartupError("; ".join(str(e) for e in errors))
        log.info("%d machines started", len(self.machines))
        await self._start_static_bmcs()

    # -- BMCs ------------------------------------------------------------------------------

    async def _bmc_manager(self) -> BmcManager:
        """The BMC servers, started on first use (a run without BMCs never loads them)."""
        assert self.bmc is not None
        if self._bmc_started is None:
            self._bmc_started = asyncio.create_task(self.bmc.start())
        await asyncio.shield(self._bmc_started)
        return self.bmc

    async def _start_static_bmcs(self) -> None:
        static = [n for n in self.dc.nodes if n.bmc is not None and n.bmc.address is not None]
        if not static:
            return
        try:
            manager = await self._bmc_manager()
        except BmcError as exc:
            raise StartupError(str(exc)) from exc
        endpoints = await asyncio.gather(
            *(
                manager.attach(self.machines[n.name], str(n.bmc.address), "static")  # type: ignore[union-attr]
                for n in static
            )
        )
        failed = [f"node {e.node}: BMC on {e.address}: {e.error}" for e in endpoints if e.error]
        if failed:
            raise StartupError("; ".join(failed))

    async def _bmc_announced(self, machine: Machine, address: str) -> None:
        node = machine.node
        if node.bmc is not None and node.bmc.address is not None:
            log.info(
                "node %s: guest announced BMC address %s; the spec's %s stays",
                node.name, address, node.bmc.address,
            )  # fmt: skip
            return
        if self.phase not in (RunPhase.BUILDING, RunPhase.RUNNING):
            return
        try:
            manager = await self._bmc_manager()
        except BmcError as exc:
            log.error("node %s: BMC: %s", node.name, exc)
            return
        await manager.attach(machine, address, "announced")

    # -- leftovers -------------------------------------------------------------------------

    async def _clear_leftovers(self) -> None:
        entries = Ledger.load(self.options.run_dir)
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
        for problem in problems:
            log.warning("--force: %s", problem)
        (self.options.run_dir / "vdc-ledger.jsonl").unlink(missing_ok=True)

    @staticmethod
    async def _undo(entries: list[dict[str, Any]]) -> list[str]:
        problems = await procs.reap_recorded(entries)
        problems += await fabric.teardown(entries)
        return problems

    # -- stop ------------------------------------------------------------------------------

    async def teardown(self) -> list[str]:
        """Remove everything this run created. Safe to call more than once."""
        if self.phase != RunPhase.FAILED:
            self.phase = RunPhase.STOPPING
        await self.forwards.close()
        if self._bmc_started is not None:
            self._bmc_started.cancel()
            await asyncio.gather(self._bmc_started, return_exceptions=True)
        if self.bmc is not None:
            await self.bmc.close()
        if self.machines:
            await asyncio.gather(*(m.stop() for m in self.machines.values()))
        if self.apps is not None:
            await self.apps.stop()
        problems: list[str] = []
        if self.ledger is not None:
            problems = await self._undo(self.ledger.entries)
            self.ledger.close(remove=not problems)
            self.ledger = None
        self.lock.release()
        for problem in problems:
            log.warning("teardown: %s", problem)
        if self.phase != RunPhase.FAILED:
            self.phase = RunPhase.STOPPED
        return problems
