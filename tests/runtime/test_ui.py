"""The web view's pure parts: who may act (the token), and what a console opens on."""

from __future__ import annotations

import asyncio
import io
import re
import stat
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.prereqs import require
from vdc_runtime import api
from vdc_runtime.datacenter import DataCenterRun
from vdc_runtime.ui import auth, routes

TOKEN = "s3cret-token"
COOKIE = auth.cookie_name(10808)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("headers", "cookies", "websocket", "expected"),
    [
        # A script's bearer token.
        ({"Authorization": f"Bearer {TOKEN}"}, {}, False, None),
        ({"Authorization": f"bearer {TOKEN}"}, {}, True, None),
        ({"Authorization": "Bearer nope"}, {}, False, 403),
        ({"Authorization": "Basic abc"}, {}, False, 401),
        # Nothing shown.
        ({}, {}, False, 401),
        ({}, {}, True, 401),
        # The page's cookie, with the page's header.
        ({"X-Vdc-UI": "1"}, {COOKIE: TOKEN}, False, None),
        ({"X-Vdc-UI": "1"}, {COOKIE: "nope"}, False, 403),
        # The cookie alone: a form another site posts.
        ({}, {COOKIE: TOKEN}, False, 403),
        # Another port's cookie (another run on the same host).
        ({"X-Vdc-UI": "1"}, {auth.cookie_name(10809): TOKEN}, False, 401),
        # The console's websocket: the cookie, from the page's own origin.
        ({"Origin": "http://127.0.0.1:10808", "Host": "127.0.0.1:10808"}, {COOKIE: TOKEN}, True,
         None),
        ({"Origin": "http://evil.example", "Host": "127.0.0.1:10808"}, {COOKIE: TOKEN}, True, 403),
        ({"Host": "127.0.0.1:10808"}, {COOKIE: TOKEN}, True, 403),
    ],
)  # fmt: skip
def test_refusal(
    headers: dict[str, str], cookies: dict[str, str], websocket: bool, expected: int | None
) -> None:
    found = auth.refusal(TOKEN, headers, cookies, COOKIE, websocket=websocket)
    assert (found[0] if found else None) == expected


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("POST", {}, False),  # vdc, pmctl2, curl: no Origin
        ("POST", {"Origin": "http://127.0.0.1:10808", "Host": "127.0.0.1:10808"}, False),
        ("POST", {"Origin": "https://evil.example", "Host": "127.0.0.1:10808"}, True),
        ("DELETE", {"Origin": "null", "Host": "127.0.0.1:10808"}, True),
        ("PUT", {"Origin": "http://localhost:10808", "Host": "127.0.0.1:10808"}, True),
        ("GET", {"Origin": "https://evil.example", "Host": "127.0.0.1:10808"}, False),
    ],
)
def test_cross_site_changes(method: str, headers: dict[str, str], refused: bool) -> None:
    assert auth.cross_site(method, headers) is refused


HERE = {"Host": "127.0.0.1:10808"}
SAME = {"Origin": "http://127.0.0.1:10808", **HERE}
# The name of a page that made itself resolve to this host (DNS rebinding): same-origin.
REBOUND = {"Origin": "http://rebound.example:10808", "Host": "rebound.example:10808"}
FOREIGN = {"Origin": "https://evil.example", **HERE}
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        # Scripts (vdc, pmctl2, curl): no Origin, no token needed, as on Placemat's API.
        ("POST", "/nodes/n/reset", {}, None),
        ("DELETE", "/faults", HERE, None),
        ("PUT", "/group/peers", {"Authorization": "Bearer wrong"}, None),
        # A browser: never from another site's page, even with the token ...
        ("POST", "/nodes/n/reset", FOREIGN, 403),
        ("POST", "/nodes/n/reset", {**FOREIGN, **BEARER}, 403),
        ("POST", "/ui/nodes/n/reset", FOREIGN, 403),
        # ... and from a page of this origin only with the token.
        ("POST", "/nodes/n/reset", SAME, 401),
        ("POST", "/forwards", REBOUND, 401),
        ("POST", "/nodes/n/reset", {**SAME, "Authorization": "Bearer wrong"}, 403),
        ("POST", "/nodes/n/reset", {**SAME, **BEARER}, None),
        # The web view's routes check the token themselves (routes.guard).
        ("POST", "/ui/nodes/n/reset", SAME, None),
        # Reading is open.
        ("GET", "/nodes", FOREIGN, None),
    ],
)  # fmt: skip
def test_change_refusal(
    method: str, path: str, headers: dict[str, str], expected: int | None
) -> None:
    found = auth.change_refusal(TOKEN, method, path, headers)
    assert (found[0] if found else None) == expected


