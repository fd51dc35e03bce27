"""Who may act through the web view: whoever shows the run's token.

Viewing is open (like the rest of the API, which listens on loopback); power actions and the
console need the token the run prints and writes into its run dir, and so does any change a
browser asks of the API (`change_refusal`; scripts, which send no Origin, need none). A
script sends it as `Authorization: Bearer TOKEN`. A browser opens `/ui/?token=TOKEN` once;
the page then holds it in an HttpOnly, SameSite=Strict cookie, so another site's page
cannot make the browser use it: a cross-site request carries no such cookie, and the page's
own calls also send a header (`X-Vdc-UI`) that a cross-site form cannot. A websocket cannot
send headers, so the console's also needs its Origin to be the page's own.
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_FILE = "ui-token"
UI_HEADER = "X-Vdc-UI"
TOKEN_BYTES = 24
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def write_token(run_dir: Path) -> str:
    """A fresh token for this run, in RUN_DIR/ui-token, readable by its owner only (the
    kubectl plugin reads it from the agent's pod)."""
    token = new_token()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return token


def cookie_name(port: int | None) -> str:
    """One cookie per API port: two runs on one host (cookies ignore ports) keep their own."""
    return f"vdc_ui_token_{port or 0}"


def matches(token: str, presented: str | None) -> bool:
    """Constant-time, so a wrong guess's timing tells nothing of the token."""
    if not presented or not token:
        return False
    return hmac.compare_digest(token.encode(), presented.encode())


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a browser's Origin header names the host the request came to."""
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def cross_site(method: str, headers: Mapping[str, str]) -> bool:
    """A change asked by another site's page: a browser names the page's origin, and a
    form posted across sites needs no preflight. The API's own clients (vdc, pmctl2,
    curl) send no Origin, so nothing of theirs is refused."""
    if method in SAFE_METHODS:
        return False
    origin = headers.get("Origin")
    return origin is not None and not same_origin(origin, headers.get("Host"))


def change_refusal(
    token: str, method: str, path: str, headers: Mapping[str, str]
) -> tuple[int, str] | None:
    """Whether a request may change something through the API (None: it may; else the
    status and why). A script's (no Origin: vdc, pmctl2, curl) may, without a token, as on
    Placemat's API. A browser's may not from another site's page, and elsewhere than the
    web view's own routes (which check the token themselves) only with the run's token as
    `Authorization: Bearer`: a page of a name that resolves to this host (DNS rebinding) is
    same-origin to the browser, but does not know the token."""
    if cross_site(method, headers):
        return 403, "a request from another site's page changes nothing here"
    if method in SAFE_METHODS or "Origin" not in headers or path.startswith("/ui/"):
        return None
    presented = bearer(headers.get("Authorization"))
    if presented is None:
        return 401, (
            "a browser changes something here only with the run's token"
            " (Authorization: Bearer TOKEN); the web view's page acts under /ui/"
        )
    return None if matches(token, presented) else (403, "wrong token")


def refusal(
    token: str,
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    cookie: str,
    *,
    websocket: bool = False,
) -> tuple[int, str] | None:
    """None when the request may act; else the status (401: no token shown, 403: a wrong
    one, or a browser's cookie without the page's header or origin) and why."""
    presented = bearer(headers.get("Authorization"))
    if presented is not None:
        if matches(token, presented):
            return None
        return 403, "wrong token"
    from_cookie = cookies.get(cookie)
    if not from_cookie:
        return 401, (
            "this needs the run's token: open the URL the run printed,"
            " or send Authorization: Bearer TOKEN"
        )
    if not matches(token, from_cookie):
        return 403, "wrong token; open the URL the run printed again"
    if websocket:
        if not same_origin(headers.get("Origin"), headers.get("Host")):
            return 403, "the console opens from the web view's own page only"
    elif headers.get(UI_HEADER) != "1":
        return 403, f"a request with the token's cookie must come from the page ({UI_HEADER})"
    return None


__all__ = [
    "TOKEN_FILE",
    "UI_HEADER",
    "bearer",
    "change_refusal",
    "cookie_name",
    "cross_site",
    "matches",
    "new_token",
    "refusal",
    "same_origin",
    "write_token",
]
