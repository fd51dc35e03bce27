"""The operator's GitHub REST client: registers self-hosted Actions runners for VDCs.

A VDC that asks for runners gets just-in-time (JIT) runner configurations: the operator
calls `generate-jitconfig` on the repository or organisation and hands the opaque
`encoded_jit_config` to the VDC pod, which starts the runner with it. A JIT config
registers one ephemeral runner and is good for one connection, so the pod never holds a
GitHub credential: a compromised VDC can run at most the job given to it, never register
runners or read the repository's settings.

The operator authenticates either with a token (a PAT or any bearer token) or as a GitHub
App installation. For an App, it signs a short-lived JWT (RS256, at most 10 minutes, as
GitHub requires) with the App's private key and exchanges it at
`POST /app/installations/{id}/access_tokens` for an installation token, which it caches
until shortly before the token expires (or until GitHub refuses it). The JWT is only ever
sent to `/app/...` endpoints; every other call carries the installation token.

The client does not retry: errors are typed (`RateLimited` says when to come back,
`transient` marks 5xx and network failures) so kopf's handlers decide when to try again.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from ssl import SSLContext
from typing import Any, Literal

import aiohttp
import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vdc_runtime.resource.github_url import parse_github_url

API_VERSION = "2022-11-28"
ACCEPT = "application/vnd.github+json"

# GitHub refuses App JWTs that live longer than 10 minutes; backdating `iat` by a minute
# absorbs clock drift between us and GitHub, so the JWT spans 60 + 540 = 600 s.
JWT_BACKDATE = 60
JWT_LIFETIME = 540
# An installation token is dropped this long before GitHub says it expires, so a request
# started just before expiry does not arrive with a dead token.
TOKEN_MARGIN = 60
# GitHub's advice for a secondary rate limit that names no wait.
DEFAULT_RETRY = 60.0

MAX_NAME = 64
MAX_LABELS = 100
MAX_LABEL = 256

_RUNNER_NAME = re.compile(r"[A-Za-z0-9_.-]+")


# -- errors -----------------------------------------------------------------------------------


class GitHubError(Exception):
    """A request GitHub refused or that did not reach GitHub.

    `status` is None when no response came; `transient` marks what is worth retrying as is
    (5xx, network failures, rate limits).
    """

    def __init__(
        self,
        status: int | None,
        message: str,
        documentation_url: str | None = None,
        *,
        transient: bool = False,
        request: str = "",
        errors: list[Any] | None = None,
    ) -> None:
        self.status = status
        self.message = message
        self.documentation_url = documentation_url
        self.transient = transient
        self.request = request
        self.errors = errors or []
        super().__init__(self._describe())

    def _describe(self) -> str:
        where = f"GitHub {self.request}: " if self.request else "GitHub: "
        status = f"{self.status} " if self.status is not None else ""
        text = f"{where}{status}{self.message}"
        if self.errors:
            text += f" {json.dumps(self.errors, separators=(',', ':'))}"
        if self.documentation_url:
            text += f" (see {self.documentation_url})"
        return text


class RateLimited(GitHubError):
    """A primary or secondary rate limit: nothing will succeed before `retry_at` (epoch)."""

    def __init__(
        self,
        status: int,
        message: str,
        documentation_url: str | None = None,
        *,
        retry_at: float,
        request: str = "",
    ) -> None:
        self.retry_at = retry_at
        super().__init__(status, message, documentation_url, transient=True, request=request)


class AuthFailed(GitHubError):
    """401, or 403 that is not a rate limit: the credential is wrong or lacks permission."""


class NotFound(GitHubError):
    """404: the repository or organisation does not exist or the credential cannot see it."""


class Conflict(GitHubError):
    """409 or 422: e.g. a runner of that name already exists, or the payload was refused."""


# -- where: the repository or organisation --------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A repository or organisation whose self-hosted runners the operator manages."""

    api_url: str
    owner: str
    repo: str | None
    html_url: str

    @property
    def scope(self) -> Literal["repo", "org"]:
        return "repo" if self.repo else "org"

    @property
    def runners_path(self) -> str:
        if self.repo:
            return f"/repos/{self.owner}/{self.repo}/actions/runners"
        return f"/orgs/{self.owner}/actions/runners"

    @classmethod
    def from_url(cls, url: str) -> Target:
        """Parse a repository's or organisation's web URL (as the VDC's spec gives it)."""
        parsed = parse_github_url(url)
        return cls(parsed.api_url, parsed.owner, parsed.repo, parsed.html_url)


