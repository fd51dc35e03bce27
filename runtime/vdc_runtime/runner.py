"""`vdc runner`: run a GitHub Actions runner and keep a record of its life for the agent.

A VirtualDataCenter pod runs self-hosted runners in containers beside the agent's. The agent
has to tell whether each runner is still waiting for its job, running it, or done, and how the
job ended, without talking to GitHub and without the runner's help: the runner offers no API,
only its console. So this wrapper runs the runner, passes its output through unchanged (it
stays what `kubectl logs` shows), reads the milestones the runner prints and keeps them in a
small JSON file in a directory the containers share.

It also keeps the container alive after the runner exits. A JIT runner runs one job and exits
0; in a pod whose restartPolicy is Always the kubelet would start it again, and its used JIT
config would be refused. The wrapper instead waits, with the final state on record, until the
pod is deleted (SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO, Literal

log = logging.getLogger("vdc.runner")


class RunnerPhase(StrEnum):
    """A runner container's phase, as `vdc runner` records it and the status shows it."""

    STARTING = "Starting"
    LISTENING = "Listening"
    BUSY = "Busy"
    FINISHED = "Finished"
    FAILED = "Failed"

    @classmethod
    def read(cls, text: object) -> RunnerPhase:
        """The phase a state file names; one this version does not know is a failure."""
        try:
            return cls(str(text).capitalize())
        except ValueError:
            return cls.FAILED


Result = Literal["succeeded", "failed", "cancelled"]

KILL_AFTER = 25.0
"""Seconds the runner gets to cancel its job after SIGTERM: within a pod's default 30 s grace
period, so the kubelet's SIGKILL does not come before ours and the final state is written."""

PUMP_DRAIN = 2.0
"""Seconds to finish reading output after the runner exited (a leftover process holding the
pipes open must not keep the state from being written)."""

# The actions/runner console lines this wrapper understands (Runner.Listener: Runner.cs,
# JobDispatcher.cs). They are what users and tools watching a runner rely on and have been
# stable for years. Each starts with a "yyyy-MM-dd HH:mm:ssZ: " UTC timestamp, optional here.
# Anchoring at the line's start keeps a job's own output, when a runner prints it indented or
# prefixed, from passing for a milestone.
_STAMP = r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: )?"
LISTENING = re.compile(_STAMP + r"Listening for Jobs\s*$")
RUNNING_JOB = re.compile(_STAMP + r"Running job: (?P<job>.+?)\s*$")
JOB_COMPLETED = re.compile(
    _STAMP + r"Job (?P<job>.+) completed with result: (?P<result>[A-Za-z]+)\s*$"
)
RESULTS: dict[str, Result] = {
    # The runner's TaskResult names; it spells "Canceled" the American way.
    "Succeeded": "succeeded",
    "SucceededWithIssues": "succeeded",
    "Failed": "failed",
    "Abandoned": "failed",
    "Canceled": "cancelled",
}


@dataclass(frozen=True)
class Listening:
    pass


@dataclass(frozen=True)
class JobStarted:
    job: str


@dataclass(frozen=True)
class JobCompleted:
    job: str
    result: Result


Milestone = Listening | JobStarted | JobCompleted


def parse_line(line: str) -> Milestone | None:
    """The milestone a line of the runner's output reports, if any."""
    line = line.rstrip("\r\n")
    if LISTENING.match(line):
        return Listening()
    if m := RUNNING_JOB.match(line):
        return JobStarted(m["job"])
    if (m := JOB_COMPLETED.match(line)) and m["result"] in RESULTS:
        return JobCompleted(m["job"], RESULTS[m["result"]])
    return None


@dataclass(frozen=True)
class RunnerState:
    name: str
    started_at: float
    phase: RunnerPhase = RunnerPhase.STARTING
    job: str | None = None
    result: Result | None = None
    exit_code: int | None = None
    job_started_at: float | None = None
    ended_at: float | None = None

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        order = ("name", "phase", "job", "result", "exit_code", "started_at",
                 "job_started_at", "ended_at")  # fmt: skip
        return {key: d[key] for key in order}

    @property
    def ended(self) -> bool:
        return self.phase in (RunnerPhase.FINISHED, RunnerPhase.FAILED)


def initial_state(name: str, now: float) -> RunnerState:
    return RunnerState(name=name, started_at=now)


