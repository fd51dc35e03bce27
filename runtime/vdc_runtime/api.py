"""The local REST API of a running data center (Placemat's port, more endpoints)."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from aiohttp import web

from vdc_runtime import __version__
from vdc_runtime.datacenter import DataCenterRun

RUN_KEY: web.AppKey[DataCenterRun] = web.AppKey("run", DataCenterRun)


def parse_listen_addr(value: str) -> tuple[str, int]:
    """'127.0.0.1:10808', '[::1]:10808' or ':10808' (all addresses) → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen-addr {value!r}: expected HOST:PORT, e.g. 127.0.0.1:10808")
    host = host.removeprefix("[").removesuffix("]")
    if host:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if host != "localhost":
                raise ValueError(
                    f"--listen-addr {value!r}: {host!r} is not an IP address"
                ) from None
    return host or "0.0.0.0", int(port)


async def health(request: web.Request) -> web.Response:
    run = request.app[RUN_KEY]
    body = {
        "status": "ok" if run.phase == "running" else run.phase,
        "phase": run.phase,
        "version": __version__,
        "uptime_seconds": round(time.time() - run.started_at, 1) if run.started_at else 0,
        "failure": run.failure,
    }
    return web.json_response(body, status=200 if run.phase == "running" else 503)


async def networks(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUN_KEY].networks_json())


def _one(items: list[dict[str, Any]], kind: str, name: str) -> web.Response:
    for item in items:
        if item["name"] == name:
            return web.json_response(item)
    return web.json_response({"error": f"no {kind} named {name!r}"}, status=404)


async def network(request: web.Request) -> web.Response:
    run = request.app[RUN_KEY]
    return _one(run.networks_json(), "network", request.match_info["name"])


async def netns_list(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUN_KEY].netns_json())


async def netns_one(request: web.Request) -> web.Response:
    run = request.app[RUN_KEY]
    return _one(run.netns_json(), "network namespace", request.match_info["name"])


def make_app(run: DataCenterRun) -> web.Application:
    app = web.Application()
    app[RUN_KEY] = run
    app.router.add_get("/health", health)
    app.router.add_get("/networks", networks)
    app.router.add_get("/networks/{name}", network)
    app.router.add_get("/netns", netns_list)
    app.router.add_get("/netns/{name}", netns_one)
    return app


async def serve(run: DataCenterRun, listen_addr: str) -> web.AppRunner:
    host, port = parse_listen_addr(listen_addr)
    runner = web.AppRunner(make_app(run), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"cannot listen on {listen_addr}: {exc.strerror}") from exc
    return runner
