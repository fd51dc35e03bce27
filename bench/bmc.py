"""Benchmark (not a test): BMC latency of a real guest, IPMI and Redfish, 1 and 20 clients.

    sudo PYTHONPATH=runtime:. /var/cache/vdc/venv/bin/python bench/bmc.py \\
        [--requests 200] [--clients 1,20]

One test guest (`tests/guest`) runs under TCG through `nodes.Machine`, with its BMC's IPMI
and Redfish servers bound on 127.0.0.1 (high ports). Measured, per concurrency level:

- baseline: the machine's own answer, `query-status` over QMP (what every power-status
  request of any front end ends in), awaited in-process;
- ipmi: "Get Chassis Status" (ipmitool's `power status`) over an open RMCP+ session,
  cipher suite 17, one pyghmi client per client process;
- redfish: GET /redfish/v1/Systems/<node> over HTTPS with Basic auth and keep-alive, one
  aiohttp client process running that many concurrent requesters.

Clients run in their own processes so they do not share the BMC's event loop or pyghmi's
class-level session table. Printed: p50 and p99 per case in milliseconds and their ratio
to the baseline at the same concurrency. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bmc.conftest import start_machine
from tests.guest.build import build_guest

from vdc_runtime.bmc.ipmi import IpmiService
from vdc_runtime.bmc.redfish import RedfishService
from vdc_runtime.bmc.tls import CertificateAuthority, ssl_context
from vdc_runtime.bmc.users import BmcUser, Users

USER, PASSWORD = "bench", "bench-password"

IPMI_CLIENT = r"""
import json, sys, time
from pyghmi.ipmi import command
a = json.loads(sys.argv[1])
ipmi = command.Command(bmc=a["host"], port=a["port"], userid=a["user"], password=a["password"])
ipmi.get_power()  # session set-up is not part of the round trip
times = []
for _ in range(a["count"]):
    t0 = time.perf_counter()
    ipmi.raw_command(netfn=0, command=1)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""

REDFISH_CLIENT = r"""
import asyncio, json, ssl, sys, time
import aiohttp
a = json.loads(sys.argv[1])
url, clients = a["url"], a["clients"]
async def main():
    ctx = ssl.create_default_context(cafile=a["ca"])
    auth = aiohttp.BasicAuth(a["user"], a["password"])
    times = []
    connector = aiohttp.TCPConnector(ssl=ctx, limit=clients)
    async with aiohttp.ClientSession(auth=auth, connector=connector) as s:
        async with s.get(url) as r:
            r.raise_for_status(); await r.read()
        async def one():
            for _ in range(a["count"]):
                t0 = time.perf_counter()
                async with s.get(url) as r:
                    r.raise_for_status(); await r.read()
                times.append(time.perf_counter() - t0)
        await asyncio.gather(*(one() for _ in range(clients)))
    print(json.dumps(times))
asyncio.run(main())
"""


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def baseline(target, clients: int, count: int) -> list[float]:
    times: list[float] = []

    async def one() -> None:
        for _ in range(count):
            t0 = time.perf_counter()
            await target.power_state()
            times.append(time.perf_counter() - t0)

    await asyncio.gather(*(one() for _ in range(clients)))
    return times


async def run_clients(argvs: list[list[str]]) -> list[float]:
    procs = [
        await asyncio.create_subprocess_exec(*a, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for a in argvs
    ]
    times: list[float] = []
    for proc in procs:
        out, err = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"client failed: {err.decode()[-2000:]}")
        times += json.loads(out)
    return times


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="per client")
    parser.add_argument("--clients", default="1,20")
    args = parser.parse_args()
    levels = [int(x) for x in args.clients.split(",")]
    guest = build_guest()
    with tempfile.TemporaryDirectory(prefix="vdc-bench-bmc-") as tmp_name:
        tmp = Path(tmp_name)
        running = await start_machine(guest, tmp, "bench-node")
        users = Users((BmcUser(USER, PASSWORD, "Administrator"),))
        ca = CertificateAuthority.load_or_create(tmp / "ca")
        cert, key = ca.issue(["127.0.0.1"], tmp / "certs")
        ipmi = IpmiService(users)
        redfish = RedfishService(users, ssl_for=lambda _address: ssl_context(cert, key))
        ipmi_port, redfish_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        try:
            await ipmi.add("127.0.0.1", running.target, ipmi_port)
            await redfish.add("127.0.0.1", running.target, redfish_port)
            await running.wait_console("VDC-GUEST-READY")
            url = f"https://127.0.0.1:{redfish_port}/redfish/v1/Systems/bench-node"
            rows = []
            for clients in levels:
                base = await baseline(running.target, clients, args.requests)
                ipmi_args = {"host": "127.0.0.1", "port": ipmi_port, "user": USER,
                             "password": PASSWORD, "count": args.requests}  # fmt: skip
                ipmi_times = await run_clients(
                    [[sys.executable, "-c", IPMI_CLIENT, json.dumps(ipmi_args)]] * clients
                )
                redfish_args = {"url": url, "ca": str(ca.cert_path), "user": USER,
                                "password": PASSWORD, "clients": clients,
                                "count": args.requests}  # fmt: skip
                redfish_times = await run_clients(
                    [[sys.executable, "-c", REDFISH_CLIENT, json.dumps(redfish_args)]]
                )
                for case, times in (("baseline QMP", base), ("IPMI", ipmi_times),
                                    ("Redfish", redfish_times)):  # fmt: skip
                    rows.append((case, clients, times, base))
        finally:
            await redfish.close()
            await ipmi.close()
            await running.machine.stop()
    print(f"\n{'case':<14}{'clients':>8}{'requests':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'p50 x':>8}{'p99 x':>8}")  # fmt: skip
    for case, clients, times, base in rows:
        p50, p99 = percentile(times, 0.5) * 1e3, percentile(times, 0.99) * 1e3
        b50, b99 = percentile(base, 0.5) * 1e3, percentile(base, 0.99) * 1e3
        print(f"{case:<14}{clients:>8}{len(times):>10}{p50:>9.2f}{p99:>9.2f}"
              f"{p50 / b50:>8.1f}{p99 / b99:>8.1f}")  # fmt: skip
    print(f"\nmean of all baseline requests: {statistics.mean(base) * 1e3:.2f} ms;"
          " ratios are against the baseline at the same concurrency")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