def apply_milestone(state: RunnerState, milestone: Milestone | None, now: float) -> RunnerState:
    if milestone is None or state.ended:
        return state
    match milestone:
        case Listening():
            # A runner that is not single-use listens again after a job; the last job's name
            # and result stay on record until the next one starts.
            return replace(state, phase=RunnerPhase.LISTENING)
        case JobStarted(job):
            return replace(state, phase=RunnerPhase.BUSY, job=job, result=None, job_started_at=now)
        case JobCompleted(job, result):
            # Still busy: the runner reports the result to GitHub after printing it.
            return replace(state, job=state.job or job, result=result)
    return state


def apply_line(state: RunnerState, line: str, now: float) -> RunnerState:
    return apply_milestone(state, parse_line(line), now)


def apply_exit(state: RunnerState, exit_code: int, now: float) -> RunnerState:
    if state.ended:
        return state
    phase = RunnerPhase.FINISHED if exit_code == 0 else RunnerPhase.FAILED
    return replace(state, phase=phase, exit_code=exit_code, ended_at=now)


def _now() -> float:
    return round(time.time(), 3)


def exit_status(returncode: int) -> int:
    """A process's exit status as a shell or the kubelet reports it (killed by signal N: 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


def write_state(path: Path, state: RunnerState) -> None:
    # Readers (the agent) must never see a half-written file: write beside it, then rename.
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state.to_json()) + "\n")
    os.replace(tmp, path)


def state_path(state_dir: Path, name: str) -> Path:
    return state_dir / f"{name}.json"


class _Recorder:
    def __init__(self, path: Path, state: RunnerState) -> None:
        self.path = path
        self.state = state
        path.parent.mkdir(parents=True, exist_ok=True)
        write_state(path, state)

    def update(self, state: RunnerState) -> None:
        if state != self.state:
            self.state = state
            write_state(self.path, state)


async def _pump(reader: asyncio.StreamReader, out: BinaryIO, recorder: _Recorder) -> None:
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            line = exc.partial
        except asyncio.LimitOverrunError as exc:
            # An endless line is passed on in pieces; it is no milestone anyway.
            line = await reader.readexactly(exc.consumed)
        if not line:
            return
        out.write(line)
        out.flush()
        recorder.update(apply_line(recorder.state, line.decode(errors="replace"), _now()))


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def run_runner(
    name: str, state_dir: Path, command: Sequence[str], kill_after: float = KILL_AFTER
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals: list[int] = []

    def on_signal(sig: int) -> None:
        signals.append(sig)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)

    recorder = _Recorder(state_path(state_dir, name), initial_state(name, _now()))
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # Its own group: a terminal's Ctrl-C reaches it only through us (once), and what
            # it leaves behind can be stopped with it.
            start_new_session=True,
            limit=1 << 20,
        )
    except OSError as exc:
        log.error("cannot run %s: %s", command[0], exc)
        # 127 and 126 are what a shell reports for a missing and a non-executable command.
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        recorder.update(apply_exit(recorder.state, code, _now()))
    else:
        assert proc.stdout is not None and proc.stderr is not None
        pumps = [
            asyncio.create_task(_pump(proc.stdout, sys.stdout.buffer, recorder)),
            asyncio.create_task(_pump(proc.stderr, sys.stderr.buffer, recorder)),
        ]
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not exited.done():
            sig = signals[0]
            log.info("%s: passing %s on to the runner", name, signal.Signals(sig).name)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                await asyncio.wait_for(asyncio.shield(exited), kill_after)
            except TimeoutError:
                log.warning("%s: runner still running %.0f s after %s: killing it",
                            name, kill_after, signal.Signals(sig).name)  # fmt: skip
                _kill_group(proc.pid, signal.SIGKILL)
                await exited
        stopping.cancel()
        # A single-use runner's leftovers would otherwise run on (and hold our pipes open)
        # while the container idles.
        _kill_group(proc.pid, signal.SIGKILL)
        _, pending = await asyncio.wait(pumps, timeout=PUMP_DRAIN)
        for task in pending:
            task.cancel()
        code = exit_status(exited.result())
        recorder.update(apply_exit(recorder.state, code, _now()))

    state = recorder.state
    if not stop.is_set():
        log.info("%s: runner exited with %d (%s, job %s, result %s); waiting for SIGTERM",
                 name, code, state.phase, state.job, state.result)  # fmt: skip
        await stop.wait()
    return 0