async def test_the_api_refuses_a_browsers_change_without_the_token() -> None:
    # The data center cannot run here: one with no machines, so that a request let
    # through reaches the API's handler and is answered "no node named ...".
    run = cast(DataCenterRun, SimpleNamespace(machines={}))
    async with TestClient(TestServer(api.make_app(run, TOKEN))) as client:

        async def post(path: str, headers: dict[str, str]) -> tuple[int, str]:
            resp = await client.post(path, headers=headers)
            return resp.status, (await resp.json())["error"]

        host = {"Host": "127.0.0.1:10808"}
        for headers in ({}, host, {**host, "Origin": "http://127.0.0.1:10808", **BEARER}):
            assert await post("/nodes/ghost/reset", headers) == (404, "no node named 'ghost'")
        status, error = await post(
            "/nodes/ghost/reset", {**host, "Origin": "http://127.0.0.1:10808"}
        )
        assert status == 401 and "Authorization: Bearer" in error
        status, error = await post("/faults", {**host, "Origin": "https://evil.example"})
        assert status == 403 and "another site" in error
        assert (await post("/ui/nodes/ghost/reset", host))[0] == 401  # the page's: the token


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        (("xterm.js", "xterm.css", "xterm.LICENSE"), None),
        (("xterm.css",), "xterm.js"),
        ((), "xterm.js and xterm.css"),
    ],
)
def test_missing_assets(tmp_path: Path, present: tuple[str, ...], missing: str | None) -> None:
    for name in present:
        (tmp_path / name).write_text("x")
    said = routes.missing_assets(tmp_path)
    if missing is None:
        assert said is None
    else:
        assert said is not None and f"bundled {missing} (in {tmp_path})" in said
        assert "scripts/ui_assets.py" in said


async def test_the_page_is_told_what_is_missing(tmp_path: Path) -> None:
    """Installed without the bundle (pip install from a checkout without make deps), the
    page is told why it has no console, to say it, instead of leaving the button out."""
    run = cast(DataCenterRun, SimpleNamespace(machines={}))
    app = web.Application()
    app.router.add_get("/ui/session", routes.WebView(run, TOKEN, ["reset"], tmp_path).session)
    async with TestClient(TestServer(app)) as client:
        body = await (await client.get("/ui/session", headers=BEARER)).json()
    assert body["authorized"] is True and body["console"] is False
    assert "xterm.js" in body["missing"] and "scripts/ui_assets.py" in body["missing"]
    page = (routes.STATIC / "index.html").read_text()
    assert '<p id="notice"' in page
    assert '$("notice").textContent = session.missing' in (routes.STATIC / "app.js").read_text()


def test_matches_is_exact() -> None:
    assert auth.matches(TOKEN, TOKEN)
    for wrong in ("", None, TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
        assert not auth.matches(TOKEN, wrong)
    assert not auth.matches("", "")  # no token set lets nobody in


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://Example.org", "example.org", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),
        ("file://", "", False),
        (None, "127.0.0.1:8000", False),
    ],
)
def test_same_origin(origin: str | None, host: str, same: bool) -> None:
    assert auth.same_origin(origin, host) is same


def test_write_token(tmp_path: Path) -> None:
    first = auth.write_token(tmp_path / "run")
    path = tmp_path / "run" / auth.TOKEN_FILE
    assert path.read_text() == first + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    second = auth.write_token(tmp_path / "run")  # each run its own
    assert second != first and path.read_text() == second + "\n"


