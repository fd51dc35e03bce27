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
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vdc_runtime.fabric.netns import netns_path
from vdc_runtime.ledger import Ledger

log = logging.getLogger("vdc.procs")

INIT_SCRIPT_TIMEOUT = 300.0
STOP_GRACE = 5.0
RESTART_BACKOFF_MAX = 30.0
FOLLOW_INTERVAL = 0.25


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


def process_started_at(start: int | None) -> float | None:
    """Wall-clock time of a start time in clock ticks since boot (`process_start_time`)."""
    if start is None:
        return None
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) + start / os.sysconf("SC_CLK_TCK")
    return None


def _in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return ["nsenter", f"--net={netns_path(netns)}", "--", *argv]


async def _spawn(
    netns: str,
    argv: Sequence[str],
    ledger: Ledger,
    label: str,
    cwd: Path | None = None,
    output: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start `argv` in `netns`, its output into the file `output` (`open_output`), or
    into a pipe to this process when None (init-scripts, which it waits for)."""
    fd = open_output(output) if output is not None else None
    try:
        proc = await asyncio.create_subprocess_exec(
            *_in_netns(netns, argv),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd if fd is not None else asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own process group, so stopping it also stops whatever it started.
            start_new_session=True,
        )
    finally:
        if fd is not None:
            os.close(fd)
    ledger.record("process", pid=proc.pid, start=process_start_time(proc.pid), label=label)
    return proc


def open_output(path: Path) -> int:
    """A long-lived child's stdout and stderr: a file it appends to itself. Through a pipe,
    the child would die of SIGPIPE at its next line once this process is gone (killed, or
    restarted), and what it printed meanwhile would be lost; a file keeps both."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


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
    while time.monotonic() < deadline and running(pid, start):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


async def wait_gone(pid: int, start: int | None) -> None:
    """Return when the process exits, whoever's child it is: one an earlier run started,
    which this run adopts, cannot be awaited as a child; its pidfd becomes readable when
    it ends. (Its exit code goes to its reaper, not to us.) At once when it is gone
    already, or the pid now names another process (`start` differs)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        if not running(pid, start):
            return
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        loop.add_reader(fd, lambda: ended.done() or ended.set_result(None))
        try:
            await ended
        finally:
            loop.remove_reader(fd)
    finally:
        os.close(fd)


def running(pid: int, start: int | None) -> bool:
    """The process runs (not a zombie) and is the one started at `start`."""
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
        self._running: dict[int, int | None] = {}
        """Start times of the apps' processes that run, by pid: this run's children and
        those it adopted from a killed run alike."""
        self._stopping = False

    def records(self) -> dict[str, tuple[int, int | None, int]]:
        """Each running app's pid, start time and restarts, by label (`runstate`)."""
        return {
            app.label: (app.pid, self._running[app.pid], app.restarts)
            for app in self.apps
            if app.pid is not None and app.pid in self._running
        }

    async def adopt(self, app: AppState, pid: int, start: int | None, restarts: int) -> None:
        """Take over an app that a killed run started: followed until it ends, then its
        restart policy applies as to any other exit (one that ended while no run watched
        is found at once). Its exit code went to another parent: it counts as a failure."""
        self.apps.append(app)
        app.pid, app.state, app.restarts = pid, "running", restarts
        app.started_at = process_started_at(start)
        self._running[pid] = start
        watch = self._watch_adopted(app, pid, start)
        app._task = asyncio.create_task(watch, name=f"app {app.label}")

    async def start(self, app: AppState) -> None:
        self.apps.append(app)
        proc = await self._launch(app)
        app._task = asyncio.create_task(self._watch(app, proc), name=f"app {app.label}")

    async def _launch(self, app: AppState) -> asyncio.subprocess.Process:
        try:
            proc = await _spawn(
                app.netns, app.command, self.ledger, label=app.label, cwd=self.cwd,
                output=app.log_path,
            )  # fmt: skip
        except OSError as exc:
            app.state = "failed"
            raise RuntimeError(f"app {app.label}: cannot start {app.command[0]}: {exc}") from exc
        app.pid, app.state, app.started_at = proc.pid, "running", time.time()
        self._running[proc.pid] = process_start_time(proc.pid)
        log.info("app %s started (pid %d)", app.label, proc.pid)
        return proc

    @staticmethod
    def _follow(app: AppState) -> OutputFollower:
        # Its output to the log at debug level (`vdc run -v`): a boot server's dnsmasq
        # would otherwise bury what a person follows in the terminal.
        output = OutputFollower(app.log_path, app.label, f"vdc.app.{app.label}", logging.DEBUG)
        output.start()
        return output

    async def _watch(self, app: AppState, proc: asyncio.subprocess.Process) -> None:
        output = self._follow(app)
        try:
            await self._supervise(app, proc, output)
        finally:
            await output.close()

    async def _watch_adopted(self, app: AppState, pid: int, start: int | None) -> None:
        output = self._follow(app)
        try:
            await wait_gone(pid, start)
            self._running.pop(pid, None)
            app.exit_code = None
            if self._stopping:
                app.state = "stopped"
                return
            if app.restart == "no":
                app.state = "failed"
                message = f"app {app.label} (pid {pid}, adopted) exited{_last(output)}"
                log.error("%s", message)
                await self._fail(message)
                return
            log.warning("app %s (pid %d, adopted) exited; restarting it", app.label, pid)
            proc = await self._relaunch(app)
            if proc is not None:
                await self._supervise(app, proc, output)
        finally:
            await output.close()

    async def _fail(self, message: str) -> None:
        result = self.on_fatal(message)
        if result is not None:
            await result

    async def _relaunch(self, app: AppState) -> asyncio.subprocess.Process | None:
        """The app started again, or None (the run failed, saying why)."""
        app.restarts += 1
        try:
            return await self._launch(app)
        except RuntimeError as exc:
            await self._fail(str(exc))
            return None

    async def _supervise(
        self, app: AppState, proc: asyncio.subprocess.Process, output: OutputFollower
    ) -> None:
        backoff = 1.0
        while True:
            code = await proc.wait()
            self._running.pop(proc.pid, None)
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
                    last = _last(output)
                    where = f" (all of it in {app.log_path})"
                    log.error("app %s exited with %d%s%s", app.label, code, last, where)
                    await self._fail(f"app {app.label} exited with {code}{last}")
                return
            app.state = "restarting"
            uptime = time.time() - (app.started_at or time.time())
            backoff = 1.0 if uptime > RESTART_BACKOFF_MAX else min(backoff * 2, RESTART_BACKOFF_MAX)
            log.warning("app %s exited with %d; restarting in %.0f s", app.label, code, backoff)
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
        tasks = [app._task for app in self.apps if app._task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        self._stopping = True
        await asyncio.gather(
            *(stop_process_group(pid, start) for pid, start in list(self._running.items()))
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
