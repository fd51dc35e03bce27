"""The web view's routes on the run's API: the page, its data the rest of the API lacks
(the topology as SVG, whether this browser may act), and the console's websocket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import WSMsgType, web

from vdc_runtime import views
from vdc_runtime.datacenter import DataCenterRun
from vdc_runtime.ui import auth

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
VENDOR = STATIC / "vendor"
# What the page loads from the bundle (scripts/ui_assets.py writes them).
BUNDLED = ("xterm.js", "xterm.css")
# The console's scrollback a browser gets on connecting, so it opens on the current screen.
CONSOLE_TAIL = 16 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _refusal(request: web.Request, token: str, websocket: bool = False) -> web.Response | None:
    found = auth.refusal(
        token, request.headers, request.cookies, auth.cookie_name(request.url.port),
        websocket=websocket,
    )  # fmt: skip
    return None if found is None else _error(*found)


def guard(token: str, handler: Handler) -> Handler:
    """`handler`, for whoever shows the token only."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = _refusal(request, token)
        return refused if refused is not None else await handler(request)

    return guarded


def missing_assets(vendor: Path = VENDOR) -> str | None:
    """What the page lacks of its bundled libraries, said for whoever installed vdc (None:
    nothing). vdc installed from a checkout where scripts/ui_assets.py never ran has none:
    everything but the console still works."""
    missing = [name for name in BUNDLED if not (vendor / name).is_file()]
    if not missing:
        return None
    return (
        f"no console in the browser: this vdc was installed without its bundled"
        f" {' and '.join(missing)} (in {vendor}); run `python3 scripts/ui_assets.py`"
        " (or `make deps`) in the checkout before installing it, or use the vdc-runtime image"
    )


def tail(path: Path, size: int = CONSOLE_TAIL) -> bytes:
    """The file's last `size` bytes, from the start of a line where one is in there (so
    the terminal does not begin inside an escape sequence)."""
    try:
        with path.open("rb") as log:
            log.seek(0, 2)
            end = log.tell()
            log.seek(max(end - size, 0))
            data = log.read(size)
    except FileNotFoundError:
        return b""
    if end > size and b"\n" in data:
        data = data[data.index(b"\n") + 1 :]
    return data


class WebView:
    def __init__(
        self, run: DataCenterRun, token: str, actions: list[str], vendor: Path = VENDOR
    ) -> None:
        self.run, self.token, self.actions = run, token, actions
        self.missing = missing_assets(vendor)

    async def index(self, request: web.Request) -> web.StreamResponse:
        presented = request.query.get("token")
        if presented is not None:
            if not auth.matches(self.token, presented):
                return _error(403, "wrong token; open the URL the run printed")
            # Into a cookie, and out of the address bar and the browser's history.
            response = web.Response(status=303, headers={"Location": "/ui/"})
            response.set_cookie(
                auth.cookie_name(request.url.port), self.token,
                path="/ui/", httponly=True, samesite="Strict",
            )  # fmt: skip
            return response
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def session(self, request: web.Request) -> web.Response:
        """What the page may offer this browser: actions and the console, or only views."""
        return web.json_response(
            {
                "authorized": _refusal(request, self.token) is None,
                "actions": self.actions,
                "console": self.missing is None,
                "missing": self.missing,
            }
        )

    async def topology_svg(self, request: web.Request) -> web.Response:
        # Loaded by the page's first picture, not by every run's start-up.
        from vdc_runtime.graph import model, svg

        drawn = svg.render(model.from_json(views.topology(self.run)))
        return web.Response(text=drawn, content_type="image/svg+xml")

    async def console(self, request: web.Request) -> web.StreamResponse:
        """The node's serial console as a websocket: what the guest prints as binary
        messages, what the browser sends typed on it (the console socket is shared, as
        `vdc node enter`'s)."""
        refused = _refusal(request, self.token, websocket=True)
        if refused is not None:
            return refused
        machine = self.run.machines.get(request.match_info["name"])
        if machine is None:
            return _error(404, f"no node named {request.match_info['name']!r}")
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        try:
            reader, writer = await asyncio.open_unix_connection(str(machine.layout.console_socket))
        except OSError as exc:
            await ws.close(code=1011, message=f"console unavailable: {exc}"[:120].encode())
            return ws
        await ws.send_bytes(await asyncio.to_thread(tail, machine.layout.console_log))

        async def guest_to_browser() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    await ws.send_bytes(data)
            await ws.close()

        pump = asyncio.create_task(guest_to_browser(), name=f"web console {machine.name}")
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    writer.write(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    writer.write(msg.data.encode())
                else:
                    continue
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            writer.close()
        return ws


async def _to_page(request: web.Request) -> web.Response:
    return web.Response(status=308, headers={"Location": "/ui/"})


def add_routes(
    app: web.Application, run: DataCenterRun, token: str, node_action: Handler, actions: list[str]
) -> None:
    """The page under /ui/. Its power actions are the API's own handler (`node_action`,
    for `actions`), served again under /ui/ behind the token."""
    view = WebView(run, token, actions)
    if view.missing is not None:
        log.warning("web view: %s", view.missing)
    app.router.add_get("/ui", _to_page)
    app.router.add_get("/ui/", view.index)
    app.router.add_get("/ui/session", view.session)
    app.router.add_get("/ui/topology.svg", view.topology_svg)
    app.router.add_get("/ui/nodes/{name}/console", view.console)
    app.router.add_post("/ui/nodes/{name}/{action}", guard(token, node_action))
    app.router.add_static("/ui/static/", STATIC)


__all__ = ["WebView", "add_routes", "guard", "missing_assets", "tail"]
