"""The operator at scale, for bench/operator.py (`--mode scale`): many VDCs of two groups
each, whose pods can never be scheduled, beside a few that run small fabrics.

For each rate (`--rates 0,20`) and scale N (`--scale 100,500`), on the e2e cluster with
the operator installed:

- N "parked" VDCs of two groups, each group one network namespace, their pods asking for a
  node label no node has (so the scheduler keeps them Pending and nothing boots), plus
  `--running` VDCs of two groups whose agents really run a small fabric (a network
  stretched between the groups, a namespace in each), created through the API by 8
  threads, at full speed (rate 0: a burst, harder than any one client makes) or paced at
  a rate of VDCs per second (a CI system's steady stream), or by one `kubectl apply -f` of
  a file that holds them all (rate `kubectl`: what a user types);
- apply -> pods created: per VDC, from the return of its create call (with kubectl, from
  the moment a watch sees the VDC: kubectl tells no times) to the moment a watch of the
  bench sees the last of its two pods; p50, p99 and max;
- the operator's requests to the API: while creating, until it has asked nothing for 3 s
  ("operator quiet"); then while idle for `--idle` seconds; and while deleting: counted
  in the apiserver's audit log (the e2e cluster logs every request of the operator's
  namespace), per VDC and by verb;
- delete -> gone: one collection delete, until no VDC and no pod of the bench is left;
- the operator's RSS (peak, and at the end) and CPU seconds per phase, from /proc;
- with `--floor`, every rate and scale again with the operator's chart uninstalled and the
  floor controller of bench/operator_floor.py making the same children with nothing else:
  its p99 is what this machine's API server, etcd and scheduler allow, and the operator's
  p99 over it ("p99 / floor") is what the operator adds.

Targets (printed, not asserted): p99 apply -> pods <= 2 s, RSS <= 300 MiB, requests per
VDC the same at every N (no growth faster than linear), no requests while idle but the
watches' renewals.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import resource
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.watch.watch import iter_resp_lines
from tests.e2e.cluster import config as cluster_config
from tests.e2e.conftest import OPERATOR_NAMESPACE, Kube

import operator_floor

NS = "vdc-scale"
GROUP, VERSION, PLURAL = "vdc.dev", "v1alpha1", "virtualdatacenters"
P99_TARGET, RSS_TARGET_MIB = 2.0, 300
KUBECTL = -1.0
"""The rate that stands for one `kubectl apply -f` of every VDC."""
PAGE = 4096


def parked(name: str) -> dict[str, Any]:
    """Two groups, never scheduled: a node label nobody has."""
    return _vdc(name, {"nodeSelector": {"vdc.dev/bench": "never-scheduled"}})


def running(name: str) -> dict[str, Any]:
    return _vdc(name, {})


def _vdc(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "VirtualDataCenter",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "networks": [{"name": "lan", "type": "internal"}],
            "groups": [{"name": "a"}, {"name": "b"}],
            "networkNamespaces": [
                {"name": "ns-a", "group": "a",
                 "interfaces": [{"network": "lan", "addresses": ["10.97.0.1/24"]}]},
                {"name": "ns-b", "group": "b",
                 "interfaces": [{"network": "lan", "addresses": ["10.97.0.2/24"]}]},
            ],
            # Small requests: 40 running agents beside the cluster's own pods on 2 cores.
            "pod": {**pod, "resources": {"cpu": "10m", "memory": "96Mi"}},
        },
    }  # fmt: skip


# -- the operator's process -------------------------------------------------------------------


def operator_pid() -> int:
    done = subprocess.run(["pgrep", "-f", "kopf run"], capture_output=True, text=True)
    pids = [int(p) for p in done.stdout.split()]
    if len(pids) != 1:
        raise RuntimeError(f"expected one operator process (kopf run), found {pids}")
    return pids[0]


def control_plane_pids() -> list[int]:
    """The API server's and etcd's, whose CPU the operator's requests cost too."""
    found = []
    for name in ("kube-apiserver", "etcd"):
        done = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        found += [int(p) for p in done.stdout.split()]
    return found


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """The operator's peak RSS, sampled every 0.2 s while `running`."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, rss_mib(self.pid))
            self._stop.wait(0.2)

    @contextlib.contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


# -- the audit log ----------------------------------------------------------------------------


class Audit:
    """The operator's requests as the apiserver logged them, from a mark on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.inode = 0

    def mark(self) -> None:
        stat = self.path.stat()
        self.offset, self.inode = stat.st_size, stat.st_ino

    def _lines(self) -> Iterator[bytes]:
        """What was logged since the mark, across a rotation (the API server renames a
        full log to audit-<time>.log and starts a new one)."""
        files = [(self.path, self.offset)]
        if self.path.stat().st_ino != self.inode:
            rotated = [f for f in self.path.parent.glob("audit-*.log")
                       if f.stat().st_ino == self.inode]  # fmt: skip
            files = [(f, self.offset) for f in rotated] + [(self.path, 0)]
        for path, offset in files:
            with path.open("rb") as log:
                log.seek(offset)
                yield from log

    def written(self) -> tuple[int, int]:
        """Which log and how much of it: changes whenever a request is logged."""
        stat = self.path.stat()
        return stat.st_ino, stat.st_size

    def since_mark(self) -> Counter[str]:
        """Requests by "verb resource" (a watch counts when it starts)."""
        counts: Counter[str] = Counter()
        for line in self._lines():
            event = json.loads(line)
            user = event.get("user") or {}
            if cluster_config.AUDITED_GROUP not in (user.get("groups") or []):
                continue
            verb = event.get("verb", "?")
            if event.get("stage") != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?")
            if ref.get("subresource"):
                resource += "/" + ref["subresource"]
            counts[f"{verb} {resource}"] += 1
        return counts


