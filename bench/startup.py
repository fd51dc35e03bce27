"""Benchmark (not a test): `vdc run` beside Placemat v2's `placemat2` on the same small file.

    sudo /var/cache/vdc/venv/bin/python bench/startup.py [--repeat 7] [--placemat2 PATH]

Both read the same Placemat v2 YAML: a spine-leaf fabric of 8 network namespaces (2
spines, 3 racks with a ToR and a host each) on 9 internal networks with /31 and /26
addresses; no machines, scripts or apps, so what is measured is each tool's own start-up
and fabric. For each run, alternating sides, the bench starts the tool and polls, every
2 ms, its REST API (`GET /nodes`, which both serve) and the namespaces' addresses (one
netlink dump per namespace not yet complete, from the bench's own process: no `ip` forked
on the 2-CPU machine); it reports, median of `--repeat`:

- ready: from spawning the process until the API has answered 200;
- fabric complete: until, besides, every namespace of the file exists with all its
  addresses. The fair one: Placemat starts its namespaces' setup in goroutines and serves
  its API at once, so its first answer can come before its fabric exists;
- CPU: the tool's user + system time by then (/proc, its threads and waited children);
- RSS: its resident memory by then (VmRSS);
- teardown: from SIGTERM until the process has exited, everything removed.

The target (printed, not asserted): vdc in at most 0.7x Placemat's time, for both. Beside it,
the floors: a bare interpreter of the same Python, one that imports asyncio and aiohttp
(what serving the API needs), ones that import vdc's spec models (what a run of a spec
validated before needs) or its loader (what validating needs), and aiohttp with the
models together. vdc is run as users run it, through the `vdc` script of the Python
environment running this bench (the warm-up run validates the file, the measured ones
find it in the spec cache under the run's --cache-dir);
`placemat2` is found on PATH (`go install github.com/cybozu-go/placemat/v2/cmd/placemat2
@v2.4.11`, or built from Placemat's repository) or given with `--placemat2`; it must be
Placemat's Go binary: vdc's own drop-in of that name (a Python script in vdc's
environment) is passed over on PATH and refused with `--placemat2`.

Isolation: the script re-executes itself under `unshare --net --mount` and mounts a private
tmpfs on /run/netns, so the bridges, veths, namespaces, iptables/nftables rules and the
API's loopback port of both tools live in a throw-away network namespace that vanishes
with the process. After every run it checks that the tool left no link, namespace or
process behind, and aborts if one did.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import os
import platform
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

INNER_ENV = "VDC_BENCH_STARTUP_ISOLATED"
Layout = dict[str, list[tuple[str, str]]]
Expected = dict[str, set[tuple[str, int]]]
NETNS_DIR = Path("/run/netns")
PORT = 10808
TARGET = 0.7
POLL = 0.002
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


# -- the file (pure) ---------------------------------------------------------------------------


def spine_leaf_layout(spines: int = 2, racks: int = 3) -> tuple[list[str], Layout]:
    """The networks, and each namespace's interfaces as (network, address/prefix), in the
    order the file declares them."""
    networks: list[str] = []
    namespaces: Layout = {}
    link = 0
    for s in range(spines):
        for r in range(racks):
            net = f"s{s}-r{r}"
            networks.append(net)
            base = 2 * link
            link += 1
            namespaces.setdefault(f"spine{s}", []).append(
                (net, f"10.1.{base // 256}.{base % 256}/31")
            )
            namespaces.setdefault(f"rack{r}-tor", []).append(
                (net, f"10.1.{(base + 1) // 256}.{(base + 1) % 256}/31")
            )
    for r in range(racks):
        net = f"r{r}-node"
        networks.append(net)
        namespaces.setdefault(f"rack{r}-tor", []).append((net, f"10.2.{r}.1/26"))
        namespaces[f"rack{r}-host"] = [(net, f"10.2.{r}.10/26")]
    return networks, namespaces


def spine_leaf(spines: int = 2, racks: int = 3) -> str:
    """Placemat v2 YAML: spines, a ToR and a host per rack, point-to-point /31 links."""
    networks, namespaces = spine_leaf_layout(spines, racks)
    docs = [f"kind: Network\nname: {net}\ntype: internal\n" for net in networks]
    for name, interfaces in namespaces.items():
        lines = [f"kind: NetworkNamespace\nname: {name}\ninterfaces:"]
        for net, address in interfaces:
            lines.append(f"- network: {net}\n  addresses: [{address}]")
        docs.append("\n".join(lines) + "\n")
    return "---\n".join(docs)


def expected_addresses(namespaces: Layout) -> Expected:
    """Per namespace, the (address, prefix length) pairs it has once its fabric is built."""
    out: Expected = {}
    for name, interfaces in namespaces.items():
        pairs = set()
        for _net, cidr in interfaces:
            address, prefix = cidr.split("/")
            pairs.add((address, int(prefix)))
        out[name] = pairs
    return out


# -- fabric complete: addresses read through netlink, in the bench's own process ----------------


CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
RTM_GETADDR = 22
RTM_NEWADDR = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
IFA_ADDRESS, IFA_LOCAL = 1, 2
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netlink_socket_in(path: Path) -> socket.socket | None:
    """A route netlink socket of the namespace at `path` (a socket stays in the namespace
    it was made in), or None while the tool has not mounted it there yet. Python 3.11
    has no os.setns; the switch is done and undone on this thread alone."""
    try:
        target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            _setns(target)
        except OSError:
            return None  # still the empty file the bind mount goes onto
        try:
            return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def ipv4_addresses(sock: socket.socket) -> set[tuple[str, int]]:
    """Every IPv4 (address, prefix length) of the socket's namespace: one RTM_GETADDR dump."""
    ifaddrmsg = struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)
    header = struct.pack(
        "=IHHII", 16 + len(ifaddrmsg), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0
    )
    sock.send(header + ifaddrmsg)
    found: set[tuple[str, int]] = set()
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + 16 <= len(data):
            length, kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", data, offset)
            if kind in (NLMSG_DONE, NLMSG_ERROR) or length < 16:
                return found
            if kind == RTM_NEWADDR:
                prefix = data[offset + 17]
                local = address = None
                at = offset + 16 + 8
                end = offset + length
                while at + 4 <= end:
                    rta_len, rta_type = struct.unpack_from("=HH", data, at)
                    if rta_len < 4:
                        break
                    value = data[at + 4 : at + rta_len]
                    if rta_type == IFA_LOCAL:
                        local = socket.inet_ntoa(value)
                    elif rta_type == IFA_ADDRESS:
                        address = socket.inet_ntoa(value)
                    at += (rta_len + 3) & ~3
                if local or address:
                    found.add((local or address or "", prefix))
            offset += (length + 3) & ~3


