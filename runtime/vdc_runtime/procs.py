"""Programs run inside network namespaces: init-scripts once, apps for the whole run.

They share the host's filesystem and mount namespace; only the network stack is the
namespace's. Init-scripts are this process's children, which it waits for; apps are
started by a `launch.Launcher` (in a pod, the holder's, so they outlive the agent).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vdc_runtime.launch import (
    STOP_GRACE,
    Launched,
    Launcher,
    LocalLauncher,
    in_netns,
    process_start_time,
    process_started_at,
    stop_process_group,
)
from vdc_runtime.ledger import Ledger

log = logging.getLogger("vdc.procs")

INIT_SCRIPT_TIMEOUT = 300.0
RESTART_BACKOFF_MAX = 30.0
FOLLOW_INTERVAL = 0.25


class InitScriptError(RuntimeError):
    pass


async def _spawn_piped(
    netns: str, argv: Sequence[str], ledger: Ledger, label: str, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    """Start `argv` in `netns`, its output into a pipe to this process (init-scripts,
    which it waits for)."""
    proc = await asyncio.create_subprocess_exec(
        *in_netns(netns, argv),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own process group, so stopping it also stops whatever it started.
        start_new_session=True,
    )
    ledger.record("process", pid=proc.pid, start=process_start_time(proc.pid), label=label)
    return proc


class OutputFollower:
    """What a child appends to its output file (`open_output`), read back every
    FOLLOW_INTERVAL: each new line to the log under the child's prefix, the last ones kept
    for error messages. Starts at the file's end: earlier runs' lines are not this one's."""

    def __init__(
        self, path: Path, prefix: str, logger: str, level: int = logging.INFO, keep: int = 50
    ) -> None:
        self.path, self.prefix, self.level = path, prefix, level
        self.logger = logging.getLogger(logger)
        self.tail: deque[str] = deque(maxlen=keep)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        self._file: IO[bytes] | None = path.open("rb")
        self._file.seek(0, os.SEEK_END)
        self._partial = b""
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name=f"output of {self.prefix}")

    async def _follow(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(FOLLOW_INTERVAL)

    def read(self) -> None:
        """Take in what was appended since the last read."""
        if self._file is None:
            return
        data = self._file.read()
        if not data:
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            text = raw.decode(errors="replace").rstrip()
            self.tail.append(text)
            self.logger.log(self.level, "%s", text, extra={"prefix": self.prefix})

    def last(self, lines: int) -> list[str]:
        self.read()
        return list(self.tail)[-lines:]

    async def close(self) -> None:
        """Read what the child printed last, then stop following."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.read()
        if self._file is not None:
            self._file.close()
            self._file = None


async def _pump(stream: asyncio.StreamReader, prefix: str, tail: list[str]) -> None:
    """An init-script's output, to the log and a tail for its error message."""
    logger = logging.getLogger(f"vdc.app.{prefix}")
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        logger.info("%s", text, extra={"prefix": prefix})
        tail.append(text)
        del tail[:-20]


async def run_init_scripts(
    netns: str, scripts: Sequence[Path], ledger: Ledger, cwd: Path | None = None
) -> None:
    """Run a namespace's init-scripts in order; the first failure aborts with its output."""
    for script in scripts:
        prefix = f"{netns}/{script.name}"
        proc = await _spawn_piped(netns, [str(script)], ledger, label=prefix, cwd=cwd)
        tail: list[str] = []
        assert proc.stdout is not None
        try:
            await asyncio.wait_for(_pump(proc.stdout, prefix, tail), INIT_SCRIPT_TIMEOUT)
            code = await proc.wait()
        except TimeoutError:
            await stop_process_group(proc.pid, None)
            raise InitScriptError(
                f"init-script {script} in {netns} did not finish within {INIT_SCRIPT_TIMEOUT:.0f} s"
            ) from None
        except asyncio.CancelledError:
            await stop_process_group(proc.pid, None)
            raise
        if code != 0:
            last = ("; last output: " + " | ".join(tail[-5:])) if tail else ""
            raise InitScriptError(f"init-script {script} in {netns} exited with {code}{last}")


@dataclass
class AppState:
    netns: str
    name: str
    command: list[str]
    restart: str
    log_path: Path
    """Where it writes its output itself (kept after the run, like console logs)."""
    pid: int | None = None
    state: str = "starting"  # running / exited / failed / restarting / stopped
    restarts: int = 0
    exit_code: int | None = None
    started_at: float | None = None
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.netns}/{self.name}"

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "command": self.command,
            "restart": self.restart,
            "state": self.state,
            "pid": self.pid,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "log": str(self.log_path) if self.log_path else None,
        }


