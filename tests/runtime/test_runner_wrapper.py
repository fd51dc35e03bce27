"""`vdc runner`: the runner's console lines as states, and the wrapper around a fake runner."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vdc_runtime.runner import (
    JobCompleted,
    JobStarted,
    Listening,
    RunnerState,
    apply_exit,
    apply_line,
    exit_status,
    initial_state,
    parse_line,
    write_state,
)

VDC = [sys.executable, "-m", "vdc_runtime.cli"]

# --- the pure part ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "milestone"),
    [
        ("2024-05-01 10:00:00Z: Listening for Jobs\n", Listening()),
        ("Listening for Jobs", Listening()),
        ("2024-05-01 10:00:05Z: Running job: build\r\n", JobStarted("build")),
        ("Running job: test (ubuntu-22.04, 3.11)", JobStarted("test (ubuntu-22.04, 3.11)")),
        ("2024-05-01 10:01:00Z: Job build completed with result: Succeeded",
         JobCompleted("build", "succeeded")),
        ("Job test (a, b) completed with result: Failed", JobCompleted("test (a, b)", "failed")),
        ("Job build completed with result: Canceled", JobCompleted("build", "cancelled")),
        ("Job build completed with result: SucceededWithIssues",
         JobCompleted("build", "succeeded")),
        ("Job build completed with result: Abandoned", JobCompleted("build", "failed")),
    ],
)  # fmt: skip
def test_parse_line_reads_the_real_runners_milestones(line: str, milestone: object) -> None:
    assert parse_line(line) == milestone


@pytest.mark.parametrize(
    "line",
    [
        "",
        "√ Connected to GitHub",
        "Current runner version: '2.317.0'",
        "Job build completed with result: Bogus",
        # A job's own output, as a runner or the stand-in prints it, is not a milestone.
        "2024-05-01T10:00:05.1234567Z Running job: fake",
        "  Listening for Jobs",
        "echo Listening for Jobs",
        "Running job: ",
    ],
)
def test_parse_line_ignores_everything_else(line: str) -> None:
    assert parse_line(line) is None


def test_a_single_use_runners_life() -> None:
    state = initial_state("r1", 100.0)
    assert (state.phase, state.job, state.result, state.exit_code) == ("Starting", None, None, None)
    state = apply_line(state, "√ Connected to GitHub", 101.0)
    assert state.phase == "Starting"
    state = apply_line(state, "2024-05-01 10:00:00Z: Listening for Jobs", 102.0)
    assert state.phase == "Listening"
    state = apply_line(state, "2024-05-01 10:00:05Z: Running job: build", 103.0)
    assert (state.phase, state.job, state.job_started_at) == ("Busy", "build", 103.0)
    state = apply_line(state, "2024-05-01 10:01:00Z: Job build completed with result: Failed", 104)
    assert (state.phase, state.result) == ("Busy", "failed")
    state = apply_exit(state, 0, 105.0)
    assert state == RunnerState(name="r1", started_at=100.0, phase="Finished", job="build",
                                result="failed", exit_code=0, job_started_at=103.0,
                                ended_at=105.0)  # fmt: skip


def test_a_failed_exit_keeps_the_job_result_and_nothing_changes_afterwards() -> None:
    state = initial_state("r1", 1.0)
    for line in ("Listening for Jobs", "Running job: j", "Job j completed with result: Succeeded"):
        state = apply_line(state, line, 2.0)
    state = apply_exit(state, 1, 3.0)
    assert (state.phase, state.result, state.exit_code, state.ended_at) == (
        "Failed", "succeeded", 1, 3.0)  # fmt: skip
    assert apply_line(state, "Running job: other", 4.0) == state
    assert apply_exit(state, 0, 5.0) == state


def test_a_new_job_clears_the_last_result_and_listening_keeps_it() -> None:
    state = initial_state("r1", 1.0)
    for line in ("Running job: a", "Job a completed with result: Failed", "Listening for Jobs"):
        state = apply_line(state, line, 2.0)
    assert (state.phase, state.job, state.result) == ("Listening", "a", "failed")
    state = apply_line(state, "Running job: b", 3.0)
    assert (state.phase, state.job, state.result, state.job_started_at) == ("Busy", "b", None, 3.0)


def test_exit_without_any_milestone_fails_without_a_job() -> None:
    state = apply_exit(initial_state("r1", 1.0), 143, 2.0)
    assert (state.phase, state.job, state.result, state.exit_code) == ("Failed", None, None, 143)


def test_exit_status_of_a_signalled_process_is_128_plus_the_signal() -> None:
    assert exit_status(-signal.SIGTERM) == 143
    assert exit_status(-signal.SIGKILL) == 137
    assert exit_status(3) == 3


def test_state_file_is_written_whole_with_its_fields_in_order(tmp_path: Path) -> None:
    path = tmp_path / "r1.json"
    write_state(path, initial_state("r1", 1.5))
    write_state(path, apply_line(initial_state("r1", 1.5), "Running job: j", 2.5))
    assert [p.name for p in tmp_path.iterdir()] == ["r1.json"]
    assert json.loads(path.read_text()) == {
        "name": "r1", "phase": "Busy", "job": "j", "result": None, "exit_code": None,
        "started_at": 1.5, "job_started_at": 2.5, "ended_at": None,
    }  # fmt: skip
    order = ["name", "phase", "job", "result", "exit_code", "started_at", "job_started_at",
             "ended_at"]  # fmt: skip
    assert list(json.loads(path.read_text())) == order


# --- the wrapper, around a fake runner ------------------------------------------------------

# Prints what the real runner prints, each milestone only once the test creates a gate file,
# so the test sees every state in turn. argv: GATE_DIR RESULT EXIT_CODE
FAKE_RUNNER = """
import os, sys, time
gates, result, code = sys.argv[1], sys.argv[2], int(sys.argv[3])
def wait(name):
    while not os.path.exists(os.path.join(gates, name)):
        time.sleep(0.02)