@dataclass
class FabricWatch:
    """Which namespaces of the file exist with all their addresses; polled, each namespace
    read until it is complete, then no more."""

    expected: Expected
    done: set[str] = field(default_factory=set)
    sockets: dict[str, socket.socket] = field(default_factory=dict)

    def complete(self) -> bool:
        for name, wanted in self.expected.items():
            if name in self.done:
                continue
            sock = self.sockets.get(name)
            if sock is None:
                sock = netlink_socket_in(NETNS_DIR / name)
                if sock is None:
                    return False
                self.sockets[name] = sock
            if not wanted <= ipv4_addresses(sock):
                return False
            self.done.add(name)
            # An open socket keeps its namespace, and the veths in it, past the tool's
            # teardown: closed as soon as it has answered.
            self.sockets.pop(name).close()
        return True

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()


# -- measuring one run -------------------------------------------------------------------------


@dataclass
class Sample:
    ready: float
    fabric: float
    """Until every namespace of the file has all its addresses and the API has answered."""
    cpu: float
    rss_mib: float
    teardown: float


@dataclass
class Side:
    name: str
    argv: list[str]
    exit_codes: tuple[int, ...]
    """What the tool exits with after SIGTERM when all went well."""
    emptied: Path | None = None
    """A folder emptied before each run: the uncached side's --cache-dir."""
    samples: list[Sample] = field(default_factory=list)


def api_answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", "/nodes")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after the name.
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_once(side: Side, log: Path, timeout: float, expected: Expected) -> Sample:
    watch = FabricWatch(expected)
    ready: float | None = None
    fabric: float | None = None
    cpu = rss = 0.0
    if side.emptied is not None:
        shutil.rmtree(side.emptied, ignore_errors=True)
        side.emptied.mkdir()
    with log.open("ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(side.argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            while ready is None or fabric is None:
                if ready is None and api_answers(PORT):
                    ready = time.perf_counter() - t0
                    cpu, rss = cpu_seconds(proc.pid), rss_mib(proc.pid)
                if fabric is None and watch.complete():
                    fabric = time.perf_counter() - t0
                if proc.poll() is not None:
                    raise BenchError(f"{side.name} exited with {proc.returncode}; see {log}")
                if time.perf_counter() - t0 > timeout:
                    raise BenchError(f"{side.name} did not answer within {timeout:.0f} s")
                if ready is None or fabric is None:
                    time.sleep(POLL)
            watch.close()
            t1 = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout)
            teardown = time.perf_counter() - t1
        finally:
            watch.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if code not in side.exit_codes:
        raise BenchError(f"{side.name} exited with {code} after SIGTERM; see {log}")
    assert ready is not None and fabric is not None
    return Sample(ready, max(ready, fabric), cpu, rss, teardown)


