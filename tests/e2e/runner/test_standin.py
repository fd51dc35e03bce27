"""The stand-in runner against an actions-service stub, alone and under `vdc runner`.

The stub here is the smallest service the stand-in's contract needs (HTTPS, self-signed),
so that these tests need neither the cluster nor the fake GitHub.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import ipaddress
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

STANDIN = Path(__file__).resolve().parent / "standin.py"
VDC = [sys.executable, "-m", "vdc_runtime.cli"]
TOKEN = "t0ken-for-agent"


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    directory = tmp_path_factory.mktemp("certs")
    return {name: self_signed(directory, name) for name in ("service", "other")}


@dataclass
class Stub:
    """The actions service of one or more JIT runners, by AgentId."""

    url: str = ""
    jobs: dict[int, dict[str, Any]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    connected: set[int] = field(default_factory=set)
    polls: dict[int, int] = field(default_factory=dict)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def answer(self, method: str, path: str, auth: str | None, body: bytes) -> tuple[int, Any]:
        self.requests.append((method, path, auth))
        m = re.fullmatch(r"/_actions/(\d+)/(connect|job|result)", path)
        if not m:
            return 404, {"message": "no such route"}
        agent, what = int(m[1]), m[2]
        if auth != f"Bearer {TOKEN}":
            return 401, {"message": "bad token"}
        if (method, what) == ("POST", "connect"):
            if agent in self.connected:
                return 409, {"message": "JIT config already used"}
            self.connected.add(agent)
            return 200, {}
        if agent not in self.connected:
            return 403, {"message": "not connected"}
        if (method, what) == ("GET", "job"):
            self.polls[agent] = self.polls.get(agent, 0) + 1
            if self.release.is_set() and agent in self.jobs:
                return 200, self.jobs.pop(agent)
            return 204, None
        if (method, what) == ("POST", "result"):
            self.results[agent] = json.loads(body)
            return 200, {}
        return 405, {"message": "method not allowed"}


@pytest.fixture
def stub(certs: dict[str, tuple[Path, Path]]) -> Iterator[Stub]:
    service = Stub()
    service.release.set()

    class Handler(http.server.BaseHTTPRequestHandler):
        def handle_one(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            status, answer = service.answer(
                self.command, self.path, self.headers.get("Authorization"), body
            )
            data = b"" if answer is None else json.dumps(answer).encode()
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = handle_one

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certs["service"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    service.url = f"https://127.0.0.1:{server.server_address[1]}/_actions/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()


def b64json(value: object) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def runner_config(server_url: str, agent_id: int, work: Path) -> dict[str, Any]:
    return {"AgentId": agent_id, "AgentName": f"runner-{agent_id}", "PoolId": 1,
            "PoolName": "Default", "ServerUrl": server_url,
            "GitHubUrl": "https://github.example/acme/widgets", "WorkFolder": str(work),
            "Labels": ["self-hosted", "vdc"]}  # fmt: skip


CREDENTIALS = {"Scheme": "OAuth", "Data": {"clientId": "c1d2", "authorizationUrl":
               "https://github.example/_apis/oauth2/token", "requireFipsCryptography": "False",
               "token": TOKEN}}  # fmt: skip
RSA_PARAMS = {"d": "AQAB", "dp": "AQAB", "dq": "AQAB", "exponent": "AQAB", "inverseQ": "AQAB",
              "modulus": "AQAB", "p": "AQAB", "q": "AQAB"}  # fmt: skip


def jit_config(runner: dict[str, Any], credentials: object = None) -> str:
    return b64json({".runner": b64json(runner),
                    ".credentials": b64json(CREDENTIALS if credentials is None else credentials),
                    ".credentials_rsaparams": b64json(RSA_PARAMS)})  # fmt: skip


def standin(config: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(STANDIN), "--jitconfig", config],
                          capture_output=True, text=True, timeout=60,
                          env=None if env is None else {**os.environ, **env})  # fmt: skip


def milestones(stdout: str) -> list[str]:
    """The console lines `vdc runner` follows, without their timestamps."""
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ: ")
    lines = [stamp.sub("", line) for line in stdout.splitlines()]
    keep = ("√ Connected", "Listening for Jobs", "Running job:", "Job ")
    return [line for line in lines if line.startswith(keep)]


def test_a_job_whose_steps_succeed(stub: Stub, tmp_path: Path) -> None:
    work = tmp_path / "work" / "deep"
    greet = 'echo "$GREETING x$COUNT from $RUNNER_NAME"'
    stub.jobs[7] = {"id": 70, "name": "build", "env": {"GREETING": "hello", "COUNT": 3},
                    "steps": [{"name": "greet", "run": greet},
                              {"name": "where", "run": 'pwd\necho "$GITHUB_ACTIONS $GITHUB_JOB"',
                               "if": "success()"},
                              {"run": "echo on stderr >&2"}]}  # fmt: skip
    stub.release.clear()
    threading.Timer(1.5, stub.release.set).start()
    done = standin(jit_config(runner_config(stub.url, 7, work)))
    assert done.returncode == 0, done.stderr
    assert stub.results[7] == {"result": "succeeded", "steps": [
        {"name": "greet", "exit_code": 0, "output": "hello x3 from runner-7\n"},
        {"name": "where", "exit_code": 0, "output": f"{work}\ntrue build\n"},
        {"name": "Run echo on stderr >&2", "exit_code": 0, "output": "on stderr\n"},
    ]}  # fmt: skip
    assert stub.polls[7] >= 2  # it waited through "no job yet"
    assert milestones(done.stdout) == ["√ Connected to GitHub", "Listening for Jobs",
                                       "Running job: build",
                                       "Job build completed with result: Succeeded"]  # fmt: skip
    assert re.search(r"^\S+Z hello x3 from runner-7$", done.stdout, re.MULTILINE)
    assert {auth for _, _, auth in stub.requests} == {f"Bearer {TOKEN}"}
    assert [(m, p) for m, p, _ in stub.requests if m == "POST"] == [
        ("POST", "/_actions/7/connect"), ("POST", "/_actions/7/result")]  # fmt: skip


def test_a_failing_step_skips_the_rest_but_failure_and_always_steps(
    stub: Stub, tmp_path: Path
) -> None:
    stub.jobs[8] = {"id": 80, "name": "test (vdc)", "steps": [
        {"name": "ok", "run": "echo fine"},
        {"name": "broken", "run": "echo broken\nfalse | cat\necho not reached"},
        {"name": "skipped", "run": "echo should not run"},
        {"name": "on failure", "run": "echo cleaning up", "if": "failure()"},
        {"name": "also on failure", "run": "exit 4", "if": "${{ failure() }}"},
        {"name": "always", "run": "echo always", "if": "always()"},
    ]}  # fmt: skip
    done = standin(jit_config(runner_config(stub.url, 8, tmp_path / "w")))
    assert done.returncode == 0, done.stderr
    assert stub.results[8] == {"result": "failed", "steps": [
        {"name": "ok", "exit_code": 0, "output": "fine\n"},
        {"name": "broken", "exit_code": 1, "output": "broken\n"},
        {"name": "on failure", "exit_code": 0, "output": "cleaning up\n"},
        {"name": "also on failure", "exit_code": 4, "output": ""},
        {"name": "always", "exit_code": 0, "output": "always\n"},
    ]}  # fmt: skip
    assert milestones(done.stdout)[-1] == "Job test (vdc) completed with result: Failed"
    assert "Process completed with exit code 1." in done.stdout
    assert "should not run" not in done.stdout


def test_a_used_jit_config_is_refused(stub: Stub, tmp_path: Path) -> None:
    stub.jobs[9] = {"id": 90, "name": "once", "steps": [{"name": "s", "run": "true"}]}
    config = jit_config(runner_config(stub.url, 9, tmp_path / "w"))
    assert standin(config).returncode == 0
    again = standin(config)
    assert again.returncode == 1
    assert "JIT config was used already" in again.stderr
    assert "Listening for Jobs" not in again.stdout
    assert "Traceback" not in again.stderr


def _runner(**changes: object) -> dict[str, Any]:
    runner = runner_config("https://127.0.0.1:1/_actions/", 1, Path("/tmp/w"))
    runner.update(changes)
    return {k: v for k, v in runner.items() if v is not None}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("not base64 at all!", "the JIT config is not base64"),
        (base64.b64encode(b"\x00\xff").decode(), "the JIT config is base64, but not of JSON"),
        (b64json(["a list"]), "the JIT config is not a JSON object"),
        (b64json({".runner": b64json(_runner()), ".credentials": b64json(CREDENTIALS)}),
         "the JIT config has no '.credentials_rsaparams'"),
        (b64json({".runner": "%%%", ".credentials": b64json(CREDENTIALS),
                  ".credentials_rsaparams": b64json(RSA_PARAMS)}), ".runner is not base64"),
        (jit_config(_runner(AgentId="1")), ".runner: 'AgentId' is not a int"),
        (jit_config(_runner(AgentId=True)), ".runner: 'AgentId' is not a int"),
        (jit_config(_runner(WorkFolder=None)), ".runner has no 'WorkFolder'"),
        (jit_config(_runner(Labels=["a", 1])), "'Labels' is not a list of strings"),
        (jit_config(_runner(ServerUrl="ftp://x/")), "'ServerUrl' is not an http(s) URL"),
        (jit_config(_runner(), {"Scheme": "Basic", "Data": {}}), "'Scheme' is not 'OAuth'"),
        (jit_config(_runner(), {"Scheme": "OAuth", "Data": {"clientId": "c",
                                                            "authorizationUrl": "u"}}),
         ".credentials Data has no 'token'"),
    ],
)  # fmt: skip
def test_a_malformed_jit_config_is_refused_with_a_message(config: str, message: str) -> None:
    done = standin(config)
    assert done.returncode == 1
    assert "vdc-standin-runner: invalid JIT config: " in done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_the_service_certificate_is_checked_against_vdc_standin_ca(
    stub: Stub, tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    stub.jobs[10] = {"id": 100, "name": "ca", "steps": [{"name": "s", "run": "true"}]}
    stub.jobs[11] = dict(stub.jobs[10])
    good = standin(jit_config(runner_config(stub.url, 10, tmp_path / "w")),
                   {"VDC_STANDIN_CA": str(certs["service"][0])})  # fmt: skip
    assert good.returncode == 0, good.stderr
    started = time.monotonic()
    bad = standin(jit_config(runner_config(stub.url, 11, tmp_path / "w")),
                  {"VDC_STANDIN_CA": str(certs["other"][0])})  # fmt: skip
    assert bad.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in bad.stderr
    assert time.monotonic() - started < 10  # a certificate that does not verify is no outage
    assert 11 not in stub.connected


# --- under `vdc runner` ---------------------------------------------------------------------


class Wrapped:
    def __init__(self, tmp_path: Path, config: str) -> None:
        self.state_file = tmp_path / "state" / "runner.json"
        self.log = tmp_path / "wrapper.log"
        argv = [*VDC, "runner", "--name", "runner", "--state-dir", str(tmp_path / "state"),
                "--", sys.executable, str(STANDIN), "--jitconfig", config]  # fmt: skip
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def wait_state(self, ok: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            try:
                state = json.loads(self.state_file.read_text())
            except FileNotFoundError:
                state = None
            if state is not None and ok(state):
                return state
            assert self.proc.poll() is None, self.log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"state stayed {state}; log:\n{self.log.read_text()}")


@pytest.fixture
def wrapped() -> Iterator[list[Wrapped]]:
    started: list[Wrapped] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def test_under_vdc_runner_the_state_follows_the_job(
    stub: Stub, tmp_path: Path, wrapped: list[Wrapped]
) -> None:
    go = tmp_path / "go"
    wait = f"while [ ! -e {go} ]; do sleep 0.05; done; echo went"
    stub.jobs[12] = {"id": 120, "name": "e2e", "steps": [{"name": "wait", "run": wait}]}
    stub.release.clear()
    w = Wrapped(tmp_path, jit_config(runner_config(stub.url, 12, tmp_path / "w")))
    wrapped.append(w)
    w.wait_state(lambda s: s["phase"] == "Listening")
    stub.release.set()
    state = w.wait_state(lambda s: s["phase"] == "Busy")
    assert (state["job"], state["result"]) == ("e2e", None)
    go.touch()
    state = w.wait_state(lambda s: s["phase"] == "Finished")
    assert (state["job"], state["result"], state["exit_code"]) == ("e2e", "succeeded", 0)
    assert stub.results[12]["result"] == "succeeded"
    time.sleep(0.5)
    assert w.proc.poll() is None
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(10) == 0
    assert "went" in w.log.read_text()


def test_under_vdc_runner_sigterm_cancels_the_job(
    stub: Stub, tmp_path: Path, wrapped: list[Wrapped]
) -> None:
    # A duration no other process has, to look for leftovers by.
    sleep = f"sleep 60.{os.getpid()}"
    stub.jobs[13] = {"id": 130, "name": "long", "steps": [
        {"name": "sleep", "run": f"echo sleeping; {sleep}"}]}  # fmt: skip
    w = Wrapped(tmp_path, jit_config(runner_config(stub.url, 13, tmp_path / "w")))
    wrapped.append(w)
    w.wait_state(lambda s: s["phase"] == "Busy")
    deadline = time.monotonic() + 10
    while "sleeping" not in w.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(20) == 0
    assert time.monotonic() - started < 10
    state = json.loads(w.state_file.read_text())
    assert (state["phase"], state["job"], state["result"], state["exit_code"]) == (
        "Failed", "long", "cancelled", 143)  # fmt: skip
    assert 13 not in stub.results
    out = subprocess.run(["pgrep", "-f", sleep], capture_output=True, text=True).stdout
    assert not out.strip(), "the step's process outlived the cancelled job"