class AppSupervisor:
    """Starts apps, keeps their output, applies their restart policy.

    An app writes its output to its log file itself (so it outlives this process), read
    back to the log at debug level (`vdc run -v`). When an app fails, its last lines come
    with the error.

    `on_fatal` is called when an app exits in a way its policy does not absorb: with
    restart "no", any non-zero exit (as Placemat: the whole run stops). An exit with 0 under
    "no" is reported and the run goes on, also as Placemat. An app whose exit status nobody
    can know (adopted from a killed `vdc run`: it went to init) counts as failed.
    """

    def __init__(
        self,
        ledger: Ledger,
        on_fatal: Callable[[str], Awaitable[None] | None],
        cwd: Path | None = None,
        launcher: Launcher | None = None,
        on_started: Callable[[], object] = lambda: None,
    ) -> None:
        self.ledger = ledger
        self.cwd = cwd
        self.on_fatal = on_fatal
        self.on_started = on_started
        """Called as soon as an app's process started, its pid in `records()`."""
        self.launcher: Launcher = launcher if launcher is not None else LocalLauncher()
        self.apps: list[AppState] = []
        self._running: dict[int, Launched] = {}
        """The apps' processes that run, by pid: started by this run, or adopted."""
        self._stopping = False

    def records(self) -> dict[str, tuple[int, int | None, int]]:
        """Each running app's pid, start time and restarts, by label (`runstate`)."""
        return {
            app.label: (app.pid, self._running[app.pid].start, app.restarts)
            for app in self.apps
            if app.pid is not None and app.pid in self._running
        }

    async def adopt(self, app: AppState, pid: int, start: int | None, restarts: int) -> None:
        """Take over an app that a killed run (or agent) started: followed until it ends,
        then its restart policy applies as to any other exit (one that ended while no run
        watched is found at once)."""
        self.apps.append(app)
        proc = self.launcher.adopt(pid, start)
        app.pid, app.state, app.restarts = pid, "running", restarts
        app.started_at = process_started_at(start)
        self._running[pid] = proc
        app._task = asyncio.create_task(self._watch(app, proc), name=f"app {app.label}")

    async def start(self, app: AppState) -> None:
        self.apps.append(app)
        proc = await self._launch(app)
        app._task = asyncio.create_task(self._watch(app, proc), name=f"app {app.label}")

    async def _launch(self, app: AppState) -> Launched:
        try:
            proc = await self.launcher.spawn(
                app.command, app.log_path, label=app.label, netns=app.netns, cwd=self.cwd
            )
        except OSError as exc:
            app.state = "failed"
            raise RuntimeError(f"app {app.label}: cannot start {app.command[0]}: {exc}") from exc
        self.ledger.record("process", pid=proc.pid, start=proc.start, label=app.label)
        app.pid, app.state, app.started_at = proc.pid, "running", time.time()
        self._running[proc.pid] = proc
        log.info("app %s started (pid %d)", app.label, proc.pid)
        self.on_started()
        return proc

    async def _watch(self, app: AppState, proc: Launched) -> None:
        # Its output to the log at debug level (`vdc run -v`): a boot server's dnsmasq
        # would otherwise bury what a person follows in the terminal.
        output = OutputFollower(app.log_path, app.label, f"vdc.app.{app.label}", logging.DEBUG)
        output.start()
        try:
            await self._supervise(app, proc, output)
        finally:
            await output.close()

    async def _fail(self, message: str) -> None:
        result = self.on_fatal(message)
        if result is not None:
            await result

    async def _relaunch(self, app: AppState) -> Launched | None:
        """The app started again, or None (the run failed, saying why)."""
        app.restarts += 1
        try:
            return await self._launch(app)
        except RuntimeError as exc:
            await self._fail(str(exc))
            return None

    async def _supervise(self, app: AppState, proc: Launched, output: OutputFollower) -> None:
        backoff = 1.0
        while True:
            code = await proc.wait()
            self._running.pop(proc.pid, None)
            app.exit_code = code
            if self._stopping:
                app.state = "stopped"
                return
            how = f"exited with {code}" if code is not None else "exited (status unknown)"
            restart = app.restart == "always" or (app.restart == "on-failure" and code != 0)
            if not restart:
                app.state = "exited" if code == 0 else "failed"
                if code == 0:
                    log.warning("app %s exited with 0; the run goes on without it", app.label)
                else:
                    last = _last(output)
                    where = f" (all of it in {app.log_path})"
                    log.error("app %s %s%s%s", app.label, how, last, where)
                    await self._fail(f"app {app.label} {how}{last}")
                return
            app.state = "restarting"
            uptime = time.time() - (app.started_at or time.time())
            backoff = 1.0 if uptime > RESTART_BACKOFF_MAX else min(backoff * 2, RESTART_BACKOFF_MAX)
            log.warning("app %s %s; restarting in %.0f s", app.label, how, backoff)
            await asyncio.sleep(backoff)
            if self._stopping:
                app.state = "stopped"
                return
            relaunched = await self._relaunch(app)
            if relaunched is None:
                return
            proc = relaunched

    async def release(self) -> None:
        """Stop watching the apps, and leave them running (an adoption that failed)."""
        self._stopping = True
        for proc in self._running.values():
            proc.close()
        tasks = [app._task for app in self.apps if app._task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(
            *(stop_process_group(pid, proc.start) for pid, proc in list(self._running.items()))
        )
        tasks = [app._task for app in self.apps if app._task is not None]
        current = asyncio.current_task()
        tasks = [t for t in tasks if t is not current]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            for task in pending:
                task.cancel()
        for app in self.apps:
            if app.state in ("running", "restarting", "starting"):
                app.state = "stopped"


def _last(output: OutputFollower) -> str:
    tail = output.last(5)
    return ("; last output: " + " | ".join(tail)) if tail else ""


async def reap_recorded(entries: list[dict[str, Any]]) -> list[str]:
    """Stop processes a ledger recorded that still run (after a killed run)."""
    problems = []
    for entry in entries:
        if entry["kind"] != "process":
            continue
        try:
            if await stop_process_group(entry["pid"], entry.get("start")):
                log.info("stopped leftover process %s (pid %d)", entry.get("label"), entry["pid"])
        except PermissionError as exc:
            problems.append(f"process {entry['pid']}: {exc}")
    return problems