def test_console_tail_starts_at_a_line(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert routes.tail(log) == b""  # not written yet
    log.write_bytes(b"boot\nlogin: ")
    assert routes.tail(log) == b"boot\nlogin: "
    log.write_bytes(b"\x1b[1;3" + b"x" * 10 + b"\nlast line\nprompt$ ")
    assert routes.tail(log, 25) == b"last line\nprompt$ "


async def test_guard_refuses_without_the_token() -> None:
    async def act(request: web.Request) -> web.Response:
        return web.json_response("done")

    app = web.Application()
    app.router.add_post("/act", routes.guard(TOKEN, act))
    async with TestClient(TestServer(app)) as client:
        assert (await client.post("/act")).status == 401
        wrong = {"Authorization": "Bearer wrong"}
        assert (await client.post("/act", headers=wrong)).status == 403
        right = {"Authorization": f"Bearer {TOKEN}"}
        resp = await client.post("/act", headers=right)
        assert resp.status == 200 and await resp.json() == "done"


def test_pinned_assets_are_checked() -> None:
    assets = require.ui_assets_script()
    # npm's own format: the one in package-lock.json and the registry's dist.integrity.
    assert assets.integrity(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
    for pin in assets.PINS:
        assert pin.integrity.startswith("sha512-") and pin.version.count(".") == 2
        assert "xterm.js" in pin.files.values()
        # The registry's dist.tarball: a scoped package's file is named without the scope.
        assert pin.url("https://registry.npmjs.org/") == (
            f"https://registry.npmjs.org/{pin.name}/-/{pin.name.split('/')[-1]}-{pin.version}.tgz"
        )
    assert assets.Pin("left-pad", "1.3.0", "", {}).url("https://mirror.example/npm") == (
        "https://mirror.example/npm/left-pad/-/left-pad-1.3.0.tgz"
    )


def tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out.getvalue()


async def test_assets_are_fetched_from_the_registry_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A registry on loopback (NPM_CONFIG_REGISTRY, as for npm): the pinned tarball is
    fetched by a plain GET and bundled; one that does not match its pin is refused."""
    assets = require.ui_assets_script()
    good = tarball({"package/lib/t.js": b"terminal();", "package/LICENSE": b"MIT"})
    served = {"/@t/t/-/t-1.0.0.tgz": good}

    async def registry(request: web.Request) -> web.Response:
        if request.path not in served:
            return web.Response(status=404)
        return web.Response(body=served[request.path])

    app = web.Application()
    app.router.add_get("/{tail:.*}", registry)
    monkeypatch.setattr(assets, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(assets, "VENDOR", tmp_path / "vendor")
    files = {"package/lib/t.js": "t.js", "package/LICENSE": "t.LICENSE"}
    async with TestServer(app) as server:
        monkeypatch.setenv("NPM_CONFIG_REGISTRY", str(server.make_url("/")))
        pin = assets.Pin("@t/t", "1.0.0", assets.integrity(good), files)
        assert await asyncio.to_thread(assets.bundle, pin) == "bundled"
        assert (tmp_path / "vendor" / "t.js").read_bytes() == b"terminal();"
        assert pin.tarball.read_bytes() == good  # cached: the next build is offline
        served.clear()
        assert await asyncio.to_thread(assets.bundle, pin) == "ok"
        (tmp_path / "vendor" / "t.js").unlink()
        assert await asyncio.to_thread(assets.bundle, pin) == "bundled"  # from the cache

        served["/@t/t/-/t-2.0.0.tgz"] = good + b"tampered"
        other = assets.Pin("@t/t", "2.0.0", assets.integrity(good), files)
        with pytest.raises(SystemExit, match=r"integrity is sha512-.*, not the pinned"):
            await asyncio.to_thread(assets.bundle, other)
        assert not other.tarball.exists()
        missing = assets.Pin("@t/t", "3.0.0", assets.integrity(good), files)
        with pytest.raises(
            SystemExit, match=r"GET http://.*/@t/t/-/t-3\.0\.0\.tgz failed: HTTP Error 404"
        ):
            await asyncio.to_thread(assets.bundle, missing)


def test_the_page_loads_nothing_from_elsewhere() -> None:
    require.web_assets()
    page = (routes.STATIC / "index.html").read_text()
    linked = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert linked, page
    for url in linked:
        assert url.startswith("/ui/static/") or url == "data:,", url
        if url.startswith("/ui/static/"):
            assert (routes.STATIC / url.removeprefix("/ui/static/")).is_file(), url
    script = (routes.STATIC / "app.js").read_text()
    assert not re.search(r"https?://", script)