# -- watching what appears and goes -----------------------------------------------------------


class FirstSight:
    """The first sight of every pod (or VDC) of the bench, by name, timed in a process of
    its own: a thread of the bench saw events late whenever its creating threads held the
    GIL, and decoding every event into the client's models took CPU from what is measured.
    CLOCK_MONOTONIC is the machine's, so its times compare with the bench's own."""

    def __init__(self, kubeconfig: Path, kind: str = "pods") -> None:
        context = multiprocessing.get_context("fork")
        self._queue: multiprocessing.Queue[tuple[str, float] | None] = context.Queue()
        self._stop = context.Event()
        self._process = context.Process(
            target=_watch, args=(str(kubeconfig), kind, self._queue, self._stop), daemon=True
        )
        self.first: dict[str, float] = {}

    def start(self, timeout: float = 30) -> None:
        """Return once the watch is established: its first response has come."""
        self._process.start()
        if self._queue.get(timeout=timeout) is not None:
            raise RuntimeError("the pod watch reported before it was established")

    def update(self) -> dict[str, float]:
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not None:
                    self.first.setdefault(*item)
        return self.first

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=40)
        if self._process.is_alive():
            self._process.kill()


def _watch(kubeconfig: str, kind: str, out: multiprocessing.Queue[Any], stop: Any) -> None:
    config.load_kube_config(kubeconfig)
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    seen: set[str] = set()
    version: str | None = None
    established = False
    while not stop.is_set():
        common = {"watch": True, "allow_watch_bookmarks": True, "resource_version": version,
                  "timeout_seconds": 5, "_preload_content": False}  # fmt: skip
        try:
            if kind == "pods":
                response = core.list_namespaced_pod(NS, label_selector="vdc.dev/name", **common)
            else:
                response = custom.list_namespaced_custom_object(
                    GROUP, VERSION, NS, PLURAL, **common
                )
        except Exception:
            time.sleep(0.1)
            continue
        if not established:
            out.put(None)
            established = True
        with contextlib.suppress(Exception):
            for line in iter_resp_lines(response):
                event = json.loads(line)
                obj = event.get("object") or {}
                if event.get("type") == "ERROR":
                    version = None  # expired: watch again from now
                    break
                version = obj.get("metadata", {}).get("resourceVersion", version)
                name = obj.get("metadata", {}).get("name")
                if event.get("type") == "ADDED" and name not in seen:
                    seen.add(name)
                    out.put((name, time.monotonic()))
                if stop.is_set():
                    break
        response.close()  # not back to the pool: what is left unread would follow


