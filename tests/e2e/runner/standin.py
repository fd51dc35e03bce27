#!/usr/bin/env python3
"""A stand-in for the GitHub Actions runner, for e2e tests, which cannot reach GitHub.

    vdc-standin-runner --jitconfig ENCODED_JIT_CONFIG

Invoked like the real runner's `run.sh --jitconfig`, with the JIT config GitHub hands out
(`encoded_jit_config`), it talks to the actions service the config names: a local fake
GitHub (tests/github/fake_github.py) instead of GitHub's broker. What it does, in order:

- checks the JIT config the way the real runner would (exit 1 with a message if it is bad);
- `POST {ServerUrl}{AgentId}/connect` with the config's OAuth token as a Bearer token
  (409: the config was used already, which a JIT runner refuses: exit 1);
- polls `GET {ServerUrl}{AgentId}/job` every second until it gets a job (204: none yet);
- runs the job's steps with `bash -eo pipefail -c RUN` in the config's WorkFolder, honouring
  a step's `if: success()` (the default), `failure()` or `always()`; steps skipped by their
  condition are left out of the result;
- `POST {ServerUrl}{AgentId}/result` with `{"result", "steps": [{"name", "exit_code",
  "output"}]}`, then exits 0, as the real runner does after its single JIT job.

It prints the real runner's console milestones (`√ Connected to GitHub`, `Listening for
Jobs`, `Running job: NAME`, `Job NAME completed with result: Succeeded|Failed`), so that
`vdc runner` follows it as it follows the real one, and the steps' output in the job log's
format. SIGTERM cancels the job (result Canceled on the console, nothing posted; exit 143).

The service's certificate is not checked (the fake's is self-signed) unless VDC_STANDIN_CA
names a CA file. Only the standard library: it runs in any image with python3.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import datetime
import io
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROG = "vdc-standin-runner"
POLL_INTERVAL = 1.0
HTTP_TIMEOUT = 30.0
UNREACHABLE_FOR = 30.0
"""Seconds the service may be unreachable at connect and result time before the runner gives
up (a pod can start before the fake GitHub answers)."""
OUTPUT_DRAIN = 2.0
"""Seconds to wait, once a step's shell exited, for output a background process still
writes; the process itself runs on until the job ends, as in Actions."""
CONDITIONS = ("success", "failure", "always")

_print_lock = threading.Lock()


class Fatal(Exception):
    """The runner cannot go on: its message is printed and it exits 1."""


class JitConfigError(Fatal):
    pass


class JobError(Exception):
    """A job the runner cannot run as given: it fails in its set-up."""


class Cancelled(BaseException):
    """SIGTERM or SIGINT: raised in the main thread wherever it is."""


@dataclass(frozen=True)
class RunnerConfig:
    agent_id: int
    agent_name: str
    pool_id: int
    pool_name: str
    server_url: str
    github_url: str
    work_folder: str
    labels: list[str]
    token: str


@dataclass(frozen=True)
class Step:
    name: str
    run: str
    condition: str
    env: dict[str, str]


@dataclass(frozen=True)
class Job:
    name: str
    steps: list[Step]
    env: dict[str, str]


def say(text: str) -> None:
    with _print_lock:
        print(text, flush=True)


def console_stamp() -> str:
    """The real runner's console timestamp, `2024-05-01 10:00:00Z: `."""
    return time.strftime("%Y-%m-%d %H:%M:%SZ: ", time.gmtime())


