"""The data center's machines as a whole: planned (host facts, volumes, layouts), started
together, and given their BMCs.

`datacenter` imports this module only when the spec has nodes, so a lab of networks and
namespaces alone starts without loading QEMU's, the BMCs' and the volumes' code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from vdc_runtime.bmc.service import BmcError, BmcManager
from vdc_runtime.bmc.target import BootOverride
from vdc_runtime.fabric.plan import TapPlan
from vdc_runtime.launch import Launcher, running
from vdc_runtime.ledger import Ledger
from vdc_runtime.nodes.cdrom import MediaError, check_iso_file
from vdc_runtime.nodes.host import find_ovmf, find_ovmf_secure, probe_accel, vhost_available
from vdc_runtime.nodes.layout import DriveLayout, HostFacts, NodeLayout, plan_node
from vdc_runtime.nodes.machine import Machine, NodeError
from vdc_runtime.options import RunOptions, StartupError
from vdc_runtime.runstate import NodeRecord
from vdc_runtime.spec import DataCenter, Node

if TYPE_CHECKING:
    from vdc_runtime.snapshot.manifest import Manifest
    from vdc_runtime.snapshot.store import SnapshotStore
    from vdc_runtime.storage.images import ImageCache

log = logging.getLogger("vdc.datacenter")


class Fleet:
    def __init__(
        self,
        dc: DataCenter,
        options: RunOptions,
        *,
        nft_table: str,
        on_fatal: Callable[[str], object],
        accepting_bmcs: Callable[[], bool],
        on_record: Callable[[], object] = lambda: None,
        publish_order: list[str] | None = None,
        launcher: Launcher | None = None,
    ) -> None:
        """Reads the BMC password files: a bad one fails here, before anything exists."""
        self.dc = dc
        self.launcher = launcher
        self.options = options
        self.on_fatal = on_fatal
        self.accepting_bmcs = accepting_bmcs
        """Whether a BMC address the guest announces is still taken up (not while stopping)."""
        self.on_record = on_record
        """Called when a machine's record (what a later run adopts) has changed."""
        self.machines: dict[str, Machine] = {}
        self.layouts: dict[str, NodeLayout] = {}
        self.accel: str | None = None
        self.accel_reason: str | None = None
        self._cache: ImageCache | None = None
        self._bmc_started: asyncio.Task[None] | None = None
        try:
            self.bmc = BmcManager(
                dc,
                data_dir=options.data_dir,
                run_dir=options.run_dir,
                nft_table=nft_table,
                publish_order=publish_order,
            )
        except BmcError as exc:
            raise StartupError(str(exc)) from exc

    # -- planning ------------------------------------------------------------------------

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
        secure = find_ovmf_secure()
        wants_secure = [n.name for n in self.dc.nodes if n.uefi_secure_boot]
        if wants_secure and secure is None:
            raise StartupError(
                f"nodes {', '.join(wants_secure)} want UEFI Secure Boot but no Secure Boot"
                " build of OVMF with keys enrolled was found (Debian: apt-get install ovmf)"
            )
        return HostFacts(
            accel=self.accel,  # type: ignore[arg-type]
            vhost=vhost_available(),
            mtu=mtu,
            ovmf_code=ovmf[0] if ovmf else None,
            ovmf_vars_template=ovmf[1] if ovmf else None,
            ovmf_secure_code=secure[0] if secure else None,
            ovmf_secure_vars_template=secure[1] if secure else None,
        )

    async def plan(self, mtu: int | None) -> None:
        """Prepare every node's volumes and lay out its files, devices and taps."""
        host = self._host_facts(mtu)
        for node in self.dc.nodes:
            for volume in node.volumes:
                if volume.kind == "hostPath":
                    await asyncio.to_thread(volume.path.mkdir, parents=True, exist_ok=True)
        try:
            all_drives = await asyncio.gather(*(self._drives(node) for node in self.dc.nodes))
        except (OSError, RuntimeError, ValueError) as exc:
            raise StartupError(f"preparing volumes: {exc}") from exc
        try:
            cdroms = await asyncio.gather(*(self._cdrom(node) for node in self.dc.nodes))
        except (OSError, RuntimeError, ValueError) as exc:
            raise StartupError(f"preparing CD images: {exc}") from exc
        for node, drives, cdrom in zip(self.dc.nodes, all_drives, cdroms, strict=True):
            try:
                self.layouts[node.name] = plan_node(
                    node,
                    run_dir=self.options.run_dir,
                    data_dir=self.options.data_dir,
                    log_dir=self.options.log_dir,
                    drives=drives,
                    host=host,
                    cdrom=cdrom,
                    cache_dir=self.options.cache_dir,
                )
            except ValueError as exc:  # e.g. a socket path too long for this run dir
                raise StartupError(str(exc)) from exc

    async def _drives(self, node: Node) -> list[DriveLayout]:
        disks = [v for v in node.volumes if v.kind != "hostPath"]
        if not disks:
            return []
        # Only nodes with disks load the image machinery (aiohttp, pycdlib).
        from vdc_runtime.storage.volumes import prepare_volume

        cache = self._image_cache()
        prepared = await asyncio.gather(
            *(
                prepare_volume(
                    volume,
                    node_name=node.name,
                    data_dir=self.options.data_dir,
                    device_classes={c.name: c.path for c in self.dc.device_classes},
                    images={image.name: image for image in self.dc.images},
                    cache=cache,
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

    async def _cdrom(self, node: Node) -> Path | None:
        """The image in the node's CD drive at start, from the image cache."""
        if node.cdrom is None:
            return None
        image = next(i for i in self.dc.images if i.name == node.cdrom.image)
        path = await self._image_cache().fetch(image)
        try:
            await asyncio.to_thread(check_iso_file, path)
        except MediaError as exc:
            raise StartupError(f"node {node.name}: cdrom image {image.name}: {exc}") from exc
        return path

    def _image_cache(self) -> ImageCache:
        from vdc_runtime.storage.images import ImageCache

        if self._cache is None:  # one cache, so an image shared by several nodes is fetched once
            self._cache = ImageCache(self.options.cache_dir)
        return self._cache

    def taps(self) -> tuple[TapPlan, ...]:
        """The taps the fabric makes for the planned nodes."""
        return tuple(
            TapPlan(name=nic.tap, bridge=nic.network, queues=nic.queues, node=name)
            for name, layout in self.layouts.items()
            for nic in layout.nics
        )

    # -- running -------------------------------------------------------------------------

    def _make_machines(self, ledger: Ledger) -> None:
        for node in self.dc.nodes:
            self.machines[node.name] = Machine(
                node,
                self.layouts[node.name],
                ledger,
                on_fatal=self.on_fatal,
                on_bmc_address=self._bmc_announced,
                launcher=self.launcher,
                on_record=self.on_record,
            )

    async def start(self, ledger: Ledger) -> None:
        """Start every machine at once, then the BMCs with static addresses."""
        self._make_machines(ledger)
        await self._started(m.start() for m in self.machines.values())
        await self._start_static_bmcs()

    async def restore(self, ledger: Ledger, store: SnapshotStore, manifest: Manifest) -> None:
        """Start every machine from the snapshot, where it was paused, then the BMCs (the
        addresses the guests had announced included: they will not announce them again)."""
        # Imported here: a run that restores nothing never loads the snapshots' code.
        from vdc_runtime import capture

        self._make_machines(ledger)

        async def one(machine: Machine) -> None:
            image = manifest.machines[machine.name]
            machine.firmware_as(image.secure_boot, image.secure_boot_next)
            await capture.put_back(store, manifest, image, machine.layout)
            state = image.files["state"].path

            async def feed(fd: int) -> None:
                await asyncio.to_thread(capture.feed, store, manifest.name, state, fd)

            await machine.restore(image, feed)

        await self._started(one(m) for m in self.machines.values())
        await self._serve_bmcs()
        for machine in self.machines.values():
            # The BMC's, not QEMU's: the devices' boot order is not in the saved state.
            override = manifest.machines[machine.name].boot_override
            if override is not None:
                await self.bmc.target(machine).set_boot_override(BootOverride(**override))

    def boot_overrides(self) -> dict[str, dict[str, str]]:
        """Each machine's boot override that its BMC holds for the next boots (a snapshot
        keeps them: they are no part of the machine's own state)."""
        found = {}
        for machine in self.machines.values():
            override = self.bmc.target(machine).boot_override()
            if override.enabled != "disabled":
                found[machine.name] = dataclasses.asdict(override)
        return found

    async def adopt(self, ledger: Ledger, records: dict[str, NodeRecord]) -> None:
        """Take over the machines a killed run left running, then serve their BMCs again
        (static and announced addresses alike). A machine whose QEMU ended while no run
        watched is handled as its restart policy handles any end: started again
        (on-failure, counted in its restarts), else the run fails naming it."""
        self._make_machines(ledger)

        async def one(machine: Machine) -> None:
            record = records.get(machine.name)
            qemu = record.qemu if record is not None else None
            if qemu is not None and running(qemu.pid, qemu.start):
                assert record is not None
                await machine.adopt(record)
                return
            gone = f"node {machine.name}: its QEMU ended while no run watched it"
            if machine.node.restart != "on-failure":
                raise NodeError(f"{gone} (restart: {machine.node.restart}); run with --force")
            log.warning("%s; starting it again (restart: on-failure)", gone)
            await machine.start()
            machine.restarts = (record.restarts if record is not None else 0) + 1

        await self._started(one(m) for m in self.machines.values())
        await self._serve_bmcs()

    async def _serve_bmcs(self) -> None:
        """The BMCs of machines this run did not boot (adopted or restored): at static
        addresses, and at those their guests announced before, which they will not again."""
        await self._start_static_bmcs()
        for machine in self.machines.values():
            if machine.bmc_address is not None:
                await self._bmc_announced(machine, machine.bmc_address)

    async def _started(self, starts: Iterable[Awaitable[None]]) -> None:
        results = await asyncio.gather(*starts, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if not isinstance(error, NodeError | OSError):
                raise error
        if errors:
            raise StartupError("; ".join(str(e) for e in errors))
        log.info("%d machines running", len(self.machines))

    async def stop(self) -> None:
        """The BMCs, then every machine; safe to call more than once."""
        if self._bmc_started is not None:
            self._bmc_started.cancel()
            await asyncio.gather(self._bmc_started, return_exceptions=True)
        await self.bmc.close()
        await asyncio.gather(*(m.stop() for m in self.machines.values()))

    # -- BMCs ------------------------------------------------------------------------------

    async def _bmc_manager(self) -> BmcManager:
        """The BMC servers, started on first use (a run without BMCs never loads them)."""
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
        if not self.accepting_bmcs():
            return
        try:
            manager = await self._bmc_manager()
        except BmcError as exc:
            log.error("node %s: BMC: %s", node.name, exc)
            return
        await manager.attach(machine, address, "announced")


__all__ = ["Fleet"]