print("√ Connected to GitHub", flush=True)
print("2024-05-01 10:00:00Z: Listening for Jobs", flush=True)
wait("job")
print("2024-05-01 10:00:05Z: Running job: build (linux)", flush=True)
print("a line on stderr", file=sys.stderr, flush=True)
wait("done")
print(f"2024-05-01 10:01:00Z: Job build (linux) completed with result: {result}", flush=True)
wait("exit")
sys.exit(code)
"""


class Wrapper:
    def __init__(self, tmp_path: Path, command: list[str], *options: str) -> None:
        self.state_file = tmp_path / "state" / "r1.json"
        self.stdout = tmp_path / "stdout"
        self.stderr = tmp_path / "stderr"
        argv = [*VDC, "runner", "--name", "r1", "--state-dir", str(tmp_path / "state"),
                *options, "--", *command]  # fmt: skip
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=err)

    def state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def wait_state(self, ok: Callable[[dict[str, Any]], bool], timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if state is not None and ok(state):
                return state
            assert self.proc.poll() is None, f"vdc runner exited: {self.stderr.read_text()}"
            if time.monotonic() > deadline:
                raise AssertionError(f"state stayed {state}; stderr: {self.stderr.read_text()}")
            time.sleep(0.05)

    def assert_stays_up(self, seconds: float = 0.7) -> None:
        time.sleep(seconds)
        assert self.proc.poll() is None, self.stderr.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def wrappers() -> Iterator[list[Wrapper]]:
    started: list[Wrapper] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def fake(gates: Path, result: str, code: int) -> list[str]:
    gates.mkdir()
    return [sys.executable, "-c", FAKE_RUNNER, str(gates), result, str(code)]


def test_wrapper_records_each_phase_and_waits_for_sigterm_after_the_runner_exits(
    tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    gates = tmp_path / "gates"
    w = Wrapper(tmp_path, fake(gates, "Succeeded", 0))
    wrappers.append(w)
    state = w.wait_state(lambda s: s["phase"] == "Listening")
    assert state["name"] == "r1" and state["job"] is None and state["exit_code"] is None
    (gates / "job").touch()
    state = w.wait_state(lambda s: s["phase"] == "Busy")
    assert (state["job"], state["result"]) == ("build (linux)", None)
    assert state["job_started_at"] >= state["started_at"]
    (gates / "done").touch()
    state = w.wait_state(lambda s: s["result"] is not None)
    assert (state["phase"], state["result"]) == ("Busy", "succeeded")
    (gates / "exit").touch()
    state = w.wait_state(lambda s: s["phase"] == "Finished")
    assert (state["exit_code"], state["result"], state["job"]) == (0, "succeeded", "build (linux)")
    assert state["ended_at"] >= state["job_started_at"]

    w.assert_stays_up()
    assert w.stop() == 0
    assert w.state() == state
    out = w.stdout.read_text()
    assert out.index("Listening for Jobs") < out.index("Running job: build (linux)")
    assert out.index("Running job") < out.index("completed with result: Succeeded")
    assert "a line on stderr" in w.stderr.read_text()


def test_a_runner_exiting_non_zero_fails_and_its_job_result_is_kept(
    tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    gates = tmp_path / "gates"
    w = Wrapper(tmp_path, fake(gates, "Failed", 1))
    wrappers.append(w)
    for gate in ("job", "done", "exit"):
        (gates / gate).touch()
    state = w.wait_state(lambda s: s["phase"] == "Failed")
    assert (state["exit_code"], state["result"], state["job"]) == (1, "failed", "build (linux)")
    w.assert_stays_up()
    assert w.stop() == 0


def test_sigterm_while_the_runner_runs_is_passed_on_to_it(
    tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = Wrapper(tmp_path, fake(tmp_path / "gates", "Succeeded", 0))
    wrappers.append(w)
    w.wait_state(lambda s: s["phase"] == "Listening")
    started = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - started < 5
    state = w.state()
    assert state is not None
    assert (state["phase"], state["exit_code"], state["result"]) == ("Failed", 143, None)


def test_a_runner_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    script = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
              "print('Listening for Jobs', flush=True); time.sleep(60)")  # fmt: skip
    w = Wrapper(tmp_path, [sys.executable, "-c", script], "--kill-after", "0.5")
    wrappers.append(w)
    w.wait_state(lambda s: s["phase"] == "Listening")
    assert w.stop() == 0
    state = w.state()
    assert state is not None
    assert (state["phase"], state["exit_code"]) == ("Failed", 137)
    assert "killing it" in w.stderr.read_text()


def test_a_command_that_cannot_run_fails_and_the_wrapper_still_waits(
    tmp_path: Path, wrappers: list[Wrapper]
) -> None:
    w = Wrapper(tmp_path, [str(tmp_path / "no-such-runner"), "--jitconfig", "x"])
    wrappers.append(w)
    state = w.wait_state(lambda s: s["phase"] == "Failed")
    assert state["exit_code"] == 127
    w.assert_stays_up(0.3)
    assert w.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--name", "r1"], "no command"),
        (["--name", "r1", "--"], "no command"),
        (["--name", "a/b", "--", "true"], "cannot name a state file"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run([*VDC, "runner", "--state-dir", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert message in done.stderr
    assert list(tmp_path.iterdir()) == []


# -- what a runner container needs ------------------------------------------------------------

RUNTIME_SRC = Path(__file__).resolve().parents[2] / "runtime"
# The interpreter without site-packages (-S) and with only vdc's own source on the path:
# what images/runner/Containerfile installs (vdc with --no-deps).
BARE = [sys.executable, "-S", "-m", "vdc_runtime.cli"]


def _bare_env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(RUNTIME_SRC)}


def test_runner_and_client_commands_need_only_the_standard_library(tmp_path: Path) -> None:
    argv = [*BARE, "runner", "--name", "r1", "--state-dir", str(tmp_path), "--", "true"]
    proc = subprocess.Popen(argv, env=_bare_env(), stderr=subprocess.PIPE, text=True)
    try:
        state = tmp_path / "r1.json"
        deadline = time.monotonic() + 30
        while not (state.exists() and json.loads(state.read_text())["phase"] == "Finished"):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the runner's command never finished"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # it waits for the pod's SIGTERM after its command
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    # The client commands a job uses: no agent listens on this port, so they fail, by
    # saying so rather than with an import error.
    for args in (["node", "list"], ["keep", "1h"], ["node", "console-log", "n1"]):
        argv = [*BARE, *args, "--endpoint", "http://127.0.0.1:9"]
        done = subprocess.run(argv, env=_bare_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr, done.stderr
        assert "127.0.0.1:9" in done.stderr, done.stderr
