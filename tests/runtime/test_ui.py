"""The web view's pure parts: who may act (the token), and what a console opens on."""

from __future__ import annotations

import importlib.util
import re
import stat
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.prereqs import require
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
    spec = importlib.util.spec_from_file_location("ui_assets", ROOT / "scripts" / "ui_assets.py")
    assert spec is not None and spec.loader is not None
    assets = importlib.util.module_from_spec(spec)
    sys.modules["ui_assets"] = assets
    spec.loader.exec_module(assets)
    # npm's own format: the one in package-lock.json and the registry's dist.integrity.
    assert assets.integrity(b"") == (
        "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    )
    for pin in assets.PINS:
        assert pin.integrity.startswith("sha512-") and pin.version.count(".") == 2
        assert "xterm.js" in pin.files.values()


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
