"""Benchmark (not a test): N guests booted by `vdc run` beside the same QEMUs started directly.

    sudo PYTHONPATH=runtime:. /var/cache/vdc/venv/bin/python bench/boot.py \\
        [--sizes 1,4,8] [--repeat 5]

Each case is a spec of N nodes: the cached test guest (`tests/guest`, PVH `vmlinux` plus its
initrd), `smp: {cpus: 1}`, `memory: 256M`, `cmdline: "console=ttyS0 quiet"`, one interface
each on one internal network, so a bridge and one tap per node are part of the cost. Two
sides, alternating from run to run, median of `--repeat` runs:

- vdc: `python -m vdc_runtime.cli run spec.yml --run-dir R --data-dir D ...` spawned (through
  nsenter) in the bench's network namespace; boot = spawn until every node's console log
  shows `VDC-GUEST-READY`; then SIGTERM, and teardown = until vdc has exited.
- bare: the very same QEMU command lines, computed with `plan_node` + `qemu_argv` as vdc does
  for the same spec, run/data dirs and host facts (checked against the command lines of
  vdc's own QEMUs on every vdc run); `ip -batch` makes the bridge and the taps in the same
  namespace, then each QEMU is started with subprocess.Popen (through nsenter); boot = from
  `ip -batch` until every console shows READY; teardown = SIGTERM to every QEMU, wait, and
  `ip -batch` deleting the taps and the bridge.

The target (printed, not asserted): vdc boot within 1.05x of bare. Also reported: vdc's own
RSS (VmRSS of the vdc process, QEMUs excluded) once every node is READY and its increment
per node, the QEMUs' average RSS, where the time goes (QEMU start times read from /proc,
vdc's log lines stamped as they arrive) and the cost of starting Python with vdc's imports.

Isolation: everything lives in one network namespace (`vdcbb<tag>`, made with `ip netns add`)
and one temporary directory; console logs are deleted before every run. After every run the
bench checks that no process of its own (QEMU, vdc, nsenter), no link but `lo`, no nftables
table and no other namespace of its prefix is left, and aborts if one is. On every exit path,
Ctrl-C and SIGTERM included, it stops what it started (by pid), deletes the namespace and
the temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tests.guest.build import GuestPaths, build_guest

from vdc_runtime.fabric import netns as nsutil
from vdc_runtime.fabric.mtu import detect_mtu
from vdc_runtime.nodes.host import find_ovmf, probe_accel, vhost_available
from vdc_runtime.nodes.layout import HostFacts, NodeLayout, plan_node
from vdc_runtime.nodes.qemu_args import qemu_argv
from vdc_runtime.spec import Node, load_files

ROOT = Path(__file__).resolve().parents[1]
NETNS_DIR = Path("/run/netns")
TARGET_RATIO = 1.05
READY = b"VDC-GUEST-READY"
READY_UPTIME = re.compile(rb"VDC-GUEST-READY boot=\d+ uptime=([0-9.]+)")
LISTEN = "127.0.0.1:10808"
POLL = 0.02  # console polling interval, seconds (the same on both sides)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024.0


class BenchError(RuntimeError):
    pass


# -- small helpers -------------------------------------------------------------------------------


def run(argv: list[str], *, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def in_ns(ns: str, argv: list[str]) -> list[str]:
    return ["nsenter", f"--net={NETNS_DIR / ns}", "--", *argv]


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat from field 3 (state) on; None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def start_time(pid: int) -> float | None:
    """When `pid` started, in CLOCK_BOOTTIME seconds (10 ms resolution)."""
    fields = proc_stat(pid)
    return int(fields[19]) / CLK_TCK if fields else None


def cpu_seconds(pid: int) -> float | None:
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK if fields else None


def sched_per_qemu(pids: list[int]) -> tuple[float, float]:
    """`sched_seconds` of each of `pids`, averaged: CPU, wait."""
    sched = [sched_seconds(pid) for pid in pids]
    count = max(len(sched), 1)
    return sum(c for c, _ in sched) / count, sum(w for _, w in sched) / count


def sched_seconds(pid: int) -> tuple[float, float]:
    """CPU time and time spent runnable but waiting for a CPU, over all of `pid`'s threads
    (/proc/PID/task/*/schedstat: the kernel's schedstats): a QEMU that boots slower beside
    vdc either waits for the CPU (vdc or something else took it) or does more work."""
    cpu = wait = 0
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            run_ns, delay_ns, _ = task.read_text().split()
        except (OSError, ValueError):
            continue
        cpu, wait = cpu + int(run_ns), wait + int(delay_ns)
    return cpu / 1e9, wait / 1e9


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else None


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def processes_mentioning(text: str) -> dict[int, str]:
    """Processes (but this one) whose command line contains `text`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            argv = cmdline(int(entry.name))
            if argv and any(text in arg for arg in argv):
                found[int(entry.name)] = " ".join(argv)[:160]
    return found


def boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def http_json(ns: str, path: str, timeout: float = 5) -> tuple[int, Any]:
    """GET `path` from the vdc API, over a socket made inside the namespace `ns`."""
    result: dict[str, Any] = {}

    def worker() -> None:
        fd = nsutil.open_fd(ns)
        try:
            host, port = LISTEN.rsplit(":", 1)
            with nsutil.entered(fd):
                conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
                conn.connect()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            result["value"] = (resp.status, json.loads(body) if body else None)
        except Exception as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "error" in result:
        raise BenchError(f"GET {path}: {result['error']}")
    if "value" not in result:
        raise BenchError(f"GET {path}: no answer")
    return result["value"]


def in_netns_thread(ns: str, func: Callable[[], Any]) -> Any:
    """Call `func` in a thread that has entered the namespace `ns`."""
    result: dict[str, Any] = {}

    def worker() -> None:
        fd = nsutil.open_fd(ns)
        try:
            with nsutil.entered(fd):
                result["value"] = func()
        except Exception as exc:
            result["error"] = exc
        finally:
            os.close(fd)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise BenchError(f"in namespace {ns}: {result['error']}")
    return result.get("value")


# -- the case: a spec, and the layouts and argvs vdc would use ----------------------------------


@dataclass(frozen=True)
class Env:
    tag: str
    netns: str
    root: Path
    run_dir: Path
    data_dir: Path
    cache_dir: Path
    child_env: dict[str, str]

    @property
    def bridge(self) -> str:
        return f"bb{self.tag}net"

    def node_name(self, i: int) -> str:
        return f"bb{self.tag}n{i}"


@dataclass(frozen=True)
class Case:
    size: int
    spec: Path
    nodes: tuple[Node, ...]
    layouts: tuple[NodeLayout, ...]
    argvs: tuple[tuple[str, ...], ...]

    @property
    def taps(self) -> list[str]:
        return [nic.tap for layout in self.layouts for nic in layout.nics]

    @property
    def consoles(self) -> list[Path]:
        return [layout.console_log for layout in self.layouts]


def write_spec(env: Env, size: int, guest: GuestPaths) -> Path:
    docs = [f"kind: Network\nname: {env.bridge}\ntype: internal\n"]
    for i in range(size):
        docs.append(
            f"kind: Node\nname: {env.node_name(i)}\nsmp: {{cpus: 1}}\nmemory: 256M\n"
            f"kernel: {guest.vmlinux}\ninitrd: {guest.initrd}\n"
            f'cmdline: "console=ttyS0 quiet"\ninterfaces: [{env.bridge}]\n'
        )
    path = env.root / "specs" / f"boot-{size}.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n".join(docs))
    return path


def host_facts(env: Env) -> tuple[HostFacts, str]:
    """What `DataCenterRun._host_facts` finds, the MTU probed inside the bench's namespace."""
    accel, reason = probe_accel("auto")
    ovmf = find_ovmf()
    mtu = in_netns_thread(env.netns, detect_mtu)
    facts = HostFacts(
        accel=accel,
        vhost=vhost_available(),
        mtu=mtu,
        ovmf_code=ovmf[0] if ovmf else None,
        ovmf_vars_template=ovmf[1] if ovmf else None,
    )
    return facts, reason


def make_case(env: Env, size: int, guest: GuestPaths, facts: HostFacts) -> Case:
    spec = write_spec(env, size, guest)
    dc = load_files([spec])
    layouts = tuple(
        plan_node(
            node,
            run_dir=env.run_dir,
            data_dir=env.data_dir,
            log_dir=env.data_dir / "logs",
            drives=[],
            host=facts,
        )
        for node in dc.nodes
    )
    argvs = tuple(
        tuple(qemu_argv(layout, node)) for layout, node in zip(layouts, dc.nodes, strict=True)
    )
    return Case(size, spec, tuple(dc.nodes), layouts, argvs)


# -- waiting for the guests ----------------------------------------------------------------------


def wait_ready(
    consoles: list[Path], timeout: float, problem: Callable[[], str | None]
) -> dict[Path, float]:
    """Poll the console logs until each shows READY; the monotonic time each was seen."""
    offsets = dict.fromkeys(consoles, 0)
    tails = dict.fromkeys(consoles, b"")
    seen: dict[Path, float] = {}
    deadline = time.monotonic() + timeout
    while True:
        for path in consoles:
            if path in seen:
                continue
            try:
                with open(path, "rb") as f:
                    f.seek(offsets[path])
                    chunk = f.read()
            except FileNotFoundError:
                continue
            offsets[path] += len(chunk)
            text = tails[path] + chunk
            if READY in text:
                seen[path] = time.monotonic()
            else:
                tails[path] = text[-(len(READY) - 1) :]
        if len(seen) == len(consoles):
            return seen
        message = problem()
        if message:
            raise BenchError(message)
        if time.monotonic() > deadline:
            missing = [p.name for p in consoles if p not in seen]
            raise BenchError(f"no {READY.decode()} within {timeout:.0f} s on {missing}")
        time.sleep(POLL)


def guest_uptimes(case: Case) -> list[float]:
    """The guest's own uptime when it printed READY (the line may still be arriving)."""
    found = []
    deadline = time.monotonic() + 5
    for path in case.consoles:
        while not (match := READY_UPTIME.search(path.read_bytes())):
            if time.monotonic() > deadline:
                raise BenchError(f"no uptime in the READY line of {path}")
            time.sleep(POLL)
        found.append(float(match.group(1)))
    return found


def clear_consoles(case: Case) -> None:
    for layout in case.layouts:
        layout.console_log.unlink(missing_ok=True)


# -- one run of each side ------------------------------------------------------------------------


@dataclass
class Sample:
    boot: float
    down: float
    first_qemu: float  # spawn -> first QEMU process started (from /proc, 10 ms resolution)
    last_qemu: float
    qemu_rss_kib: float  # average per node
    guest_uptime: float  # the slowest guest's own uptime at READY
    rss_kib: int | None = None  # vdc's own
    cpu: float | None = None  # vdc's own CPU seconds at READY
    qemu_cpu: float = 0.0  # the QEMUs' CPU seconds at READY, all threads, average per node
    qemu_wait: float = 0.0  # their seconds runnable but waiting for a CPU, average per node
    marks: dict[str, float] = field(default_factory=dict)


class LineStamper(threading.Thread):
    """Copies a child's output to a file, remembering when each line arrived."""

    def __init__(self, stream: IO[bytes], path: Path, t0: float) -> None:
        super().__init__(daemon=True)
        self.stream, self.path, self.t0 = stream, path, t0
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        with open(self.path, "w") as out:
            for raw in self.stream:
                at = time.monotonic() - self.t0
                line = raw.decode(errors="replace").rstrip()
                self.lines.append((at, line))
                out.write(f"{at:9.3f} {line}\n")

    def first(self, needle: str) -> float | None:
        return next((at for at, line in self.lines if needle in line), None)

    def last(self, needle: str) -> float | None:
        found = [at for at, line in self.lines if needle in line]
        return found[-1] if found else None

    def tail(self, count: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-count:])


VDC_MARKS = (
    ("first log line", None, "first"),
    ("acceleration probed", "acceleration:", "first"),
    ("fabric ready", "fabric ready", "first"),
    ("first QMP connected", "power On (started)", "first"),
    ("last QMP connected", "power On (started)", "last"),
    ("machines started", "machines started", "first"),
    ("API ready", "ready: API", "first"),
)


class Runner:
    """Runs the two sides; remembers what it started so the janitor can stop it."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.started: list[subprocess.Popen[bytes]] = []
        self.count = 0

    def _spawn(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        self.started.append(proc)
        return proc

    def vdc(self, case: Case, verify: bool) -> Sample:
        env = self.env
        self.count += 1
        clear_consoles(case)
        argv = in_ns(
            env.netns,
            [
                sys.executable, "-m", "vdc_runtime.cli", "run", str(case.spec),
                "--run-dir", str(env.run_dir), "--data-dir", str(env.data_dir),
                "--cache-dir", str(env.cache_dir), "--listen-addr", LISTEN,
            ],
        )  # fmt: skip
        log_path = env.root / "logs" / f"vdc-{case.size}-{self.count}.log"
        t0, b0 = time.monotonic(), boottime()
        proc = self._spawn(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env.child_env
        )
        assert proc.stdout is not None
        stamper = LineStamper(proc.stdout, log_path, t0)
        stamper.start()

        def problem() -> str | None:
            if proc.poll() is not None:
                stamper.join(5)
                return f"vdc run exited with {proc.returncode} before READY:\n{stamper.tail()}"
            return None

        seen = wait_ready(case.consoles, 60 + 20 * case.size, problem)
        boot = max(seen.values()) - t0
        # Right away, before the API checks below allocate anything in vdc.
        rss, cpu = rss_kib(proc.pid), cpu_seconds(proc.pid)
        qemus = [p for p in children(proc.pid) if _comm(p).startswith("qemu-system")]
        qemu_cpu, qemu_wait = sched_per_qemu(qemus)
        qemu_rss = [rss_kib(p) or 0 for p in qemus]
        starts = [s - b0 for s in map(start_time, qemus) if s is not None]
        if len(qemus) != case.size or len(starts) != case.size or rss is None:
            raise BenchError(f"vdc has {len(qemus)} QEMU children, not {case.size}")
        if Path(f"/proc/{proc.pid}/comm").read_text().strip() == "nsenter":
            raise BenchError("nsenter did not exec vdc: its RSS would be nsenter's")
        self._check_argvs(case, qemus)
        uptime = max(guest_uptimes(case))
        if verify:
            self._check_api(case)
        # Teardown: SIGTERM until vdc has exited.
        t1 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"vdc did not exit within 120 s of SIGTERM:\n{stamper.tail()}"
            ) from None
        down = time.monotonic() - t1
        stamper.join(10)
        if code != 0:
            raise BenchError(f"vdc run exited with {code}:\n{stamper.tail()}")
        marks = {}
        for label, needle, which in VDC_MARKS:
            if needle is None:
                at = stamper.lines[0][0] if stamper.lines else None
            else:
                at = stamper.first(needle) if which == "first" else stamper.last(needle)
            if at is not None:
                marks[label] = at
        return Sample(
            boot=boot,
            down=down,
            first_qemu=min(starts),
            last_qemu=max(starts),
            qemu_rss_kib=sum(qemu_rss) / len(qemu_rss),
            guest_uptime=uptime,
            rss_kib=rss,
            cpu=cpu,
            qemu_cpu=qemu_cpu,
            qemu_wait=qemu_wait,
            marks=marks,
        )

    def _check_argvs(self, case: Case, qemus: list[int]) -> None:
        planned = {argv[argv.index("-name") + 1]: argv for argv in case.argvs}
        for pid in qemus:
            actual = tuple(cmdline(pid) or ())
            name = actual[actual.index("-name") + 1] if "-name" in actual else "?"
            if planned.get(name) != actual:
                raise BenchError(
                    f"vdc's QEMU {pid} ({name}) runs a command line other than the bare side's:"
                    f"\n vdc:  {' '.join(actual)}\n bare: {' '.join(planned.get(name, ()))}"
                )

    def _check_api(self, case: Case) -> None:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(BenchError):
                status, body = http_json(self.env.netns, "/health")
                if status == 200 and body.get("phase") == "running":
                    break
            if time.monotonic() > deadline:
                raise BenchError("vdc's API did not report phase running within 20 s of READY")
            time.sleep(0.1)
        for layout in case.layouts:
            status, body = http_json(self.env.netns, f"/nodes/{layout.name}")
            if status != 200 or Path(body["console_log"]) != layout.console_log:
                raise BenchError(
                    f"GET /nodes/{layout.name}: {status}, console_log "
                    f"{(body or {}).get('console_log')!r}, expected {layout.console_log}"
                )

    def bare(self, case: Case) -> Sample:
        env = self.env
        self.count += 1
        clear_consoles(case)
        for layout in case.layouts:
            for sock in layout.sockets:
                sock.unlink(missing_ok=True)
        out_dir = env.root / "logs" / f"bare-{case.size}-{self.count}"
        out_dir.mkdir(parents=True)
        ns_ip = ["ip", "-n", env.netns, "-batch", "-"]
        make = [f"link add name {env.bridge} type bridge", f"link set {env.bridge} up"]
        for tap in case.taps:
            make += [f"tuntap add dev {tap} mode tap", f"link set {tap} master {env.bridge} up"]

        t0, b0 = time.monotonic(), boottime()
        run(ns_ip, stdin="\n".join(make) + "\n")
        t_net = time.monotonic() - t0
        env.run_dir.mkdir(parents=True, exist_ok=True)
        (env.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        procs = []
        for layout, argv in zip(case.layouts, case.argvs, strict=True):
            with open(out_dir / f"{layout.name}.out", "wb") as out:
                procs.append(
                    self._spawn(in_ns(env.netns, list(argv)), stdout=out, stderr=subprocess.STDOUT)
                )
        t_spawned = time.monotonic() - t0

        def problem() -> str | None:
            for layout, p in zip(case.layouts, procs, strict=True):
                if p.poll() is not None:
                    text = (out_dir / f"{layout.name}.out").read_text(errors="replace")
                    return f"bare QEMU of {layout.name} exited with {p.returncode}: {text[-500:]}"
            return None

        seen = wait_ready(case.consoles, 60 + 20 * case.size, problem)
        boot = max(seen.values()) - t0
        qemu_rss = [rss_kib(p.pid) or 0 for p in procs]
        qemu_cpu, qemu_wait = sched_per_qemu([p.pid for p in procs])
        starts = [s - b0 for s in (start_time(p.pid) for p in procs) if s is not None]
        if any(not _comm(p.pid).startswith("qemu-system") for p in procs):
            raise BenchError("nsenter did not exec QEMU")
        uptime = max(guest_uptimes(case))
        t1 = time.monotonic()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                raise BenchError(f"bare QEMU {p.pid} ignored SIGTERM for 30 s") from None
        drop = [f"link del {tap}" for tap in case.taps] + [f"link del {env.bridge}"]
        run(ns_ip, stdin="\n".join(drop) + "\n")
        down = time.monotonic() - t1
        bad = {p.pid: p.returncode for p in procs if p.returncode not in (0, -signal.SIGTERM)}
        if bad:
            raise BenchError(f"bare QEMUs exited badly: {bad}")
        return Sample(
            boot=boot,
            down=down,
            first_qemu=min(starts),
            last_qemu=max(starts),
            qemu_rss_kib=sum(qemu_rss) / len(qemu_rss),
            guest_uptime=uptime,
            qemu_cpu=qemu_cpu,
            qemu_wait=qemu_wait,
            marks={"bridge and taps made": t_net, "QEMUs spawned": t_spawned},
        )


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# -- isolation and cleanup -----------------------------------------------------------------------


class Janitor:
    """Stops what the bench started and removes its namespace and files, on every exit path."""

    def __init__(self, env: Env, runner: Runner | None = None) -> None:
        self.env = env
        self.runner = runner

    def leftovers(self, planned_links: set[str]) -> list[str]:
        env = self.env
        found = []
        procs = processes_mentioning(str(env.root))
        if procs:
            found.append("processes " + "; ".join(f"{p} {c}" for p, c in sorted(procs.items())))
        links = run(["ip", "-n", env.netns, "-o", "link", "show"]).splitlines()
        names = [line.split(": ")[1].split("@")[0] for line in links]
        if names != ["lo"]:
            found.append(f"links in {env.netns}: {[n for n in names if n != 'lo']}")
        tables = run(in_ns(env.netns, ["nft", "list", "tables"])).strip()
        if tables:
            found.append(f"nftables tables in {env.netns}: {tables.splitlines()}")
        others = sorted(n for n in nsutil.list_netns() if n.startswith("vdcbb" + env.tag))
        if others != [env.netns]:
            found.append(f"namespaces {others} (expected only {env.netns})")
        host = run(["ip", "-o", "link", "show"]).splitlines()
        stray = {line.split(": ")[1].split("@")[0] for line in host} & planned_links
        if stray:
            found.append(f"links in the host namespace: {sorted(stray)}")
        ledger = env.run_dir / "vdc-ledger.jsonl"
        if ledger.exists():
            found.append(f"vdc ledger {ledger}")
        return found

    def check(self, what: str, planned_links: set[str]) -> None:
        deadline = time.monotonic() + 5
        while True:
            found = self.leftovers(planned_links)
            if not found or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if found:
            raise BenchError(f"after {what}, left behind: " + "; ".join(found))

    def sweep(self) -> list[str]:
        env = self.env
        for proc in self.runner.started if self.runner else []:
            if proc.poll() is None:
                # vdc tears down on SIGTERM; QEMU exits on it.
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
        # QEMUs the vdc runs started (their command lines name the bench's directory).
        for pid in processes_mentioning(str(env.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        run(["ip", "netns", "del", env.netns], check=False)
        shutil.rmtree(env.root, ignore_errors=True)
        problems = []
        left = processes_mentioning(str(env.root))
        if left:
            problems.append(f"processes still running: {sorted(left)}")
        ours = sorted(n for n in nsutil.list_netns() if n.startswith("vdcbb" + env.tag))
        if ours:
            problems.append(f"namespaces still present: {ours}")
        return problems


# -- start-up cost of vdc's Python ---------------------------------------------------------------


def startup_probe(env: Env, spec: Path, repeat: int) -> list[tuple[str, float]]:
    py = sys.executable
    imports = "import vdc_runtime.cli, vdc_runtime.datacenter, vdc_runtime.api"
    warm_env = dict(env.child_env, PYTHONPYCACHEPREFIX=str(env.root / "pycache"))
    warm_env.pop("PYTHONDONTWRITEBYTECODE", None)
    probes: list[tuple[str, list[str], dict[str, str]]] = [
        ("python -c pass", [py, "-c", "pass"], env.child_env),
        ("import cli+datacenter+api (as run)", [py, "-c", imports], env.child_env),
        ("same, warm bytecode cache", [py, "-c", imports], warm_env),
        (f"vdc validate ({spec.name})", [py, "-m", "vdc_runtime.cli", "validate", str(spec)],
         env.child_env),
    ]  # fmt: skip
    subprocess.run([py, "-c", imports], env=warm_env, check=True)  # fill the warm cache
    results = []
    for label, argv, child_env in probes:
        times = []
        for _ in range(repeat):
            t0 = time.monotonic()
            subprocess.run(argv, env=child_env, check=True, capture_output=True)
            times.append(time.monotonic() - t0)
        results.append((label, statistics.median(times)))
    return results


# Imported in this order by `vdc run` (cli, then datacenter and api in `_run`); each figure is
# the module's cumulative import time, i.e. what it adds on top of the ones before it.
IMPORT_GROUPS = (
    ("vdc_runtime.spec", "spec: pydantic, yaml, models"),
    ("vdc_runtime.fabric", "fabric: plan, netlink, nftables"),
    ("vdc_runtime.nodes.machine", "machine: qemu.qmp"),
    ("aiohttp", "api: aiohttp"),
)


def import_breakdown(env: Env, repeat: int) -> list[tuple[str, float]]:
    """Median cumulative `-X importtime` of the big pieces of `vdc run`'s imports, seconds."""
    code = "import vdc_runtime.cli, vdc_runtime.datacenter, vdc_runtime.api"
    runs: dict[str, list[float]] = {label: [] for _, label in IMPORT_GROUPS}
    runs["all imports"] = []
    for _ in range(repeat):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            env=env.child_env,
            capture_output=True,
            text=True,
            check=True,
        )
        total = 0
        cumulative: dict[str, int] = {}
        for line in proc.stderr.splitlines():
            parts = line.removeprefix("import time:").split("|")
            if len(parts) != 3 or not parts[1].strip().isdigit():
                continue
            name = parts[2].rstrip()
            if not name.startswith("  "):
                total += int(parts[1])  # a top-level import: its cumulative time counts once
            cumulative.setdefault(name.strip(), int(parts[1]))
        for module, label in IMPORT_GROUPS:
            runs[label].append(cumulative.get(module, 0) / 1e6)
        runs["all imports"].append(total / 1e6)
    return [(label, statistics.median(values)) for label, values in runs.items()]


# -- report --------------------------------------------------------------------------------------


def fmt_ratio(a: float, b: float) -> str:
    return f"{a / b:.3f}x" if b > 0 else "-"


def mib(kib: float | None) -> str:
    return f"{kib / MIB:.1f}" if kib is not None else "-"


def report(
    cases: list[Case],
    results: dict[int, dict[str, list[Sample]]],
    repeat: int,
    facts: HostFacts,
    reason: str,
    guest: GuestPaths,
    probes: list[tuple[str, float]],
    imports: list[tuple[str, float]],
    env: Env,
    load: float,
) -> None:
    med = statistics.median

    def m(samples: list[Sample], get: Callable[[Sample], float | None]) -> float | None:
        values = [v for v in map(get, samples) if v is not None]
        return med(values) if values else None

    qemu_version = run([facts.qemu_binary, "--version"]).splitlines()[0]
    mem_total = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    print()
    print(
        f"vdc run vs the same QEMU command lines started directly: N guests until every console "
        f"shows VDC-GUEST-READY, median of {repeat}; target: vdc <= {TARGET_RATIO:.2f}x bare "
        "(not asserted)"
    )
    print(
        f"guest: {guest.kernel_package} {guest.package_version}, PVH vmlinux + initrd, 1 vCPU, "
        "256M, console=ttyS0 quiet, one NIC each on one internal network (bridge + taps on "
        "both sides)"
    )
    print(
        f"kernel {platform.release()}, {os.cpu_count()} cpus, {mem_total / MIB / 1024:.1f} GiB, "
        f"{qemu_version}, accel {facts.accel} ({reason}), vhost {'on' if facts.vhost else 'off'}, "
        f"mtu {facts.mtu or 'default'}, python {platform.python_version()}, "
        f"PYTHONDONTWRITEBYTECODE={env.child_env.get('PYTHONDONTWRITEBYTECODE', '-')}, "
        f"load average at start {load:.2f}"
    )
    print(
        "boot = spawn of `vdc run` (vdc) / of `ip -batch` making bridge+taps (bare) until the "
        "last READY; tdown = SIGTERM until vdc exited / QEMUs exited and links deleted; RSS = "
        "VmRSS at READY"
    )
    base = min(cases, key=lambda c: c.size)
    base_rss = m(results[base.size]["vdc"], lambda s: s.rss_kib)
    header = (
        f"{'N':>3} {'vdc boot s':>10} {'bare boot s':>11} {'ratio':>6} {'target':>7} "
        f"{'vdc tdown s':>11} {'bare tdown s':>12} {'vdc RSS MiB':>11} "
        f"{f'+/node vs N={base.size}':>15} {'QEMU RSS/node MiB':>17}"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        v, b = results[case.size]["vdc"], results[case.size]["bare"]
        vb, bb = m(v, lambda s: s.boot) or 0.0, m(b, lambda s: s.boot) or 0.0
        rss = m(v, lambda s: s.rss_kib)
        per_node = (
            mib((rss - base_rss) / (case.size - base.size))
            if case.size > base.size and rss is not None and base_rss is not None
            else "-"
        )
        verdict = "meets" if vb <= TARGET_RATIO * bb else "MISSES"
        print(
            f"{case.size:>3} {vb:>10.2f} {bb:>11.2f} {fmt_ratio(vb, bb):>6} {verdict:>7} "
            f"{m(v, lambda s: s.down) or 0:>11.2f} {m(b, lambda s: s.down) or 0:>12.2f} "
            f"{mib(rss):>11} {per_node:>15} {mib(m(v, lambda s: s.qemu_rss_kib)):>17}"
        )
    print()
    print(
        "where the time goes (medians, s after the spawn; QEMU start times from /proc; guest "
        "uptime = the slowest guest's own /proc/uptime in its READY line; QEMU CPU / wait = "
        "per QEMU, its threads' CPU time and their time runnable but waiting for a CPU, at "
        "READY):"
    )
    header = (
        f"{'N':>3} {'side':<5} {'1st QEMU':>8} {'last QEMU':>9} {'all READY':>9} "
        f"{'READY-last QEMU':>15} {'guest uptime':>12} {'QEMU CPU':>8} {'QEMU wait':>9} "
        f"{'vdc CPU s':>9}  vdc log lines / bare steps"
    )
    print(header)
    print("-" * len(header))
    for case in cases:
        for side in ("vdc", "bare"):
            s = results[case.size][side]
            first, last = m(s, lambda x: x.first_qemu), m(s, lambda x: x.last_qemu)
            ready = m(s, lambda x: x.boot)
            labels = [label for label, _, _ in VDC_MARKS] if side == "vdc" else list(s[0].marks)
            marks = ", ".join(
                f"{label} {value:.2f}"
                for label in labels
                if (value := m(s, lambda x, k=label: x.marks.get(k))) is not None
            )
            cpu = m(s, lambda x: x.cpu)
            uptime = m(s, lambda x: x.guest_uptime) or 0.0
            print(
                f"{case.size:>3} {side:<5} {first or 0:>8.2f} {last or 0:>9.2f} {ready or 0:>9.2f} "
                f"{(ready or 0) - (last or 0):>15.2f} {uptime:>12.2f} "
                f"{m(s, lambda x: x.qemu_cpu) or 0:>8.2f} {m(s, lambda x: x.qemu_wait) or 0:>9.2f} "
                f"{f'{cpu:.2f}' if cpu is not None else '-':>9}"
                f"  {marks}"
            )
    print()
    print(
        "start-up cost of vdc's Python (median, s): " + "; ".join(f"{k} {v:.2f}" for k, v in probes)
    )
    print(
        "  -X importtime of `vdc run`'s imports (median, s): "
        + "; ".join(f"{k} {v:.2f}" for k, v in imports)
    )
    overhead = [
        (m(results[c.size]["vdc"], lambda x: x.first_qemu) or 0.0)
        - (m(results[c.size]["bare"], lambda x: x.first_qemu) or 0.0)
        for c in cases
    ]
    print(
        "vdc's head start lost before its first QEMU exists (vdc 1st QEMU - bare 1st QEMU): "
        + ", ".join(f"N={c.size} {o:.2f} s" for c, o in zip(cases, overhead, strict=True))
    )
    print()
    print("samples (s; RSS MiB):")
    for case in cases:
        for side in ("vdc", "bare"):
            s = results[case.size][side]
            print(
                f"  {case.size:>2} {side:<4} boot "
                + " ".join(f"{x.boot:.2f}" for x in s)
                + "  tdown "
                + " ".join(f"{x.down:.2f}" for x in s)
                + ("  rss " + " ".join(mib(x.rss_kib) for x in s) if side == "vdc" else "")
            )


# -- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,4,8", help="comma list of guest counts")
    parser.add_argument("--repeat", type=int, default=5, help="runs per size and side (median)")
    parser.add_argument("--settle", type=float, default=1.0, help="pause after each run, s")
    parser.add_argument("--no-warmup", action="store_true", help="skip the unreported N=1 runs")
    args = parser.parse_args()
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s})
    except ValueError:
        parser.error("--sizes takes integers")
    if not args.sizes or min(args.sizes) < 1 or max(args.sizes) > 64 or args.repeat < 1:
        parser.error("--sizes must be between 1 and 64 and --repeat >= 1")
    return args


def bench(args: argparse.Namespace, env: Env, runner: Runner, janitor: Janitor) -> None:
    load = os.getloadavg()[0]
    run(["ip", "netns", "add", env.netns])
    run(["ip", "-n", env.netns, "link", "set", "lo", "up"])
    guest = build_guest()
    facts, reason = host_facts(env)
    cases = [make_case(env, size, guest, facts) for size in args.sizes]
    planned = {env.bridge} | {tap for case in cases for tap in case.taps}
    janitor.check("creating the namespace", planned)

    def once(case: Case, side: str, verify: bool) -> Sample:
        sample = runner.vdc(case, verify) if side == "vdc" else runner.bare(case)
        janitor.check(f"{side} run with N={case.size}", planned)
        time.sleep(args.settle)
        return sample

    if not args.no_warmup:
        # Pages in QEMU, the guest and Python's modules; not reported.
        print("warm-up (N=1, both sides) ...", file=sys.stderr, flush=True)
        warm = make_case(env, 1, guest, facts)
        once(warm, "vdc", True)
        once(warm, "bare", True)
    results: dict[int, dict[str, list[Sample]]] = {}
    for j, case in enumerate(cases):
        results[case.size] = {"vdc": [], "bare": []}
        for i in range(args.repeat):
            order = ["vdc", "bare"] if (i + j) % 2 == 0 else ["bare", "vdc"]
            for side in order:
                sample = once(case, side, verify=i == 0)
                results[case.size][side].append(sample)
                print(
                    f"N={case.size} run {i + 1}/{args.repeat} {side}: boot {sample.boot:.2f} s, "
                    f"teardown {sample.down:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    probes = startup_probe(env, cases[-1].spec, 3)
    imports = import_breakdown(env, 3)
    report(cases, results, args.repeat, facts, reason, guest, probes, imports, env, load)


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        sys.exit("boot: run as root (it creates a network namespace, a bridge and taps)")
    if nsutil.NETNS_DIR != NETNS_DIR:
        sys.exit(f"boot: vdc uses {nsutil.NETNS_DIR}, ip(8) uses {NETNS_DIR}; unset VDC_NETNS_DIR")
    for tool in ("ip", "nsenter", "nft", "qemu-system-x86_64"):
        if shutil.which(tool) is None:
            sys.exit(f"boot: {tool} not found")
    # Also when started with SIGINT ignored (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    tag = os.urandom(3).hex()
    root = Path(tempfile.mkdtemp(prefix=f"vdcbb{tag}-"))
    child_env = dict(os.environ)
    child_env.pop("VDC_NETNS_DIR", None)
    # The vdc under test is this checkout's, whatever the venv's editable install points at.
    child_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), str(ROOT)])
    env = Env(
        tag=tag,
        netns=f"vdcbb{tag}",
        root=root,
        run_dir=root / "run",
        data_dir=root / "data",
        cache_dir=root / "cache",
        child_env=child_env,
    )
    (root / "logs").mkdir()
    runner = Runner(env)
    janitor = Janitor(env, runner)
    status = 0
    try:
        bench(args, env, runner, janitor)
    except KeyboardInterrupt:
        print("\nboot: interrupted; cleaning up", file=sys.stderr)
        status = 130
    except BenchError as exc:
        print(f"\nboot: ABORTED: {exc}", file=sys.stderr)
        status = 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            for problem in janitor.sweep():
                print(f"boot: cleanup: {problem}", file=sys.stderr)
                status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