# -- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenAuth:
    """A personal access token (or any bearer token GitHub accepts)."""

    token: str = field(repr=False)


@dataclass(frozen=True)
class AppAuth:
    """A GitHub App installation: the App's id, the installation's id, the App's key."""

    app_id: str
    installation_id: int
    private_key_pem: str = field(repr=False)

    def private_key(self) -> rsa.RSAPrivateKey:
        return _load_rsa_key(self.private_key_pem)


_TOKEN_KEYS = frozenset({"token"})
_APP_KEYS = frozenset({"app-id", "installation-id", "private-key"})


def _load_rsa_key(pem: str) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # The library's message can quote key material; it is not repeated here.
        raise ValueError(
            f"private-key is not an unencrypted PEM private key ({type(exc).__name__}); "
            "give the .pem file GitHub generated for the App"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("private-key is not an RSA key; GitHub Apps sign with RSA keys")
    return key


def credentials_from_secret(data: Mapping[str, bytes | str]) -> TokenAuth | AppAuth:
    """Credentials from a Secret's (decoded) data: `token`, or `app-id`, `installation-id`
    and `private-key`."""
    values = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in data.items()}
    keys = set(values)
    want = "give either key token, or keys app-id, installation-id and private-key"
    if keys & _TOKEN_KEYS and keys & _APP_KEYS:
        raise ValueError(f"the Secret has both a token and App keys; {want}")
    if keys & _TOKEN_KEYS:
        expected = _TOKEN_KEYS
    elif keys & _APP_KEYS:
        expected = _APP_KEYS
    else:
        has = f" (it has {', '.join(sorted(keys))})" if keys else " (it is empty)"
        raise ValueError(f"the Secret has neither a token nor App keys{has}; {want}")
    problems = []
    if missing := sorted(expected - keys):
        problems.append(f"lacks key {', '.join(missing)}")
    if extra := sorted(keys - expected):
        problems.append(f"has unexpected key {', '.join(extra)}")
    if problems:
        raise ValueError(f"the Secret {' and '.join(problems)}; {want}")
    if expected is _TOKEN_KEYS:
        # Secrets made with `echo` or from files often end with a newline.
        token = values["token"].strip()
        if not token:
            raise ValueError("the Secret's token is empty")
        return TokenAuth(token)
    app_id = values["app-id"].strip()
    if not app_id:
        raise ValueError("the Secret's app-id is empty")
    installation = values["installation-id"].strip()
    if not re.fullmatch(r"[0-9]+", installation):
        raise ValueError(f"installation-id must be a number, not {installation!r}")
    pem = values["private-key"]
    _load_rsa_key(pem)
    return AppAuth(app_id, int(installation), pem)


# -- names and labels -----------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")


def _short_uid(uid: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "", uid)[:8].lower() or "0"


def _cut(text: str, room: int) -> str:
    # A trailing separator would read as a typo next to the next part.
    return text[: max(room, 0)].rstrip("-._")


def vdc_label(namespace: str, name: str, uid: str) -> str:
    """The runner label unique to one VDC: `vdc-<namespace>-<name>-<uid[:8]>`, the readable
    part cut so the label has at most 64 characters. The VDC's status shows it."""
    uid8 = _short_uid(uid)
    stem = _cut(_slug(f"{namespace}-{name}"), MAX_NAME - len("vdc--") - len(uid8))
    return f"vdc-{stem}-{uid8}" if stem else f"vdc-{uid8}"


def runner_name(vdc_namespace: str, vdc_name: str, uid: str, index: int) -> str:
    """The name of a VDC's `index`th runner: `vdc-<namespace>-<name>-<uid[:8]>-<index>`,
    at most 64 characters. The uid keeps it unique among VDCs of the same name over time;
    the same arguments always give the same name, so a repeated registration is a 409."""
    uid8 = _short_uid(uid)
    tail = f"-{uid8}-{index}"
    stem = _cut(_slug(f"{vdc_namespace}-{vdc_name}"), MAX_NAME - len("vdc-") - len(tail))
    return f"vdc-{stem}{tail}" if stem else f"vdc{tail}"


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JitRunner:
    """A registered runner and the configuration that starts it (single use; a secret)."""

    id: int
    name: str
    encoded_jit_config: str = field(repr=False)