def webhook_seconds(kube: Kube) -> float:
    """The API server's time in the admission webhooks of VDC creates so far (from its
    metrics): what the operator's webhooks add to every create."""
    total = 0.0
    for line in kube.run("get", "--raw", "/metrics").splitlines():
        if (line.startswith("apiserver_admission_webhook_admission_duration_seconds_sum")
                and 'name="vdc-' in line and 'operation="CREATE"' in line):  # fmt: skip
            total += float(line.rsplit(" ", 1)[1])
    return total


def quiet(audit: Audit, since: float, still: float = 3.0, limit: float = 300.0) -> float:
    """Wait until the audit log (the operator's requests only) has not grown for `still`
    seconds; the time from `since` to its last request. Its size says so: parsing it every
    half second would take the CPU the operator is measured on."""
    seen, last = audit.written(), time.monotonic()
    while time.monotonic() - last < still:
        written = audit.written()
        if written != seen:
            seen, last = written, time.monotonic()
        if time.monotonic() - since > limit:
            break
        time.sleep(0.5)
    return last - since


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# -- one scale --------------------------------------------------------------------------------


def measure(
    kube: Kube,
    count: int,
    running_count: int,
    idle: float,
    rate: float,
    floor: operator_floor.Floor | None = None,
) -> dict[str, Any]:
    """One scale and rate, made by the operator, or by `floor` (whose requests the audit
    log, which counts the operator's, leaves out)."""
    config.load_kube_config(str(kube.layout.kubeconfig))
    custom, core = client.CustomObjectsApi(), client.CoreV1Api()
    audit = Audit(kube.layout.run / "audit.log")
    pid = operator_pid() if floor is None else floor.pid
    names = [f"parked-{i}" for i in range(count)] + [f"run-{i}" for i in range(running_count)]
    watcher = FirstSight(kube.layout.kubeconfig)
    watcher.start()
    vdc_watcher = FirstSight(kube.layout.kubeconfig, "vdcs") if rate == KUBECTL else None
    if vdc_watcher is not None:
        vdc_watcher.start()
    by = "operator" if floor is None else "floor"
    result: dict[str, Any] = {"count": count, "running": running_count, "idle_s": idle,
                              "rate": rate, "by": by}  # fmt: skip
    created: dict[str, float] = {}

    def create(name: str, at: float) -> None:
        time.sleep(max(0.0, at - time.monotonic()))
        body = running(name) if name.startswith("run-") else parked(name)
        # The answer is not decoded into the client's models: the bench's CPU is the
        # measured system's, on a small machine.
        answer = custom.create_namespaced_custom_object(
            GROUP, VERSION, NS, PLURAL, body, _preload_content=False
        )
        answer.read()
        answer.release_conn()
        created[name] = time.monotonic()

    sampler = RssSampler(pid)
    with sampler.running():
        audit.mark()
        control = control_plane_pids()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        control0 = sum(cpu_seconds(p) for p in control)
        bench0 = _own_cpu()
        hooked0 = webhook_seconds(kube)
        start = time.monotonic()
        if vdc_watcher is not None:
            bodies = [running(n) if n.startswith("run-") else parked(n) for n in names]
            kube.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": bodies}))  # fmt: skip
        else:
            times = [start + (i / rate if rate > 0 else 0.0) for i in range(len(names))]
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, names, times))
        result["create_s"] = time.monotonic() - t0
        hooked = webhook_seconds(kube)
        # Per VDC created: the webhooks asked of each (none without the operator's chart).
        result["webhook_ms"] = (hooked - hooked0) * 1000 / len(names)
        deadline = time.monotonic() + 600
        pods = {n: (f"vdc-{n}-a", f"vdc-{n}-b") for n in names}
        while True:
            seen = watcher.update()
            missing = [n for n in names if not all(p in seen for p in pods[n])]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(missing)} VDCs without both pods, e.g. {missing[:3]}")
            time.sleep(0.1)
        result["all_pods_s"] = time.monotonic() - t0
        if vdc_watcher is not None:
            created = dict(vdc_watcher.update())
            vdc_watcher.stop()
        result["bench_cpu"] = _own_cpu() - bench0
        # Cores the API server and etcd kept busy until then: on a small machine, what
        # bounds how fast a burst of VDCs gets its pods, whatever the operator does.
        result["control_cores"] = (sum(cpu_seconds(p) for p in control) - control0) / (
            result["all_pods_s"]
        )
        latency = [max(seen[p] for p in pods[n]) - created[n] for n in names]
        result["p50"], result["p99"] = percentile(latency, 0.5), percentile(latency, 0.99)
        result["max"] = max(latency)
        # The running VDCs' agents report, the groups' statuses merge: until the operator
        # has asked nothing of the API for 3 s, its work for these VDCs goes on.
        result["quiet_s"] = quiet(audit, t0)
        result["apply_requests"] = audit.since_mark()
        result["apply_cpu"] = cpu_seconds(pid) - cpu0

        audit.mark()
        cpu0 = cpu_seconds(pid)
        time.sleep(idle)
        result["idle_requests"] = audit.since_mark()
        result["idle_cpu"] = cpu_seconds(pid) - cpu0
        result["rss_settled"] = rss_mib(pid)

        audit.mark()
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)
        deadline = time.monotonic() + 900
        while True:
            left_vdcs = custom.list_namespaced_custom_object(GROUP, VERSION, NS, PLURAL)["items"]
            left_pods = core.list_namespaced_pod(NS, label_selector="vdc.dev/name").items
            if not left_vdcs and not left_pods:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(left_vdcs)} VDCs, {len(left_pods)} pods left")
            time.sleep(0.5)
        result["delete_s"] = time.monotonic() - t0
        result["delete_requests"] = audit.since_mark()
        result["delete_cpu"] = cpu_seconds(pid) - cpu0
    result["rss_peak"] = sampler.peak
    watcher.stop()
    return result


