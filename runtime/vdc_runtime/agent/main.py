"""`vdc agent`: one VirtualDataCenter's data center, run in its pod, reported into its status.

The agent keeps running after a failure (a bad spec, a start-up that failed, a machine
that died): the status says what went wrong, the REST API and consoles stay up for
debugging, and the pod does not crash-loop on a problem a restart cannot fix. It stops
when the pod is deleted (SIGTERM), removing everything it built.

Start-up order matters when many VDCs start on one node: only what the first QEMU needs
(the VDC, the spec's models, the runtime) comes before it; HTTP servers, metrics and the
status reporter are imported and started once the machines boot (bench/operator.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdc_runtime import groups, packing
from vdc_runtime.agent import files
from vdc_runtime.agent.kube import Gone, Kube, KubeError
from vdc_runtime.agent.status import Event
from vdc_runtime.phases import RunPhase
from vdc_runtime.spec import DataCenter, SpecErrors

if TYPE_CHECKING:
    from aiohttp import web

    from vdc_runtime.agent.faults import DeclaredFaults
    from vdc_runtime.agent.report import Reporter
    from vdc_runtime.datacenter import DataCenterRun

log = logging.getLogger("vdc.agent")


@dataclass(frozen=True)
class AgentOptions:
    namespace: str
    name: str
    pod: str | None
    pod_ip: str | None = None
    group: str | None = None
    """The group this pod builds, in a VDC of several; its peers are the other groups' pods
    (their addresses in the VDC's status, which the operator keeps)."""
    group_assignment: str | None = None
    """With automatic groups, every member's group as the operator packed them (JSON,
    `packing.Assignment`): the operator's limit is not in the spec, so the agent applies
    the operator's answer rather than computing its own."""
    run_dir: Path = Path("/run/vdc")
    data_dir: Path = Path("/var/lib/vdc")
    cache_dir: Path = Path("/var/cache/vdc")
    sources_dir: Path = Path("/etc/vdc/sources")
    listen_addr: str = "127.0.0.1:10808"
    metrics_addr: str = "0.0.0.0"
    metrics_port: int = 9090
    report_every: float = 1.0
    runner_state_dir: Path = Path("/run/vdc-runners")
    holder: Path | None = None
    """The holder's socket: the machines and apps run there, and a restarted agent adopts
    them instead of building the data center again."""
    snapshots_dir: Path | None = None
    """The namespace's snapshot claim, where it is mounted: VirtualDataCenterSnapshots of
    this VDC are saved in its directory of it (`resource.snapshots.part_dir`)."""
    snapshots_claim: str | None = None
    restore: str | None = None
    """The snapshot (its store's name) the machines start from, found in `restore_dir`."""
    restore_dir: Path | None = None
    bmc_password_file: Path | None = None
    """The generated BMC password (mounted from the VDC's Secret `bmc_secret`): the BMCs'
    account when the spec names none."""
    bmc_secret: str | None = None

    @property
    def part(self) -> str:
        from vdc_runtime.resource.snapshots import part_name

        return part_name(self.group)

    @property
    def snapshot_dir(self) -> Path | None:
        """This pod's store in the claim."""
        from vdc_runtime.resource.snapshots import part_dir

        if self.snapshots_dir is None:
            return None
        return self.snapshots_dir / part_dir(self.name, self.part)


class Agent:
    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.run: DataCenterRun | None = None
        self.failure: tuple[str, str] | None = None
        """(reason, message) of a failure found before or during start-up."""
        self.reporter: Reporter | None = None
        self.generation = 0
        self.keep_until: float | None = None
        """Asked by a job (`vdc keep`): the operator must not delete the VDC before."""
        self.notices: list[Event] = []
        """Events of the start-up, posted once the status reporter runs."""
        self.declared: DeclaredFaults | None = None
        """spec.faults, applied once the data center runs."""

    def observation(self) -> Any:
        from vdc_runtime.agent.report import observe, read_runners

        # The reporter follows the generation through spec changes applied in place.
        generation = self.reporter.generation if self.reporter is not None else self.generation
        return observe(
            self.run, generation=generation, pod=self.options.pod,
            failure=self.failure[1] if self.failure else None, pod_ip=self.options.pod_ip,
            runners=read_runners(self.options.runner_state_dir), keep_until=self.keep_until,
            bmc_secret=self.options.bmc_secret,
            declared=self.declared.ids if self.declared is not None else frozenset(),
        )  # fmt: skip

    def keep(self, seconds: float) -> float:
        """Keep the VDC at least `seconds` from now; returns until when (epoch)."""
        import time

        until = time.time() + seconds
        self.keep_until = max(self.keep_until or 0.0, until)
        log.info("kept until %s at a job's request", time.strftime("%H:%M:%S", time.gmtime(until)))
        return self.keep_until

    def _routes(self, app: web.Application) -> None:
        from aiohttp import web

        from vdc_runtime.resource.spec import parse_duration

        async def keep(request: web.Request) -> web.Response:
            try:
                body = await request.json()
                seconds = parse_duration(str(body["for"]))
            except (ValueError, KeyError, TypeError) as exc:
                return web.json_response({"error": f'expected {{"for": "2h"}}: {exc}'}, status=400)
            until = self.keep(seconds)
            from vdc_runtime.resource.status import timestamp

            return web.json_response({"keep_until": timestamp(until)})

        app.router.add_post("/keep", keep)

    async def _serve_metrics(self) -> web.AppRunner:
        from aiohttp import web

        from vdc_runtime.agent import metrics
        from vdc_runtime.agent.report import read_runners

        reg = metrics.registry(
            lambda: self.run, lambda: read_runners(self.options.runner_state_dir)
        )

        async def scrape(_: web.Request) -> web.Response:
            body = await asyncio.to_thread(metrics.exposition, reg)
            return web.Response(body=body, content_type="text/plain", charset="utf-8")

        async def healthz(_: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        app = web.Application()
        app.router.add_get("/metrics", scrape)
        app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.options.metrics_addr, self.options.metrics_port).start()
        return runner

    async def _post_notices(self) -> None:
        assert self.reporter is not None
        for event in self.notices:
            with contextlib.suppress(KubeError):
                await self.reporter.kube.post_event(self.reporter.vdc, event)
        self.notices.clear()

    async def _report_failure(self) -> None:
        assert self.reporter is not None and self.failure is not None
        reason, message = self.failure
        await self.reporter.report(self.observation())
        with contextlib.suppress(KubeError):
            await self.reporter.kube.post_event(
                self.reporter.vdc, Event(reason, message[:1024], "Warning")
            )

    async def main(self, stop: asyncio.Event) -> int:
        opts = self.options
        kube = Kube.from_environment(opts.namespace, opts.name, opts.pod)
        try:
            vdc = await kube.first_get()
        except (Gone, KubeError) as exc:
            log.error("%s", exc)
            return 1
        self.generation = vdc["metadata"].get("generation", 0)
        await self._start(vdc, stop)

        # The machines boot (or start-up failed): now the rest.
        from vdc_runtime.agent.report import Reporter

        self.reporter = Reporter(kube, vdc, opts.group)
        await self.reporter.resync()  # from the status as it is now, not as before start-up
        metrics_runner = await self._serve_metrics()
        reporting = asyncio.create_task(
            self.reporter.loop(self.observation, opts.report_every), name="status reports"
        )
        # Peers and faults change while the machines run: followed once they do.
        following = self._follow_vdc(kube) if self.failure is None else None
        api_runner = None
        taking: asyncio.Task[None] | None = None
        try:
            await self._post_notices()
            if self.failure is not None:
                await self._report_failure()
            elif self.run is not None:
                from vdc_runtime import api
                from vdc_runtime.ui import auth as ui_auth

                # `kubectl vdc dashboard` reads the token from the run dir in the pod.
                token = ui_auth.write_token(opts.run_dir)
                api_runner = await api.serve(
                    self.run, opts.listen_addr, self._routes, ui_token=token
                )
                log.info("ready: API on http://%s (web view on /ui/)", opts.listen_addr)
                taking = self._take_snapshots(kube)
                failed = asyncio.create_task(self.run.failed.wait())
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait({failed, stopping}, return_when=asyncio.FIRST_COMPLETED)
                failed.cancel()
                stopping.cancel()
                if self.run.failed.is_set():
                    # The rest of the data center stays up to be looked at.
                    message = self.run.failure or "the data center failed"
                    log.error("%s", message)
                    self.failure = ("Failed", message)
                    await self._report_failure()
            await stop.wait()
        finally:
            log.info("stopping: removing the data center")
            # A save, a fault or a tunnel change under way ends before the machines do.
            early = [t for t in (taking, following) if t is not None]
            for task in early:
                task.cancel()
            await asyncio.gather(*early, return_exceptions=True)
            if api_runner is not None:
                await api_runner.cleanup()
            if self.run is not None:
                self.run.phase = RunPhase.STOPPING
                await self.reporter.report(self.observation())
                await self.run.teardown()
            reporting.cancel()
            await asyncio.gather(reporting, return_exceptions=True)
            await metrics_runner.cleanup()
        return 0

    def _follow_vdc(self, kube: Kube) -> asyncio.Task[None] | None:
        """One watch of the VDC for what the pod applies while it runs: spec.faults (the
        pod is not replaced for them), and in a VDC of several, the other groups' addresses
        (a replaced pod comes back at a new one, which the operator writes into the status)."""
        if self.run is None:
            return None
        from vdc_runtime.agent.faults import DeclaredFaults
        from vdc_runtime.agent.kube import keep_watching

        changes = []
        if self.run.faults is not None:
            self.declared = DeclaredFaults(kube, self.run)
            changes.append(self.declared.changed)
        if self.options.group is not None:
            changes.append(self._peers_changed)
        if not changes:
            return None

        async def read() -> str:
            vdc = await kube.get()
            await handle("ADDED", vdc)
            return str(vdc["metadata"]["resourceVersion"])

        async def handle(kind: str, vdc: dict[str, Any]) -> None:
            if kind != "DELETED":
                for changed in changes:
                    await changed(vdc)

        return asyncio.create_task(keep_watching(read, kube.watch, handle, "following the VDC"),
                                   name="the VDC")  # fmt: skip

    def _take_snapshots(self, kube: Kube) -> asyncio.Task[None] | None:
        """Save this pod's part of the VDC's snapshots, where the pod mounts a claim."""
        if self.run is None or self.options.snapshots_dir is None:
            return None
        from vdc_runtime.agent.snapshots import SnapshotTaker

        opts = self.options
        taker = SnapshotTaker(kube, self.run, opts.name, opts.part, opts.snapshots_claim)
        return asyncio.create_task(taker.follow(), name="snapshots")

    async def _peers_changed(self, vdc: dict[str, Any]) -> None:
        """Tunnel to the other groups' pods where the status says they are now."""
        assert self.run is not None
        peers = peer_addresses(vdc, self.options.group)
        changed = {g: a for g, a in peers.items() if self.run.peers.get(g) != a}
        if changed:
            try:
                await self.run.set_peers(changed)
            except (ValueError, OSError) as exc:
                log.warning("peers %s: %s", changed, exc)

    async def _start(self, vdc: dict[str, Any], stop: asyncio.Event) -> None:
        opts = self.options
        workdir = opts.data_dir / "files"
        try:
            dc = await files.load(vdc.get("spec"), workdir, opts.sources_dir, opts.cache_dir)
        except SpecErrors as exc:
            self.failure = ("InvalidSpec", f"invalid spec: {exc}")
            log.error("%s", self.failure[1])
            return
        dc = files.with_generated_admin(dc, opts.bmc_password_file)
        try:
            dc = with_groups(dc, opts.group_assignment, opts.group)
        except ValueError as exc:
            self.failure = ("StartupFailed", str(exc))
            log.error("%s", self.failure[1])
            return
        from vdc_runtime.datacenter import DataCenterRun, RunOptions
        from vdc_runtime.options import GroupOptions

        group = None
        if opts.group is not None:
            if opts.pod_ip is None:
                self.failure = ("StartupFailed", "a group's agent needs its pod's IP (POD_IP)")
                log.error("%s", self.failure[1])
                return
            group = GroupOptions(opts.group, peer_addresses(vdc, opts.group), opts.pod_ip)
        accel = (vdc.get("spec") or {}).get("accel", "auto")
        options = RunOptions(
            run_dir=opts.run_dir,
            data_dir=opts.data_dir,
            cache_dir=opts.cache_dir,
            # The pod's own namespace: whatever is there was left by this pod's agent
            # before a restart of its container.
            force=True,
            accel=accel,
            workdir=workdir,
            group=group,
            holder=opts.holder,
            snapshot_dir=opts.snapshot_dir,
            restore=opts.restore,
            restore_dir=opts.restore_dir,
        )
        if opts.holder is not None and await asyncio.to_thread(self._left_running):
            failure = await self._run(DataCenterRun(dc, replace(options, adopt=True)), stop)
            if stop.is_set():
                return
            if failure is None:
                self.notices.append(Event("Adopted", self._adopted_message(), "Normal"))
                return
            # What it found stays in the ledger, for the build's --force to remove.
            message = f"could not adopt the running data center, building it again: {failure}"
            log.warning("%s", message)
            self.notices.append(Event("AdoptionFailed", message[:1024], "Warning"))
        failure = await self._run(DataCenterRun(dc, options), stop)
        if failure is not None:
            self.failure = ("StartupFailed", f"start-up failed: {failure}")
            log.error("%s", self.failure[1])

    def _left_running(self) -> bool:
        """An earlier agent of this pod left a data center running (its container was
        restarted): adopted rather than built again."""
        from vdc_runtime import runstate

        try:
            return runstate.load(self.options.run_dir) is not None
        except ValueError as exc:
            log.warning("%s: building the data center again", exc)
            return False

    def _adopted_message(self) -> str:
        assert self.run is not None and self.run.adopted is not None
        a = self.run.adopted
        again = ""
        if a["machines_restarted"] or a["apps_restarted"]:
            again = (f"; started again, having ended meanwhile: {a['machines_restarted']}"
                     f" machines, {a['apps_restarted']} apps")  # fmt: skip
        return (f"the agent adopted the running data center: {a['machines']} machines,"
                f" {a['apps']} apps, {a['forwards']} forwards{again}")  # fmt: skip

    async def _run(self, run: DataCenterRun, stop: asyncio.Event) -> BaseException | None:
        """Start `run` (self.run) unless stopped first; the start-up's error, if any (None
        also when stopped)."""
        from vdc_runtime.datacenter import StartupError

        self.run = run
        start = asyncio.create_task(run.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if not start.done():
            log.warning("stopped during start-up: undoing what was built")
            start.cancel()
        try:
            await start
        except asyncio.CancelledError:
            return None
        except (StartupError, OSError, RuntimeError) as exc:
            return exc
        return None


def with_groups(dc: DataCenter, assignment: str | None, group: str | None) -> DataCenter:
    """The data center with the automatic groups the operator wrote into the pod (without
    them, as its spec says). ValueError, said for the status, when they do not fit it or
    it has no group `group`: only a pod made for an earlier spec, which the operator is
    replacing."""
    if assignment is not None:
        try:
            dc = packing.apply(dc, packing.Assignment.from_json(assignment))
        except ValueError as exc:
            raise ValueError(f"the pod's group assignment does not fit the spec: {exc}") from None
    if group is not None:
        order = groups.layout(dc).order
        if group not in order:
            raise ValueError(f"the spec has no group {group} (its groups: {', '.join(order)})")
    return dc


def peer_addresses(vdc: dict[str, Any], group: str | None) -> dict[str, str]:
    """The other groups' pod addresses, as the operator wrote them into the status."""
    parts = (vdc.get("status") or {}).get("groups") or {}
    return {
        name: part["podIP"]
        for name, part in parts.items()
        if name != group and isinstance(part, dict) and part.get("podIP")
    }


async def run_agent(options: AgentOptions) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return await Agent(options).main(stop)
