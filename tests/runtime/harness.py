"""Running `vdc run` for real inside a network namespace that the test owns.

The test's namespace plays the host: vdc's bridges, nftables table and API live there, so
nothing a test builds touches the machine's own network. Named namespaces vdc makes are
global (/run/netns) and are checked for leftovers like everything else.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vdc_runtime.fabric import netns as nsutil

T = TypeVar("T")

API_PORT = 10808


def sh(argv: list[str], ns: str | None = None, check: bool = True, timeout: float = 30) -> str:
    if ns is not None:
        argv = ["nsenter", f"--net=/run/netns/{ns}", "--", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


class HostNetns:
    """A fresh network namespace standing in for the host, with its loopback up."""

    def __init__(self) -> None:
        self.name = "vdct" + uuid.uuid4().hex[:8]

    def __enter__(self) -> HostNetns:
        sh(["ip", "netns", "add", self.name])
        sh(["ip", "link", "set", "lo", "up"], ns=self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        sh(["ip", "netns", "del", self.name], check=False)

    def sh(self, argv: list[str], check: bool = True, timeout: float = 30) -> str:
        return sh(argv, ns=self.name, check=check, timeout=timeout)


def http_in_netns(
    ns: str,
    method: str,
    path: str,
    port: int = API_PORT,
    timeout: float = 5,
    text: bool = False,
    body: Any = None,
) -> tuple[int, Any]:
    """An HTTP request whose socket is made inside `ns` (so 127.0.0.1 is that namespace's);
    the body as JSON, or as `text`."""
    result: dict[str, Any] = {}

    def worker() -> None:
        fd = nsutil.open_fd(ns)
        try:
            with nsutil.entered(fd):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                conn.connect()  # the socket now belongs to `ns`, wherever it is used
            if body is None:
                conn.request(method, path)
            else:
                conn.request(method, path, json.dumps(body), {"Content-Type": "application/json"})
            resp = conn.getresponse()
            answer = resp.read()
            if text:
                result["value"] = (resp.status, answer.decode(errors="replace"))
            else:
                result["value"] = (resp.status, json.loads(answer) if answer else None)
        except Exception as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in result:
        raise result["error"]
    if "value" not in result:
        raise TimeoutError(f"{method} {path} in {ns}: no answer within {timeout + 5:.0f} s")
    return result["value"]


def call_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run `fn` in a thread inside `ns`, so every socket it opens is that namespace's."""
    result: dict[str, Any] = {}

    def worker() -> None:
        fd = nsutil.open_fd(ns)
        try:
            with nsutil.entered(fd):
                result["value"] = fn()
        except BaseException as exc:  # handed to the caller
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(300)
    if "error" in result:
        raise result["error"]
    return result["value"]


@dataclass
class Snapshot:
    netns: frozenset[str]
    host_links: frozenset[str]
    test_links: frozenset[str]
    host_tables: frozenset[str]
    test_tables: frozenset[str]
    processes: frozenset[tuple[int, str]]


def _links(ns: str | None) -> frozenset[str]:
    out = sh(["ip", "-o", "link", "show"], ns=ns)
    return frozenset(line.split(": ")[1].split("@")[0] for line in out.splitlines())


def _tables(ns: str | None) -> frozenset[str]:
    return frozenset(sh(["nft", "list", "tables"], ns=ns).split("\n")) - {""}


def processes() -> frozenset[tuple[int, str]]:
    """Every process's pid and command line (its arguments joined by spaces)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if cmdline:
                found.add((int(entry.name), cmdline))
    return frozenset(found)


def snapshot(host: HostNetns) -> Snapshot:
    return Snapshot(
        netns=frozenset(nsutil.list_netns()),
        host_links=_links(None),
        test_links=_links(host.name),
        host_tables=_tables(None),
        test_tables=_tables(host.name),
        processes=processes(),
    )


def assert_no_leftovers(before: Snapshot, host: HostNetns, markers: tuple[str, ...] = ()) -> None:
    """Everything a run made is gone: namespaces, links, nft tables, its processes."""
    deadline = time.monotonic() + 5
    while True:
        after = snapshot(host)
        new_procs = [
            cmd
            for pid, cmd in after.processes - before.processes
            if any(m in cmd for m in ("vdc_runtime", "nsenter", *markers))
        ]
        problems = {
            "netns": sorted(after.netns - before.netns),
            "host links": sorted(after.host_links - before.host_links),
            "links in test host": sorted(after.test_links - before.test_links),
            "host nft tables": sorted(after.host_tables - before.host_tables),
            "nft tables in test host": sorted(after.test_tables - before.test_tables),
            "processes": sorted(new_procs),
        }
        problems = {k: v for k, v in problems.items() if v}
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not problems, f"left behind: {problems}"


class VdcRun:
    """`vdc run` as a child process inside the test's host namespace."""

    def __init__(self, host: HostNetns, files: list[Path], run_dir: Path, *extra: str) -> None:
        self.host = host
        self.log_path = run_dir.parent / f"{run_dir.name}.log"
        self.argv = [
            "nsenter", f"--net=/run/netns/{host.name}", "--",
            sys.executable, "-m", "vdc_runtime.cli", "run",
            *map(str, files), "--run-dir", str(run_dir),
            "--data-dir", str(run_dir.parent / "data"),
            "--cache-dir", str(run_dir.parent / "cache"),
            *extra,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> VdcRun:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for the run's API to say it is running; a run that does not get there is
        stopped (so that a failed test leaves nothing behind) and its output shown."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vdc run exited with {self.proc.returncode}:\n{self.output}")
            try:
                status, body = self.api("/health")
                if status == 200 and body["phase"] == "running":
                    return
            except OSError:  # TimeoutError included
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"vdc run not ready after {timeout} s:\n{self.output}")

    def api(
        self, path: str, method: str = "GET", text: bool = False, body: Any = None
    ) -> tuple[int, Any]:
        return http_in_netns(self.host.name, method, path, text=text, body=body)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait()

    def run_to_exit(self, timeout: float = 60) -> int:
        """Start the run and wait for it to end by itself; one that is still up after
        `timeout` is stopped (so that it leaves nothing behind) and fails the test."""
        self.start()
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"vdc run still running after {timeout} s; stopped it:\n{self.output}"
            ) from None