class GitHub:
    """GitHub's REST API for one repository or organisation, as one credential."""

    def __init__(
        self,
        target: Target,
        auth: TokenAuth | AppAuth,
        *,
        ssl: SSLContext | bool | None = None,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "vdc-operator",
        timeout: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.auth = auth
        self._ssl: SSLContext | bool = True if ssl is None else ssl
        self._session = session
        self._own_session = session is None
        self._user_agent = user_agent
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._now = now
        self._key = auth.private_key() if isinstance(auth, AppAuth) else None
        self._token: str | None = auth.token if isinstance(auth, TokenAuth) else None
        self._token_until = float("inf")
        self._token_lock = asyncio.Lock()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> GitHub:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- runners ------------------------------------------------------------------------------

    async def jit_config(
        self,
        name: str,
        labels: list[str],
        runner_group_id: int = 1,
        work_folder: str = "_work",
    ) -> JitRunner:
        """Register an ephemeral runner and return its JIT configuration.

        Input GitHub would refuse is refused here, with a message that names the VDC's
        problem rather than GitHub's schema. A name already registered raises Conflict.
        """
        _check_runner(name, labels, runner_group_id)
        body = {
            "name": name,
            "runner_group_id": runner_group_id,
            "labels": list(labels),
            "work_folder": work_folder,
        }
        path = f"{self.target.runners_path}/generate-jitconfig"
        _, data = await self._call("POST", path, body, ok=(201,))
        try:
            runner = data["runner"]
            return JitRunner(
                int(runner["id"]), str(runner["name"]), str(data["encoded_jit_config"])
            )
        except (KeyError, TypeError, ValueError):
            raise GitHubError(
                201,
                "the response lacks runner.id, runner.name or encoded_jit_config",
                request=f"POST {path}",
            ) from None

    async def runner(self, runner_id: int) -> dict[str, Any] | None:
        """The runner (with `status` and `busy`), or None if it is not registered."""
        status, data = await self._call(
            "GET", f"{self.target.runners_path}/{int(runner_id)}", ok=(200, 404)
        )
        return data if status == 200 else None

    async def delete_runner(self, runner_id: int) -> bool:
        """Unregister a runner; False if it was not registered (any more)."""
        status, _ = await self._call(
            "DELETE", f"{self.target.runners_path}/{int(runner_id)}", ok=(204, 404)
        )
        return status == 204

    async def runners(self) -> list[dict[str, Any]]:
        """Every runner registered at the target (all pages)."""
        found: list[dict[str, Any]] = []
        page = 1
        while True:
            _, data = await self._call(
                "GET", f"{self.target.runners_path}?per_page=100&page={page}", ok=(200,)
            )
            batch = data.get("runners", []) if isinstance(data, dict) else []
            found.extend(batch)
            total = data.get("total_count", 0) if isinstance(data, dict) else 0
            if not batch or len(found) >= total:
                return found
            page += 1

    # -- requests -----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _call(
        self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...]
    ) -> tuple[int, Any]:
        if self._key is None:
            assert self._token is not None
            return await self._send(method, path, body, self._token, ok)
        token = await self._installation_token()
        try:
            return await self._send(method, path, body, token, ok)
        except AuthFailed as exc:
            if exc.status != 401:
                raise
        # GitHub revoked the token early (the App was reinstalled, the key rotated): one
        # fresh token decides whether the credential itself is wrong.
        self._drop_token(token)
        return await self._send(method, path, body, await self._installation_token(), ok)

    def _drop_token(self, token: str) -> None:
        if self._token == token:
            self._token = None

    def app_jwt(self) -> str:
        """A JWT that authenticates as the App (for `/app/...` endpoints only)."""
        assert isinstance(self.auth, AppAuth) and self._key is not None
        now = int(self._now())
        claims = {"iat": now - JWT_BACKDATE, "exp": now + JWT_LIFETIME, "iss": self.auth.app_id}
        return jwt.encode(claims, self._key, algorithm="RS256")

    async def _installation_token(self) -> str:
        async with self._token_lock:
            if self._token is not None and self._now() < self._token_until:
                return self._token
            assert isinstance(self.auth, AppAuth)
            path = f"/app/installations/{self.auth.installation_id}/access_tokens"
            _, data = await self._send("POST", path, None, self.app_jwt(), (201,))
            try:
                token = str(data["token"])
                expires = datetime.fromisoformat(str(data["expires_at"])).timestamp()
            except (KeyError, TypeError, ValueError):
                raise GitHubError(
                    201, "the response lacks token or a valid expires_at", request=f"POST {path}"
                ) from None
            self._token, self._token_until = token, expires - TOKEN_MARGIN
            return token

    async def _send(
        self, method: str, path: str, body: Any, token: str, ok: tuple[int, ...]
    ) -> tuple[int, Any]:
        request = f"{method} {path.split('?')[0]}"
        headers = {
            "Accept": ACCEPT,
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": self._user_agent,
            "Authorization": f"Bearer {token}",
        }
        try:
            async with self._http().request(
                method,
                self.target.api_url + path,
                json=body,
                headers=headers,
                ssl=self._ssl,
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                status, resp_headers = resp.status, resp.headers
        except aiohttp.ClientConnectorCertificateError as exc:
            # A certificate GitHub's name does not match or an unknown CA: retrying will
            # not help until the operator is given the right CA.
            raise GitHubError(None, f"TLS verification failed: {exc}", request=request) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            what = str(exc) or type(exc).__name__
            raise GitHubError(
                None, f"request failed: {what}", transient=True, request=request
            ) from exc
        data: Any = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
        if status in ok:
            if status in (200, 201) and data is None:
                raise GitHubError(
                    status, "the response is not JSON", transient=True, request=request
                )
            return status, data
        raise self._error(status, resp_headers, data, raw, request)

    def _error(
        self, status: int, headers: Mapping[str, str], data: Any, raw: bytes, request: str
    ) -> GitHubError:
        if isinstance(data, dict) and "message" in data:
            message = str(data["message"])
            doc = data.get("documentation_url")
            errors = data.get("errors") if isinstance(data.get("errors"), list) else None
        else:
            message = raw[:200].decode(errors="replace").strip() or "(empty response)"
            doc, errors = None, None
        if status in (403, 429):
            retry_at = self._retry_at(status, headers, message)
            if retry_at is not None:
                return RateLimited(status, message, doc, retry_at=retry_at, request=request)
        if status in (401, 403):
            return AuthFailed(status, message, doc, request=request)
        if status == 404:
            return NotFound(status, message, doc, request=request)
        if status in (409, 422):
            return Conflict(status, message, doc, request=request, errors=errors)
        return GitHubError(
            status, message, doc, transient=status >= 500, request=request, errors=errors
        )

    def _retry_at(self, status: int, headers: Mapping[str, str], message: str) -> float | None:
        retry_after = headers.get("retry-after")
        if retry_after is not None:
            try:
                return self._now() + float(retry_after)
            except ValueError:
                return self._now() + DEFAULT_RETRY
        if headers.get("x-ratelimit-remaining") == "0":
            try:
                return float(headers["x-ratelimit-reset"])
            except (KeyError, ValueError):
                return self._now() + DEFAULT_RETRY
        if status == 429 or "rate limit" in message.lower():
            return self._now() + DEFAULT_RETRY
        return None


def _check_runner(name: str, labels: list[str], runner_group_id: int) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME:
        raise ValueError(f"runner name {name!r} must have 1 to {MAX_NAME} characters")
    if not _RUNNER_NAME.fullmatch(name):
        raise ValueError(f"runner name {name!r} may hold only letters, digits, '-', '_', '.'")
    if isinstance(labels, str) or not isinstance(labels, list | tuple):
        raise ValueError(f"labels must be a list of strings, not {labels!r}")
    if not 1 <= len(labels) <= MAX_LABELS:
        raise ValueError(f"a runner needs 1 to {MAX_LABELS} labels, not {len(labels)}")
    for label in labels:
        # The runner itself splits its labels at commas.
        if not isinstance(label, str) or not label or len(label) > MAX_LABEL or "," in label:
            raise ValueError(
                f"label {label!r} must be a string of 1 to {MAX_LABEL} characters without ','"
            )
    if isinstance(runner_group_id, bool) or not isinstance(runner_group_id, int):
        raise ValueError(f"runner_group_id must be an integer, not {runner_group_id!r}")