def run(
    kube: Kube,
    scales: list[int],
    running_count: int,
    idle: float,
    rates: list[float],
    with_floor: bool = False,
) -> int:
    """Every rate and scale by the operator; then, `with_floor`, the same by the floor
    controller (bench/operator_floor.py), once the operator's chart is uninstalled."""
    kube.call("create", "namespace", NS)
    results = []
    try:
        for rate in rates:
            for count in scales:
                results.append(measure(kube, count, running_count, idle, rate))
                _line(results[-1])
        if with_floor:
            kube.helm("uninstall", "vdc", "--namespace", OPERATOR_NAMESPACE, "--wait")
            floor = operator_floor.Floor(str(kube.layout.kubeconfig), NS)
            floor.start()
            try:
                for rate in rates:
                    for count in scales:
                        results.append(measure(kube, count, running_count, idle, rate, floor))
                        _line(results[-1])
            finally:
                floor.stop()
    finally:
        kube.call("delete", "vdc", "-n", NS, "--all", "--wait=true", "--timeout=600s")
        kube.call("delete", "namespace", NS, "--wait=true", "--timeout=300s")
    report(results)
    return 0


def _line(result: dict[str, Any]) -> None:
    print(f"  N={result['count']} at {_rate(result['rate'])} by the {result['by']}:"
          f" apply->pods p50 {result['p50']:.2f} s p99 {result['p99']:.2f} s,"
          f" RSS peak {result['rss_peak']:.0f} MiB, creates {result['create_s']:.1f} s,"
          f" all pods {result['all_pods_s']:.1f} s, bench CPU {result['bench_cpu']:.1f} s",
          flush=True)  # fmt: skip


