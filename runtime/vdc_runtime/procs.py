"""Programs run inside network namespaces: init-scripts once, apps for the whole run.

They share the host's filesystem and mount namespace; only the network stack is the
namespace's. `nsenter --net` is used rather than `ip netns exec`, whose private mount
namespace hides the cgroup mounts some daemons need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from vdc_runtime.fabric.netns import netns_path
from vdc_runtime.ledger import Ledger

log = logging.getLogger("vdc.procs")

INIT_SCRIPT_TIMEOUT = 300.0
STOP_GRACE = 5.0
RESTART_BACKOFF_MAX = 30.0


class InitScriptError(RuntimeError):
    pass


def process_start_time(pid: int) -> int | None:
    """Start time in clock ticks since boot: with the pid, it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may contain spaces and parentheses; fields follow the last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def _in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["nsenter", f"--net={netns_path(netns)}", "--", *argv]


async def _spawn(
    netns: str, argv: Sequence[str], ledger: Ledger, label: str, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        *_in_netns(netns, argv),
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Its own process group, so stopping it also stops whatever it started.
        start_new_session=True,
    )
    ledger.record("process", pid=proc.pid, start=process_start_time(proc.pid), label=label)
    return proc


async def _pump(
    stream: asyncio.StreamReader,
    prefix: str,
    tail: list[str] | None = None,
    sink: TextIO | None = None,
    level: int = logging.INFO,
) -> None:
    logger = logging.getLogger(f"vdc.app.{prefix}")
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip()
        logger.log(level, "%s", text, extra={"prefix": prefix})
        if sink is not None:
            sink.write(text + "\n")
        if tail is not None:
            tail.append(text)
            del tail[:-20]


async def stop_process_group(pid: int, start: int | None, grace: float = STOP_GRACE) -> bool:
    """SIGTERM the group, SIGKILL it after `grace`; False if that process was already gone."""
    if start is not None and process_start_time(pid) != start:
        return False  # exited, and the pid may belong to someone else now
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    # Polling /proc: after a killed run the process is not our child, so nothing to await.
    while time.monotonic() < deadline and _alive(pid, start):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


def _alive(pid: int, start: int | None) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return False
    return start is None or int(fields[19]) == start


async def run_init_scripts(
    netns: str, scripts: Sequence[Path], ledger: Ledger, cwd: Path | None = None
) -> None:
    """Run a namespace's init-scripts in order; the first failure aborts with its output."""
    for script in scripts:
        prefix = f"{netns}/{script.name}"
        proc = await _spawn(netns, [str(script)], ledger, label=prefix, cwd=cwd)
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
    log_path: Path | None = None
    """Where its output goes, line by line (kept after the run, like console logs)."""
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

    An app's output goes to its log file and to the log at debug level (`vdc run -v`): a
    boot server's dnsmasq would otherwise bury what a person follows in the terminal. When
    an app fails, its last lines come with the error.

    `on_fatal` is called when an app exits in a way its policy does not absorb: with
    restart "no", any non-zero exit (as Placemat: the whole run stops). An exit with 0 under
    "no" is reported and the run goes on, also as Placemat.
    """

    def __init__(
        self,
        ledger: Ledger,
        on_fatal: Callable[[str], Awaitable[None] | None],
        cwd: Path | None = None,
    ) -> None:
        self.ledger = ledger
        self.cwd = cwd
        self.on_fatal = on_fatal
        self.apps: list[AppState] = []
        self._procs: dict[int, tuple[asyncio.subprocess.Process, int | None]] = {}
        self._stopping = False

    async def start(self, app: AppState) -> None:
        self.apps.append(app)
        proc = await self._launch(app)
        app._task = asyncio.create_task(self._watch(app, proc), name=f"app {app.label}")

    async def _launch(self, app: AppState) -> asyncio.subprocess.Process:
        try:
            proc = await _spawn(app.netns, app.command, self.ledger, label=app.label, cwd=self.cwd)
        except OSError as exc:
            app.state = "failed"
            raise RuntimeError(f"app {app.label}: cannot start {app.command[0]}: {exc}") from exc
        app.pid, app.state, app.started_at = proc.pid, "running", time.time()
        self._procs[proc.pid] = (proc, process_start_time(proc.pid))
        log.info("app %s started (pid %d)", app.label, proc.pid)
        return proc

    async def _watch(self, app: AppState, proc: asyncio.subprocess.Process) -> None:
        if app.log_path is None:
            await self._supervise(app, proc, None)
            return
        app.log_path.parent.mkdir(parents=True, exist_ok=True)
        with app.log_path.open("a", buffering=1, errors="replace") as sink:
            await self._supervise(app, proc, sink)

    async def _supervise(
        self, app: AppState, proc: asyncio.subprocess.Process, sink: TextIO | None
    ) -> None:
        backoff = 1.0
        tail: list[str] = []
        while True:
            assert proc.stdout is not None
            await _pump(proc.stdout, app.label, tail, sink, logging.DEBUG)
            code = await proc.wait()
            self._procs.pop(proc.pid, None)
            app.exit_code = code
            if self._stopping:
                app.state = "stopped"
                return
            restart = app.restart == "always" or (app.restart == "on-failure" and code != 0)
            if not restart:
                app.state = "exited" if code == 0 else "failed"
                if code == 0:
                    log.warning("app %s exited with 0; the run goes on without it", app.label)
                else:
                    last = ("; last output: " + " | ".join(tail[-5:])) if tail else ""
                    where = f" (all of it in {app.log_path})" if app.log_path else ""
                    log.error("app %s exited with %d%s%s", app.label, code, last, where)
                    result = self.on_fatal(f"app {app.label} exited with {code}{last}")
                    if result is not None:
                        await result
                return
            app.state = "restarting"
            uptime = time.time() - (app.started_at or time.time())
            backoff = 1.0 if uptime > RESTART_BACKOFF_MAX else min(backoff * 2, RESTART_BACKOFF_MAX)
            log.warning("app %s exited with %d; restarting in %.0f s", app.label, code, backoff)
            await asyncio.sleep(backoff)
            if self._stopping:
                app.state = "stopped"
                return
            app.restarts += 1
            try:
                proc = await self._launch(app)
            except RuntimeError as exc:
                result = self.on_fatal(str(exc))
                if result is not None:
                    await result
                return

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(
            *(stop_process_group(pid, start) for pid, (_, start) in list(self._procs.items()))
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
