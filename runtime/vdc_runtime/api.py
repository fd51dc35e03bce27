"""The local REST API of a running data center (Placemat's port, more endpoints)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from vdc_runtime import __version__, views
from vdc_runtime.datacenter import DataCenterRun
from vdc_runtime.listen import parse_listen_addr
from vdc_runtime.phases import RunPhase
from vdc_runtime.ui import auth as ui_auth
from vdc_runtime.ui import routes as ui_routes

if TYPE_CHECKING:
    # Imported by the handlers that use them: a run without machines or faults never
    # loads them, and a run's first answer does not wait for them.
    from vdc_runtime.faults import FaultManager
    from vdc_runtime.nodes.machine import Machine

RUN_KEY: web.AppKey[DataCenterRun] = web.AppKey("run", DataCenterRun)


async def health(request: web.Request) -> web.Response:
    run = request.app[RUN_KEY]
    body = {
        "status": "ok" if run.phase == RunPhase.RUNNING else run.phase,
        "phase": run.phase,
        "version": __version__,
        "uptime_seconds": round(time.time() - run.started_at, 1) if run.started_at else 0,
        "failure": run.failure,
        "accel": run.accel,
        "accel_reason": run.accel_reason,
        "faults": views.faults(run),
    }
    return web.json_response(body, status=200 if run.phase == RunPhase.RUNNING else 503)


async def networks(request: web.Request) -> web.Response:
    return web.json_response(views.networks(request.app[RUN_KEY]))


def _one(items: list[dict[str, Any]], kind: str, name: str) -> web.Response:
    for item in items:
        if item["name"] == name:
            return web.json_response(item)
    return _error(404, f"no {kind} named {name!r}")


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def topology(request: web.Request) -> web.Response:
    return web.json_response(views.topology(request.app[RUN_KEY]))


async def network(request: web.Request) -> web.Response:
    run = request.app[RUN_KEY]
    return _one(views.networks(run), "network", request.match_info["name"])


async def netns_list(request: web.Request) -> web.Response:
    return web.json_response(views.namespaces(request.app[RUN_KEY]))


async def netns_one(request: web.Request) -> web.Response:
    run = request.app[RUN_KEY]
    return _one(views.namespaces(run), "network namespace", request.match_info["name"])


def _machine(request: web.Request) -> Machine | None:
    return request.app[RUN_KEY].machines.get(request.match_info["name"])


async def nodes(request: web.Request) -> web.Response:
    machines = list(request.app[RUN_KEY].machines.values())
    powers = await asyncio.gather(*(m.control.query_power() for m in machines))
    run = request.app[RUN_KEY]
    return web.json_response(
        [views.node(m, p, views.bmc(run, m.name)) for m, p in zip(machines, powers, strict=True)]
    )


async def node(request: web.Request) -> web.Response:
    machine = _machine(request)
    if machine is None:
        return _error(404, f"no node named {request.match_info['name']!r}")
    bmc = views.bmc(request.app[RUN_KEY], machine.name)
    return web.json_response(views.node(machine, await machine.control.query_power(), bmc))


LOG_CHUNK = 1 << 20


async def node_console_log(request: web.Request) -> web.Response:
    """What the node's console printed, from byte `offset` on (at most 1 MiB per call), for
    clients without the host's files (runner containers of a VDC pod)."""
    machine = _machine(request)
    if machine is None:
        return _error(404, f"no node named {request.match_info['name']!r}")
    return await _log_chunk(request, machine.layout.console_log)


async def app_log(request: web.Request) -> web.Response:
    """What a namespace's app printed, read as a node's console log is."""
    run = request.app[RUN_KEY]
    netns, name = request.match_info["name"], request.match_info["app"]
    apps = run.apps.apps if run.apps is not None else []
    app = next((a for a in apps if (a.netns, a.name) == (netns, name)), None)
    if app is None or app.log_path is None:
        return _error(404, f"no app {name!r} in network namespace {netns!r}")
    return await _log_chunk(request, app.log_path)


async def _log_chunk(request: web.Request, path: Path) -> web.Response:
    """The file from byte `offset` on (at most LOG_CHUNK), and where the next call starts."""
    try:
        offset = int(request.query.get("offset", "0"))
    except ValueError:
        return _error(400, "offset must be a number of bytes")

    def read() -> bytes:
        try:
            with path.open("rb") as log:
                log.seek(max(offset, 0))
                return log.read(LOG_CHUNK)
        except FileNotFoundError:
            return b""

    data = await asyncio.to_thread(read)
    headers = {"X-Vdc-Next-Offset": str(max(offset, 0) + len(data))}
    return web.Response(body=data, content_type="text/plain", headers=headers)