def leftovers(base_links: set[str]) -> list[str]:
    found = [f"netns {n}" for n in sorted(os.listdir(NETNS_DIR))]
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    links = {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}
    found += [f"link {name}" for name in sorted(links - base_links)]
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.append(f"process {pid} ({stat.split('(', 1)[1].split(')')[0]})")
    return found


def settled_leftovers(base_links: set[str], within: float = 5) -> list[str]:
    """What is still there once the kernel has had time to free deleted namespaces:
    Placemat deletes them and lets their veths go with them, which the kernel does
    asynchronously."""
    deadline = time.monotonic() + within
    while (left := leftovers(base_links)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# -- report ------------------------------------------------------------------------------------


FLOORS = {
    "python, nothing imported": "pass",
    "python + asyncio + aiohttp.web": "import asyncio, aiohttp.web",
    "python + vdc's spec models": "import vdc_runtime.spec.models",
    "python + vdc's spec loader": "import vdc_runtime.spec.loader",
    "python + aiohttp.web + spec models": "import asyncio, aiohttp.web, vdc_runtime.spec.models",
}
"""Fresh interpreters of vdc's environment: what any Python tool serving its API with
aiohttp pays before doing anything; what a spec's models add (all a run of a spec it
validated before needs), what validating one adds (the loader, YAML, the checks); and
the two a cached run cannot do without, together."""


def measure_floors(repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {label: [] for label in FLOORS}
    for _ in range(repeat):
        for label, code in FLOORS.items():
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times[label].append(time.perf_counter() - t0)
    return {label: statistics.median(v) for label, v in times.items()}


def report(sides: list[Side], repeat: int, spec: Path, floors: dict[str, float]) -> None:
    vdc, cold, placemat = sides
    med = statistics.median

    def m(side: Side, attr: str) -> float:
        return med(getattr(s, attr) for s in side.samples)

    print()
    print(f"vdc run vs placemat2 on the same file, median of {repeat} runs each, alternating")
    print(f"file: {spec.name} (8 network namespaces, 9 internal networks, no machines)")
    print(f"kernel {platform.release()}, {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"placemat2: {placemat.argv[0]}")
    print("vdc: the spec validated by an earlier run (cached); vdc uncached: validated each run")
    header = (
        f"{'':<24} {'vdc':>9} {'vdc uncached':>13} {'placemat2':>10}"
        f" {'vdc/placemat2':>14} {'uncached/placemat2':>19}"
    )
    print(header)
    print("-" * len(header))
    for label, attr, unit in (
        ("ready (first answer)", "ready", "s"),
        ("fabric complete", "fabric", "s"),
        ("CPU by then", "cpu", "s"),
        ("RSS by then", "rss_mib", "MiB"),
        ("teardown", "teardown", "s"),
    ):
        a, c, b = m(vdc, attr), m(cold, attr), m(placemat, attr)
        fmt = ".1f" if unit == "MiB" else ".3f"
        print(
            f"{label + ' ' + unit:<24} {a:>9{fmt}} {c:>13{fmt}} {b:>10{fmt}}"
            f" {a / b if b else 0:>13.2f}x {c / b if b else 0:>18.2f}x"
        )
    for label, attr in (("ready", "ready"), ("fabric complete", "fabric")):
        ratio = m(vdc, attr) / m(placemat, attr)
        verdict = "meets" if ratio <= TARGET else "MISSES"
        print(f"target: vdc {label} <= {TARGET}x placemat2: {ratio:.2f}x, {verdict} it")
    print(f"\nfloors, fresh interpreters of vdc's python, median of {repeat}:")
    for label, seconds in floors.items():
        ratios = ", ".join(
            f"{seconds / m(placemat, attr):.2f}x placemat2's {name}"
            for name, attr in (("ready", "ready"), ("fabric", "fabric"))
        )
        print(f"  {label:<36} {seconds:.3f} s  ({ratios})")
    print("\nsamples, s:")
    for side in sides:
        for label, attr in (("ready", "ready"), ("fabric", "fabric")):
            values = " ".join(f"{getattr(s, attr):.3f}" for s in side.samples)
            print(f"  {side.name:<12} {label:<7} {values}")


# -- isolation ---------------------------------------------------------------------------------


def reexec_isolated() -> None:
    if os.geteuid() != 0:
        sys.exit("startup: run as root (both tools create bridges and network namespaces)")
    origin = ",".join(os.readlink(f"/proc/self/ns/{ns}") for ns in ("net", "mnt"))
    env = dict(os.environ, **{INNER_ENV: origin})
    argv = ["unshare", "--net", "--mount", "--propagation", "private", "--"]
    argv += [sys.executable, str(Path(__file__).resolve()), *sys.argv[1:]]
    os.execvpe("unshare", argv, env)


def enter_isolation() -> None:
    origin = os.environ.get(INNER_ENV, "").split(",")
    for ns, started_in in zip(("net", "mnt"), origin, strict=True):
        if os.readlink(f"/proc/self/ns/{ns}") == started_in:
            sys.exit(f"startup: not in a private {ns} namespace; refusing to run")
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "vdc-bench", str(NETNS_DIR)],
                   check=True)  # fmt: skip
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


# -- main --------------------------------------------------------------------------------------


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def find_placemat2(path_env: str | None) -> tuple[Path | None, list[Path]]:
    """The first `placemat2` on PATH that is Placemat's Go binary, and the ones passed
    over: vdc's own drop-in (`vdc_runtime.compat:placemat2`, a Python script in its
    environment's bin) has the same name and would compare vdc with itself."""
    skipped: list[Path] = []
    for folder in (path_env or "").split(os.pathsep):
        candidate = Path(folder or ".") / "placemat2"
        if not candidate.is_file() or not os.access(candidate, os.X_OK):
            continue
        if is_elf(candidate):
            return candidate, skipped
        skipped.append(candidate)
    return None, skipped


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7, help="runs per side (median)")
    parser.add_argument("--placemat2", type=Path, help="its binary (default: found on PATH)")
    parser.add_argument("--timeout", type=float, default=60, help="per start and per stop, s")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    install = (
        "go install github.com/cybozu-go/placemat/v2/cmd/placemat2@v2.4.11, or build it "
        "from Placemat's repository, and pass --placemat2 PATH"
    )
    if args.placemat2 is None:
        found, skipped = find_placemat2(os.environ.get("PATH"))
        if found is None:
            passed = f" (only vdc's own Python drop-in: {', '.join(map(str, skipped))})"
            parser.error(
                f"Placemat's placemat2 not found on PATH{passed if skipped else ''}: {install}"
            )
        args.placemat2 = found
    elif not os.access(args.placemat2, os.X_OK):
        parser.error(f"--placemat2 {args.placemat2}: not an executable file")
    elif not is_elf(args.placemat2):
        parser.error(
            f"--placemat2 {args.placemat2}: not Placemat's Go binary (a script; vdc's own "
            f"drop-in would compare vdc with itself): {install}"
        )
    args.placemat2 = args.placemat2.absolute()
    return args