def _rate(rate: float) -> str:
    if rate == KUBECTL:
        return "kubectl apply"
    return f"{rate:g} VDCs/s" if rate else "full speed"


def _total(counts: Counter[str]) -> int:
    return sum(counts.values())


def report(results: list[dict[str, Any]]) -> None:
    print()
    print(f"The operator at scale: N parked VDCs of 2 groups + {results[0]['running']} running"
          f" ones (targets: p99 apply -> pods <= {P99_TARGET:.0f} s,"
          f" RSS <= {RSS_TARGET_MIB} MiB)")  # fmt: skip
    print("(by: the operator, or the floor controller, bench/operator_floor.py, which makes the"
          " same children with nothing else; p99 / floor: against the floor's run of the same"
          " N and rate)")  # fmt: skip
    print("| N | created at | by | create (API) | webhooks per create | all pods | quiet | p50 |"
          " p99 | max |"
          " p99 / target | p99 / floor | RSS peak | RSS / target | CPU apply | CPU idle |"
          " delete -> gone | CPU delete | API server + etcd |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    floors = {(r["count"], r["rate"]): r for r in results if r["by"] == "floor"}
    for r in results:
        under = floors.get((r["count"], r["rate"]))
        ratio = f"{r['p99'] / under['p99']:.2f}x" if under is not None else "-"
        print(f"| {r['count']} | {_rate(r['rate'])} | {r['by']} | {r['create_s']:.1f} s |"
              f" {r['webhook_ms']:.1f} ms |"
              f" {r['all_pods_s']:.1f} s | {r['quiet_s']:.1f} s |"
              f" {r['p50']:.2f} s | {r['p99']:.2f} s | {r['max']:.2f} s |"
              f" {r['p99'] / P99_TARGET:.2f}x | {ratio} | {r['rss_peak']:.0f} MiB |"
              f" {r['rss_peak'] / RSS_TARGET_MIB:.2f}x | {r['apply_cpu']:.1f} s |"
              f" {r['idle_cpu']:.1f} s | {r['delete_s']:.1f} s |"
              f" {r['delete_cpu']:.1f} s | {r['control_cores']:.2f} cores |")  # fmt: skip
    results = [r for r in results if r["by"] == "operator"]
    base = results[0]
    print()
    print(f"The operator's API requests per VDC (audit log; ratio: against N={base['count']})")
    print("| N | created at | apply | ratio | idle (total, per s) | delete | ratio | lists |"
          " watches |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    vdcs0 = base["count"] + base["running"]
    for r in results:
        vdcs = r["count"] + r["running"]
        apply, delete = _total(r["apply_requests"]) / vdcs, _total(r["delete_requests"]) / vdcs
        apply0 = _total(base["apply_requests"]) / vdcs0
        delete0 = _total(base["delete_requests"]) / vdcs0
        every = r["apply_requests"] + r["idle_requests"] + r["delete_requests"]
        lists = sum(v for k, v in every.items() if k.startswith("list "))
        watches = sum(v for k, v in every.items() if k.startswith("watch "))
        idle = _total(r["idle_requests"])
        print(f"| {r['count']} | {_rate(r['rate'])} | {apply:.1f} | {apply / apply0:.2f}x |"
              f" {idle}, "
              f"{idle / r['idle_s']:.2f}/s | {delete:.1f} | {delete / delete0:.2f}x |"
              f" {lists} | {watches} |")  # fmt: skip
    largest = results[-1]
    vdcs = largest["count"] + largest["running"]
    print()
    print(f"By verb at N={largest['count']}: per VDC while applying and deleting; in all"
          " while idle")  # fmt: skip
    print("| request | apply | idle | delete |")
    print("|---|---|---|---|")
    phases = [largest[k] for k in ("apply_requests", "idle_requests", "delete_requests")]
    for verb in sorted(set().union(*phases)):
        apply, idle, delete = (phase[verb] for phase in phases)
        print(f"| {verb} | {apply / vdcs:.2f} | {idle} | {delete / vdcs:.2f} |")