def log_stamp() -> str:
    """The job log's timestamp, `2024-05-01T10:00:00.1234567Z `."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z "


# --- the JIT config ---------------------------------------------------------------------


def _b64_json(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, str):
        raise JitConfigError(f"{what} is not a string")
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise JitConfigError(f"{what} is not base64 ({exc})") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise JitConfigError(f"{what} is base64, but not of JSON") from None
    if not isinstance(data, dict):
        raise JitConfigError(f"{what} is not a JSON object")
    return data


def _field(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise JitConfigError(f"{where} has no {key!r}")
    value = obj[key]
    # JSON's true and false are ints to Python; an id is never one.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise JitConfigError(f"{where}: {key!r} is not a {kind.__name__}: {value!r}")
    return value


def decode_jit_config(encoded: str) -> RunnerConfig:
    outer = _b64_json(encoded, "the JIT config")
    for key in (".runner", ".credentials", ".credentials_rsaparams"):
        if key not in outer:
            raise JitConfigError(f"the JIT config has no {key!r}")
    runner = _b64_json(outer[".runner"], ".runner")
    credentials = _b64_json(outer[".credentials"], ".credentials")
    _b64_json(outer[".credentials_rsaparams"], ".credentials_rsaparams")

    server_url = _field(runner, "ServerUrl", str, ".runner")
    url = urllib.parse.urlsplit(server_url)
    if url.scheme not in ("https", "http") or not url.netloc:
        raise JitConfigError(f".runner: 'ServerUrl' is not an http(s) URL: {server_url!r}")
    labels = _field(runner, "Labels", list, ".runner")
    if not all(isinstance(label, str) for label in labels):
        raise JitConfigError(f".runner: 'Labels' is not a list of strings: {labels!r}")
    if _field(credentials, "Scheme", str, ".credentials") != "OAuth":
        raise JitConfigError(f".credentials: 'Scheme' is not 'OAuth': {credentials['Scheme']!r}")
    data = _field(credentials, "Data", dict, ".credentials")
    for key in ("clientId", "authorizationUrl"):
        _field(data, key, str, ".credentials Data")
    if "requireFipsCryptography" in data:
        _field(data, "requireFipsCryptography", str, ".credentials Data")
    token = _field(data, "token", str, ".credentials Data")
    if not token:
        raise JitConfigError(".credentials Data: 'token' is empty")
    return RunnerConfig(
        agent_id=_field(runner, "AgentId", int, ".runner"),
        agent_name=_field(runner, "AgentName", str, ".runner"),
        pool_id=_field(runner, "PoolId", int, ".runner"),
        pool_name=_field(runner, "PoolName", str, ".runner"),
        server_url=server_url,
        github_url=_field(runner, "GitHubUrl", str, ".runner"),
        work_folder=_field(runner, "WorkFolder", str, ".runner"),
        labels=labels,
        token=token,
    )


# --- the actions service ----------------------------------------------------------------


def _ssl_context() -> ssl.SSLContext:
    ca = os.environ.get("VDC_STANDIN_CA")
    if ca:
        try:
            return ssl.create_default_context(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise Fatal(f"VDC_STANDIN_CA={ca}: {exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Service:
    def __init__(self, config: RunnerConfig) -> None:
        self.base = f"{config.server_url.rstrip('/')}/{config.agent_id}/"
        self.token = config.token
        # No proxy: the service is the fake on the pod's or the test's own network, and a
        # proxy set for the image's package downloads must not take these requests.
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=_ssl_context())
        )

    def call(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """Status and body of a request; raises OSError when the service cannot be reached."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                   "User-Agent": PROG}  # fmt: skip
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        try:
            with self.opener.open(request, timeout=HTTP_TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()

    def call_patiently(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        """call(), retried while the service is unreachable or failing, for a while."""
        deadline = time.monotonic() + UNREACHABLE_FOR
        while True:
            try:
                status, answer = self.call(method, path, body)
                problem = f"HTTP {status}"
                if status < 500:
                    return status, answer
            except OSError as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, ssl.SSLError):
                    raise Fatal(f"{method} {self.base}{path}: {reason}") from None
                problem = str(reason)
            if time.monotonic() > deadline:
                raise Fatal(f"{method} {self.base}{path}: {problem}; gave up")
            time.sleep(1)


def _excerpt(body: bytes) -> str:
    return body.decode(errors="replace").strip()[:300]


def connect(service: Service, config: RunnerConfig) -> None:
    status, body = service.call_patiently(
        "POST", "connect", {"name": config.agent_name, "labels": config.labels}
    )
    if status == 409:
        raise Fatal("this JIT config was used already, and a JIT runner runs one job only: "
                    f"get a new one ({_excerpt(body)})")  # fmt: skip
    if status in (401, 403):
        raise Fatal(f"the actions service refused the runner's token: HTTP {status}")
    if status != 200:
        raise Fatal(f"connect: HTTP {status}: {_excerpt(body)}")


def wait_for_job(service: Service) -> dict[str, Any]:
    complained = 0.0
    while True:
        try:
            status, body = service.call("GET", "job")
        except OSError as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                raise Fatal(f"GET {service.base}job: {reason}") from None
            status, body = 0, str(reason).encode()
        if status == 200:
            try:
                job = json.loads(body)
            except json.JSONDecodeError:
                job = None
            return job if isinstance(job, dict) else {"invalid": _excerpt(body)}
        if status not in (0, 204, 408, 429) and status < 500:
            raise Fatal(f"polling for a job: HTTP {status}: {_excerpt(body)}")
        if status != 204 and time.monotonic() - complained > 30:
            # Like the real runner, ride out a service that is away for a while.
            print(f"{PROG}: polling for a job: {_excerpt(body) or status}; retrying",
                  file=sys.stderr, flush=True)  # fmt: skip
            complained = time.monotonic()
        time.sleep(POLL_INTERVAL)


def post_result(service: Service, result: str, steps: list[dict[str, Any]]) -> None:
    status, body = service.call_patiently("POST", "result", {"result": result, "steps": steps})
    if not 200 <= status < 300:
        raise Fatal(f"reporting the result: HTTP {status}: {_excerpt(body)}")


# --- the job ----------------------------------------------------------------------------


def _env(value: object, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise JobError(f"{where}: 'env' is not a mapping")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _condition(value: object, where: str) -> str:
    """success, failure or always, from what a workflow would write: `failure()`, `${{
    always() }}`."""
    if value is None:
        return "success"
    text = str(value).strip()
    if text.startswith("${{") and text.endswith("}}"):
        text = text[3:-2].strip()
    name = text.removesuffix("()").strip()
    if not text.endswith("()") or name not in CONDITIONS:
        raise JobError(f"{where}: 'if' must be success(), failure() or always(), not {value!r}")
    return name


def parse_job(job: dict[str, Any]) -> Job:
    name = job.get("name")
    if not isinstance(name, str) or not name:
        raise JobError(f"the job has no name: {job!r}"[:300])
    steps = job.get("steps")
    if not isinstance(steps, list) or not steps:
        raise JobError("the job has no steps")
    parsed = []
    for i, step in enumerate(steps):
        where = f"step {i + 1}"
        if not isinstance(step, dict) or not isinstance(step.get("run"), str):
            raise JobError(f"{where} has no 'run' script")
        step_name = step.get("name") or "Run " + (step["run"].strip().splitlines() or [""])[0]
        parsed.append(Step(str(step_name), step["run"], _condition(step.get("if"), where),
                           _env(step.get("env"), where)))  # fmt: skip
    return Job(name, parsed, _env(job.get("env"), "the job"))


def _relay(stream: Any, output: list[str]) -> None:
    for raw in stream:
        text = raw.decode(errors="replace")
        output.append(text)
        say(log_stamp() + text.rstrip("\r\n"))


def _kill_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class JobRun:
    def __init__(self, config: RunnerConfig, job: Job) -> None:
        self.config = config
        self.job = job
        self.groups: list[int] = []

    def run(self) -> tuple[str, list[dict[str, Any]]]:
        work = Path(self.config.work_folder)
        try:
            work.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobError(f"WorkFolder {work}: {exc}") from None
        base_env = {**os.environ, **self.job.env, "GITHUB_ACTIONS": "true",
                    "RUNNER_NAME": self.config.agent_name, "GITHUB_JOB": self.job.name}  # fmt: skip
        failed = False
        results = []
        for step in self.job.steps:
            if step.condition == "success":
                due = not failed
            else:
                due = step.condition == "always" or failed
            if not due:
                say(f"{log_stamp()}Skipping {step.name!r}: if: {step.condition}()")
                continue
            code, output = self.run_step(step, work, {**base_env, **step.env})
            results.append({"name": step.name, "exit_code": code, "output": output})
            failed = failed or code != 0
        return ("failed" if failed else "succeeded"), results

    def run_step(self, step: Step, work: Path, env: dict[str, str]) -> tuple[int, str]:
        say(f"{log_stamp()}##[group]Run {step.name}")
        for line in step.run.splitlines():
            say(f"{log_stamp()}{line}")
        say(f"{log_stamp()}shell: bash -eo pipefail {{0}}")
        say(f"{log_stamp()}##[endgroup]")
        try:
            proc = subprocess.Popen(
                ["bash", "-eo", "pipefail", "-c", step.run],
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Its own group, so that cancelling the job and cleaning up after it reach
                # whatever the step started.
                start_new_session=True,
            )
        except OSError as exc:
            say(f"{log_stamp()}##[error]{exc}")
            return 127, f"{exc}\n"
        self.groups.append(proc.pid)
        output: list[str] = []
        relay = threading.Thread(target=_relay, args=(proc.stdout, output), daemon=True)
        relay.start()
        returncode = proc.wait()
        relay.join(OUTPUT_DRAIN)
        code = 128 - returncode if returncode < 0 else returncode
        if code != 0:
            say(f"{log_stamp()}##[error]Process completed with exit code {code}.")
        return code, "".join(output)

    def cancel(self) -> None:
        for pid in self.groups:
            _kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in self.groups):
            time.sleep(0.1)
        self.clean_up()

    def clean_up(self) -> None:
        # Like Actions' "Cleaning up orphan processes": what steps left running ends with the job.
        for pid in self.groups:
            _kill_group(pid, signal.SIGKILL)


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --- main -------------------------------------------------------------------------------


def _cancel(signum: int, frame: object) -> None:
    raise Cancelled(signum)


def main(argv: list[str] | None = None) -> int:
    # The milestones must reach `vdc runner` as they happen, and "√" must not fail in a
    # container whose locale is C.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(encoding="utf-8", errors="replace", line_buffering=True)
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--jitconfig", required=True, metavar="ENCODED_JIT_CONFIG",
                        help="GitHub's encoded_jit_config for this runner")  # fmt: skip
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _cancel)
    signal.signal(signal.SIGINT, _cancel)

    job_run: JobRun | None = None
    try:
        try:
            config = decode_jit_config(args.jitconfig)
        except JitConfigError as exc:
            raise Fatal(f"invalid JIT config: {exc}") from None
        service = Service(config)
        connect(service, config)
        say("√ Connected to GitHub")
        say("")
        say(f"Current runner version: 'standin' (runner {config.agent_name!r}, "
            f"labels {','.join(config.labels)})")  # fmt: skip
        say(console_stamp() + "Listening for Jobs")
        raw_job = wait_for_job(service)
        name = raw_job.get("name") if isinstance(raw_job.get("name"), str) else "job"
        say(f"{console_stamp()}Running job: {name}")
        try:
            job_run = JobRun(config, parse_job(raw_job))
            result, steps = job_run.run()
            job_run.clean_up()
            job_run = None  # SIGTERM from here on cancels nothing
        except JobError as exc:
            say(f"{log_stamp()}##[error]{exc}")
            result, steps = "failed", [{"name": "Set up job", "exit_code": 1, "output": str(exc)}]
        say(f"{console_stamp()}Job {name} completed with result: {result.capitalize()}")
        post_result(service, result, steps)
    except Fatal as exc:
        print(f"{PROG}: {exc}", file=sys.stderr, flush=True)
        return 1
    except Cancelled as exc:
        signum = int(exc.args[0])
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if job_run is not None:
            job_run.cancel()
            say(f"{console_stamp()}Job {job_run.job.name} completed with result: Canceled")
        print(f"{PROG}: {signal.Signals(signum).name}: stopped", file=sys.stderr, flush=True)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