def main() -> int:
    args = parse_args()
    if INNER_ENV not in os.environ:
        reexec_isolated()
    enter_isolation()
    vdc_script = Path(sys.executable).with_name("vdc")
    if not vdc_script.exists():
        sys.exit(f"startup: no {vdc_script}; run the bench with vdc's environment's python")
    with tempfile.TemporaryDirectory(prefix="vdc-bench-startup-") as tmp_name:
        tmp = Path(tmp_name)
        spec = tmp / "spine-leaf.yml"
        spec.write_text(spine_leaf())
        expected = expected_addresses(spine_leaf_layout()[1])
        dirs = {name: tmp / name for name in ("run", "data", "cache")}
        for d in dirs.values():
            d.mkdir()
        common = [f"--{name}-dir={path}" for name, path in dirs.items()]
        common.append(f"--listen-addr=127.0.0.1:{PORT}")
        empty = tmp / "cache-emptied"
        uncached = [*common, f"--cache-dir={empty}"]  # the last --cache-dir is the one taken
        sides = [
            Side("vdc", [str(vdc_script), "run", *common, str(spec)], (0,)),
            Side("vdc uncached", [str(vdc_script), "run", *uncached, str(spec)], (0,), empty),
            # Placemat's process framework reports a stop by signal as an error.
            Side("placemat2", [str(args.placemat2), *common, str(spec)], (0, 1)),
        ]
        base_links = {"lo"}
        try:
            for side in sides:  # warm-up, not reported: page both in
                run_once(side, tmp / f"{side.name}.log", args.timeout, expected)
            for i in range(args.repeat):
                order = sides if i % 2 == 0 else sides[::-1]
                for side in order:
                    log = tmp / f"{side.name}.log"
                    side.samples.append(run_once(side, log, args.timeout, expected))
                    left = settled_leftovers(base_links)
                    if left:
                        raise BenchError(f"{side.name} left behind: {', '.join(left[:8])}")
                    time.sleep(0.2)
        except (BenchError, subprocess.TimeoutExpired) as exc:
            print(f"startup: ABORTED: {exc}", file=sys.stderr)
            for side in sides:
                log = tmp / f"{side.name}.log"
                if log.exists():
                    print(f"--- {log.name} (tail)", file=sys.stderr)
                    print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
            return 1
        report(sides, args.repeat, spec, measure_floors(args.repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