# Placemat's three actions, then vdc's: each a method of the machine's PowerControl.
ACTIONS: dict[str, str] = {
    "start": "power_on",
    "stop": "power_off",
    "restart": "restart",
    "reset": "reset",
    "shutdown": "acpi_shutdown",
    "nmi": "nmi",
}


async def node_action(request: web.Request) -> web.Response:
    machine = _machine(request)
    if machine is None:
        return _error(404, f"no node named {request.match_info['name']!r}")
    method = ACTIONS.get(request.match_info["action"])
    if method is None:
        return _error(
            400, f"unknown action {request.match_info['action']!r}; one of: {', '.join(ACTIONS)}"
        )
    from vdc_runtime.nodes.machine import NodeError, PowerError

    action: Callable[[], Awaitable[object]] = getattr(machine.control, method)
    try:
        await action()
    except PowerError as exc:
        return _error(409, str(exc))
    except NodeError as exc:
        return _error(500, str(exc))
    return web.json_response(None)


async def forwards_list(request: web.Request) -> web.Response:
    return web.json_response([f.as_json() for f in request.app[RUN_KEY].forwards.items.values()])


async def forwards_add(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        fwd = await request.app[RUN_KEY].forwards.add(
            int(body["local_port"]), str(body["netns"]), str(body["remote_host"]),
            int(body["remote_port"]), str(body.get("bind", "127.0.0.1")),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        return _error(400, f"bad forward: {exc}")
    return web.json_response(fwd.as_json(), status=201)


async def forwards_delete(request: web.Request) -> web.Response:
    port = request.match_info["port"]
    if not port.isdigit() or not await request.app[RUN_KEY].forwards.delete(int(port)):
        return _error(404, f"no forward on port {port}")
    return web.json_response(None)


async def group(request: web.Request) -> web.Response:
    found = views.group(request.app[RUN_KEY])
    if found is None:
        return _error(404, "this run builds the whole data center, not one group")
    return web.json_response(found)


async def group_peers(request: web.Request) -> web.Response:
    """`{"GROUP": "ADDRESS", ...}`: those groups' tunnel addresses change (others stay)."""
    run = request.app[RUN_KEY]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "expected a JSON object of group names to addresses")
    if not isinstance(body, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in body.items()
    ):
        return _error(400, "expected a JSON object of group names to addresses")
    try:
        await run.set_peers(body)
    except ValueError as exc:
        return _error(400, str(exc))
    except OSError as exc:
        return _error(500, str(exc))
    return web.json_response(views.group(run))


def _snapshot_summary(manifest: Any) -> dict[str, Any]:
    return {
        "name": manifest.name,
        "created_at": manifest.created_at,
        "machines": sorted(manifest.machines),
        "size": manifest.size,
        "duration_s": manifest.duration_s,
        "pause_skew_ms": manifest.pause_skew_ms,
    }


async def snapshots_list(request: web.Request) -> web.Response:
    store = request.app[RUN_KEY].snapshots
    manifests = await asyncio.to_thread(store.list)
    return web.json_response([_snapshot_summary(m) for m in manifests])


async def snapshots_save(request: web.Request) -> web.Response:
    """Save the running data center: `{"name": NAME, "stop": false}`; 201 once complete."""
    from vdc_runtime.capture import CaptureError
    from vdc_runtime.nodes.machine import NodeError

    try:
        body = await request.json()
        name, stop = str(body["name"]), bool(body.get("stop", False))
    except (ValueError, KeyError, TypeError) as exc:
        return _error(400, f'expected {{"name": NAME, "stop": false}}: {exc}')
    try:
        manifest = await request.app[RUN_KEY].snapshot(name, stop=stop)
    except FileExistsError as exc:
        return _error(409, str(exc))
    except ValueError as exc:
        return _error(400, str(exc))
    except (CaptureError, NodeError, OSError) as exc:
        return _error(500, f"snapshot {name} not saved: {exc}")
    return web.json_response(_snapshot_summary(manifest), status=201)


def _faults(request: web.Request) -> FaultManager | web.Response:
    run = request.app[RUN_KEY]
    if run.faults is None:
        return _error(503, f"the data center is {run.phase}, not running")
    return run.faults


async def faults_list(request: web.Request) -> web.Response:
    return web.json_response(views.faults(request.app[RUN_KEY]))


async def faults_add(request: web.Request) -> web.Response:
    """A fault as `model` reads it: `{"kind": "link", "target": "NODE:eth0", "loss": "30%",
    "for": "60s"}`; 201 once applied, 400 naming the field that is wrong, 409 when it
    clashes with an active fault; nothing changes unless it is 201."""
    manager = _faults(request)
    if isinstance(manager, web.Response):
        return manager
    from vdc_runtime.faults import FaultApplyError, FaultConflict, FaultError

    try:
        body = await request.json()
    except ValueError:
        return _error(400, "expected a JSON object describing the fault")
    try:
        active = await manager.add(body)
    except FaultConflict as exc:
        return web.json_response({"error": str(exc), "field": exc.field}, status=409)
    except FaultError as exc:
        return web.json_response({"error": str(exc), "field": exc.field}, status=400)
    except FaultApplyError as exc:
        return _error(500, str(exc))
    return web.json_response(active.as_json(), status=201)


async def faults_delete(request: web.Request) -> web.Response:
    manager = _faults(request)
    if isinstance(manager, web.Response):
        return manager
    text = request.match_info["id"]
    if not text.isdigit() or not await manager.clear(int(text)):
        return _error(404, f"no active fault {text}")
    return web.json_response(None)


async def faults_delete_all(request: web.Request) -> web.Response:
    manager = _faults(request)
    if isinstance(manager, web.Response):
        return manager
    return web.json_response({"cleared": await manager.clear_all()})


def browser_changes(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """No change from a browser without the run's token, none ever from another site's
    page: the API listens without credentials (scripts' requests, which name no Origin,
    pass), and any page a browser on this host opens could post to it."""

    @web.middleware
    async def middleware(request: web.Request, handler: ui_routes.Handler) -> web.StreamResponse:
        found = ui_auth.change_refusal(token, request.method, request.path, request.headers)
        return _error(*found) if found is not None else await handler(request)

    return middleware


def make_app(run: DataCenterRun, ui_token: str | None = None) -> web.Application:
    """The API; with `ui_token`, also the web view under /ui/, whose actions and console
    need that token (without one, a fresh token nobody knows: the page only shows)."""
    token = ui_token or ui_auth.new_token()
    app = web.Application(middlewares=[browser_changes(token)])
    app[RUN_KEY] = run
    app.router.add_get("/health", health)
    app.router.add_get("/networks", networks)
    app.router.add_get("/networks/{name}", network)
    app.router.add_get("/netns", netns_list)
    app.router.add_get("/netns/{name}", netns_one)
    app.router.add_get("/netns/{name}/apps/{app}/log", app_log)
    app.router.add_get("/nodes", nodes)
    app.router.add_get("/nodes/{name}", node)
    app.router.add_get("/nodes/{name}/console-log", node_console_log)
    app.router.add_post("/nodes/{name}/{action}", node_action)
    app.router.add_get("/forwards", forwards_list)
    app.router.add_post("/forwards", forwards_add)
    app.router.add_delete("/forwards/{port}", forwards_delete)
    app.router.add_get("/faults", faults_list)
    app.router.add_post("/faults", faults_add)
    app.router.add_delete("/faults", faults_delete_all)
    app.router.add_delete("/faults/{id}", faults_delete)
    app.router.add_get("/snapshots", snapshots_list)
    app.router.add_post("/snapshots", snapshots_save)
    app.router.add_get("/topology", topology)
    app.router.add_get("/group", group)
    app.router.add_put("/group/peers", group_peers)
    ui_routes.add_routes(app, run, token, node_action, list(ACTIONS))
    return app


async def serve(
    run: DataCenterRun,
    listen_addr: str,
    extra: Callable[[web.Application], None] | None = None,
    ui_token: str | None = None,
) -> web.AppRunner:
    """Serve the API; `extra` adds routes (the agent's /keep); `ui_token` lets the web
    view act."""
    host, port = parse_listen_addr(listen_addr)
    app = make_app(run, ui_token)
    if extra is not None:
        extra(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"cannot listen on {listen_addr}: {exc.strerror}") from exc
    return runner
