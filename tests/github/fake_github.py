"""A local fake of GitHub's REST API for self-hosted runners, and of the service runners
talk to once registered.

It is a contract double: it checks each request the way GitHub does and refuses what
GitHub would refuse, with GitHub's status codes and JSON error bodies, so a client that
passes against it sends what GitHub documents. It serves one owner (an organisation) and
optionally one of its repositories, either at the root like api.github.com or under
`/api/v3` like GitHub Enterprise Server.

Credentials: a token (PAT) and/or a GitHub App. An App's JWT is verified as GitHub does
(RS256 with the App's public key, `iss`, a lifetime of at most 10 minutes, not expired,
not issued in the future) and is accepted only on `/app/...`; it buys installation tokens,
which the repository and organisation endpoints accept until they expire.

`generate-jitconfig` registers a runner and returns a JIT config in the runner's format
(base64 of JSON of base64 of JSON, see `jit_config`); its `ServerUrl` points at the
stand-in actions service under `/_actions`, where a runner connects once with the token
from its config, polls for a job, and posts the job's result. Tests queue jobs with
`queue_job` and await `wait_result`; jobs go to runners by label, as on GitHub.

Use it in-process (`async with FakeGitHub(...) as fake`), from a thread for blocking tests
(`with FakeGitHubThread(...) as fake`), or from the command line:
`python -m tests.github.fake_github --port 8443 --owner acme --repo lab --token t`;
`/_fake/jobs` and `/_fake/runners` then let other processes queue jobs and look.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import inspect
import json
import secrets
import signal
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from multidict import CIMultiDict

T = TypeVar("T")

API_VERSION = "2022-11-28"
GHES_PREFIX = "/api/v3"
DOCS = "https://docs.github.com/rest"
RUNNERS_DOCS = "https://docs.github.com/rest/actions/self-hosted-runners"
JIT_DOCS = f"{RUNNERS_DOCS}#create-configuration-for-a-just-in-time-runner-for-a-repository"
RATE_DOCS = "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
APP_DOCS = "https://docs.github.com/apps/creating-github-apps/authenticating-with-a-github-app"
JWT_MAX_LIFETIME = 600
JWT_FUTURE_LEEWAY = 60
RATE_LIMIT = 5000
MAX_NAME, MAX_LABELS, MAX_LABEL = 64, 100, 256
RESULTS = ("succeeded", "failed", "cancelled")
READ_ONLY_LABELS = ("self-hosted",)
_BODY: web.RequestKey[Any] = web.RequestKey("vdc-fake-json")


@dataclass(frozen=True)
class FakeApp:
    """A GitHub App the fake accepts JWTs of, and the one installation it has."""

    app_id: int | str
    installation_id: int
    public_key: rsa.RSAPublicKey | str | bytes
    """The App's public key, or a PEM of it (or of the private key)."""

    def key(self) -> rsa.RSAPublicKey:
        key: Any = self.public_key
        if isinstance(key, str | bytes):
            pem = key.encode() if isinstance(key, str) else key
            key = (
                serialization.load_pem_private_key(pem, None).public_key()
                if b"PRIVATE KEY" in pem
                else serialization.load_pem_public_key(pem)
            )
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("a GitHub App's key is an RSA key")
        return key


@dataclass
class Recorded:
    """One request as the fake received it, and the status it answered."""

    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    json: Any
    body: bytes
    status: int = 0


@dataclass
class FakeRunner:
    id: int
    name: str
    scope: str
    """"repo" or "org"."""
    group_id: int
    labels: list[dict[str, Any]]
    work_folder: str
    token: str = field(repr=False)
    status: str = "offline"
    busy: bool = False
    connected: bool = False
    """The JIT config was used: it cannot connect again."""
    job: int | None = None
    finished: bool = False
    requested_labels: list[str] = field(default_factory=list)
    """The labels as `generate-jitconfig` was given them (the JIT config lists these)."""

    def label_names(self) -> set[str]:
        return {label["name"].casefold() for label in self.labels}

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "os": "unknown",
            "status": self.status,
            "busy": self.busy,
            "runner_group_id": self.group_id,
            "labels": [dict(label) for label in self.labels],
        }


@dataclass
class JobResult:
    result: str
    steps: list[dict[str, Any]]
    runner_id: int


@dataclass
class Job:
    id: int
    name: str
    labels: list[str]
    steps: list[dict[str, Any]]
    env: dict[str, str]
    runner: int | None = None
    handed_out: bool = False
    result: JobResult | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "steps": self.steps, "env": self.env}

    @property
    def state(self) -> str:
        if self.result is not None:
            return "completed"
        if self.handed_out:
            return "in_progress"
        return "assigned" if self.runner is not None else "queued"


def _b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value, separators=(",", ":")).encode()).decode()


def _error(
    status: int,
    message: str,
    documentation_url: str = DOCS,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"message": message, "documentation_url": documentation_url}
    if errors is not None:
        body["errors"] = errors
    body["status"] = str(status)
    return web.json_response(body, status=status, headers=headers)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class FakeGitHub:
    """The fake server. State is plain attributes; touch it only from the server's loop."""

    def __init__(
        self,
        owner: str = "acme",
        repo: str | None = None,
        *,
        token: str | None = None,
        app: FakeApp | None = None,
        ghes: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        public_url: str | None = None,
        html_base: str | None = None,
        token_lifetime: float = 3600.0,
        runner_groups: dict[int, str] | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.owner, self.repo = owner, repo
        self.token, self.app = token, app
        self._app_key = app.key() if app else None
        self.ghes = ghes
        self.host, self.port = host, port
        self.ssl_context = ssl_context
        self._public_url = public_url.rstrip("/") if public_url else None
        self._html_base = html_base.rstrip("/") if html_base else None
        self.token_lifetime = token_lifetime
        self.runner_groups = {1: "Default", **(runner_groups or {})}
        self.now = now
        """The fake's clock (epoch seconds): replace it to expire tokens or JWTs."""

        self.requests: list[Recorded] = []
        self.runners: dict[int, FakeRunner] = {}
        self.jobs: dict[int, Job] = {}
        self.installation_tokens: dict[str, float] = {}
        """Issued installation tokens and when each expires."""
        self.jwt_claims: list[dict[str, Any]] = []
        """The claims of every JWT that verified."""
        self._faults: deque[Callable[[], web.Response]] = deque()
        self._ids = iter(range(1, 1 << 62))
        self._label_ids: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.app_web = self._make_app()

    # -- addresses ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The server's root: the actions service lives here, and the API at `api_url`."""
        if self._public_url:
            return self._public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl_context else 'http'}://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return self.base_url + (GHES_PREFIX if self.ghes else "")

    @property
    def actions_url(self) -> str:
        return f"{self.base_url}/_actions"

    def html_url(self, scope: str = "repo") -> str:
        base = self._html_base or (self.base_url if self.ghes else "https://github.com")
        if scope == "repo" and self.repo:
            return f"{base}/{self.owner}/{self.repo}"
        return f"{base}/{self.owner}"

    # -- life ---------------------------------------------------------------------------------

    async def start(self) -> str:
        """Listen; returns `base_url`."""
        self._runner = web.AppRunner(self.app_web, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGitHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- test hooks ---------------------------------------------------------------------------

    def rate_limit(self, count: int = 1, reset_in: float = 60.0) -> None:
        """The next `count` API requests exhaust the primary rate limit."""

        def respond() -> web.Response:
            reset = int(self.now() + reset_in)
            headers = {
                "x-ratelimit-limit": str(RATE_LIMIT),
                "x-ratelimit-remaining": "0",
                "x-ratelimit-used": str(RATE_LIMIT),
                "x-ratelimit-reset": str(reset),
                "x-ratelimit-resource": "core",
            }
            message = (
                "API rate limit exceeded for installation. If you reach out to GitHub "
                "Support for help, please include the request ID."
            )
            return _error(
                403, message, f"{RATE_DOCS}#about-the-primary-rate-limit", headers=headers
            )

        self._faults.extend([respond] * count)

    def secondary_limit(self, count: int = 1, retry_after: int = 60) -> None:
        """The next `count` API requests hit a secondary rate limit."""

        def respond() -> web.Response:
            message = (
                "You have exceeded a secondary rate limit. Please wait a few minutes "
                "before you try again."
            )
            return _error(
                403,
                message,
                f"{RATE_DOCS}#about-secondary-rate-limits",
                headers={"retry-after": str(retry_after)},
            )

        self._faults.extend([respond] * count)

    def fail(self, count: int = 1, status: int = 502) -> None:
        """The next `count` API requests fail with `status`; gateways answer in HTML."""

        def respond() -> web.Response:
            if status in (502, 503, 504):
                text = f"<html><body><h1>{status} Bad Gateway</h1></body></html>"
                return web.Response(status=status, text=text, content_type="text/html")
            return _error(status, "Server Error")

        self._faults.extend([respond] * count)

    def queue_job(
        self,
        labels: Iterable[str],
        name: str = "job",
        steps: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        """Queue a job for a runner with all of `labels`; returns the job's id."""
        labels = list(labels)
        if not labels or not all(isinstance(x, str) and x for x in labels):
            raise ValueError("a job needs at least one label")
        steps = steps if steps is not None else [{"name": "run", "run": "true"}]
        for step in steps:
            # A workflow step's keys; runners may honour `if` and `env` or not.
            if not isinstance(step.get("run"), str) or set(step) - {"name", "run", "if", "env"}:
                raise ValueError(f"a step is {{name, run[, if, env]}}, not {step!r}")
        job = Job(next(self._ids), name, labels, [dict(s) for s in steps], dict(env or {}))
        self.jobs[job.id] = job
        self._dispatch()
        return job.id

    # A plain timeout reads better in tests and the thread helper than asyncio.timeout.
    async def wait_result(self, job_id: int, timeout: float = 60.0) -> JobResult:  # noqa: ASYNC109
        job = self.jobs[job_id]
        try:
            await asyncio.wait_for(job.done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(
                f"job {job_id} ({job.state}) has no result after {timeout} s"
            ) from None
        assert job.result is not None
        return job.result

    def jit_config(self, runner: FakeRunner) -> str:
        """The JIT config of a runner, as `generate-jitconfig` returned it."""
        dot_runner = {
            "AgentId": runner.id,
            "AgentName": runner.name,
            "PoolId": runner.group_id,
            "PoolName": self.runner_groups[runner.group_id],
            "ServerUrl": f"{self.actions_url}/",
            "GitHubUrl": self.html_url(runner.scope),
            "WorkFolder": runner.work_folder,
            "Labels": runner.requested_labels,
        }
        credentials = {
            "Scheme": "OAuth",
            "Data": {
                "clientId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.base_url}/{runner.id}")),
                "authorizationUrl": f"{self.base_url}/_apis/oauth2/token/{runner.id}",
                "requireFipsCryptography": "False",
                "token": runner.token,
            },
        }
        # Stand-ins for the runner's RSA key, in the names the runner stores it under.
        sizes = {"d": 256, "dp": 128, "dq": 128, "exponent": 3, "inverseQ": 128}
        sizes |= {"modulus": 256, "p": 128, "q": 128}
        rsaparams = {k: base64.b64encode(secrets.token_bytes(n)).decode() for k, n in sizes.items()}
        return _b64json(
            {
                ".runner": _b64json(dot_runner),
                ".credentials": _b64json(credentials),
                ".credentials_rsaparams": _b64json(rsaparams),
            }
        )

    # -- the application ----------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        p = GHES_PREFIX if self.ghes else ""
        r = app.router
        r.add_get(f"{p}/app", self._get_app)
        r.add_post(f"{p}/app/installations/{{iid}}/access_tokens", self._access_token)
        for base in (f"{p}/repos/{{owner}}/{{repo}}", f"{p}/orgs/{{org}}"):
            runners = f"{base}/actions/runners"
            r.add_post(f"{runners}/generate-jitconfig", self._generate_jitconfig)
            r.add_get(runners, self._list_runners)
            r.add_get(f"{runners}/{{id:[0-9]+}}", self._get_runner)
            r.add_delete(f"{runners}/{{id:[0-9]+}}", self._delete_runner)
        r.add_post("/_actions/{id:[0-9]+}/connect", self._connect)
        r.add_get("/_actions/{id:[0-9]+}/job", self._job)
        r.add_post("/_actions/{id:[0-9]+}/result", self._result)
        r.add_post("/_fake/jobs", self._fake_queue)
        r.add_get("/_fake/jobs/{id:[0-9]+}", self._fake_job)
        r.add_get("/_fake/runners", self._fake_runners)
        return app

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        record = Recorded(
            request.method,
            request.path,
            dict(request.query),
            CIMultiDict(request.headers),
            body,
            raw,
        )
        self.requests.append(record)
        # Handlers read the body parsed here: the stream is spent.
        request[_BODY] = body
        try:
            if request.path.startswith(("/_actions/", "/_fake/")):
                response = await handler(request)
            else:
                response = await self._api(request, handler, raw, body)
        except web.HTTPException as exc:
            # GitHub answers an unknown path or method with its JSON 404.
            if exc.status in (404, 405):
                response = _error(404, "Not Found")
            else:
                response = _error(exc.status, exc.reason)
        record.status = response.status
        return response

    async def _api(
        self, request: web.Request, handler: Callable[[web.Request], Any], raw: bytes, body: Any
    ) -> web.StreamResponse:
        headers = request.headers
        if not headers.get("User-Agent"):
            return _error(
                403,
                "Request forbidden by administrative rules. Please make sure your request "
                "has a User-Agent header (https://docs.github.com/en/rest/overview/resources-"
                "in-the-rest-api#user-agent-required). Check https://developer.github.com for "
                "other possible causes.",
            )
        version = headers.get("X-GitHub-Api-Version")
        if version is not None and version != API_VERSION:
            return _error(
                400,
                f"API version '{version}' is not supported. Supported versions: {API_VERSION}",
                f"{DOCS}/about-the-rest-api/api-versions",
            )
        if self._faults:
            return self._faults.popleft()()
        path = request.path.removeprefix(GHES_PREFIX) if self.ghes else request.path
        refused = self._authenticate(request, app_path=path.startswith("/app/") or path == "/app")
        if refused is not None:
            return refused
        if request.method in ("POST", "PATCH", "PUT") and raw and body is None:
            return _error(400, "Problems parsing JSON", DOCS)
        response: web.StreamResponse = await handler(request)
        remaining = RATE_LIMIT - len(self.requests)
        response.headers.setdefault("x-ratelimit-limit", str(RATE_LIMIT))
        response.headers.setdefault("x-ratelimit-remaining", str(max(remaining, 1)))
        response.headers.setdefault("x-ratelimit-reset", str(int(self.now()) + 3600))
        return response

    # -- authentication -----------------------------------------------------------------------

    def _authenticate(self, request: web.Request, *, app_path: bool) -> web.Response | None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        credential = credential.strip()
        if scheme.lower() not in ("bearer", "token") or not credential:
            return _error(401, "Requires authentication", DOCS)
        looks_jwt = credential.count(".") == 2
        if app_path:
            if self._app_key is None or not looks_jwt:
                return _error(401, "A JSON web token could not be decoded", APP_DOCS)
            problem = self._verify_jwt(credential)
            return _error(401, problem, APP_DOCS) if problem else None
        if self.token is not None and secrets.compare_digest(credential, self.token):
            return None
        expires = self.installation_tokens.get(credential)
        if expires is not None and self.now() < expires:
            return None
        # A JWT, an expired installation token, or a token never issued.
        return _error(401, "Bad credentials", DOCS)

    def _verify_jwt(self, token: str) -> str | None:
        """Why GitHub would refuse this App JWT, or None if it would accept it."""
        assert self.app is not None and self._app_key is not None
        try:
            claims = jwt.decode(
                token,
                self._app_key,
                algorithms=["RS256"],
                # The time claims are checked below against the fake's clock.
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_iss": False,
                    "verify_aud": False,
                },
            )
        except jwt.PyJWTError:
            return "A JSON web token could not be decoded"
        now = self.now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not _is_int(iat):
            return (
                "'Issued at' claim ('iat') must be an Integer representing the time that "
                "the assertion was issued."
            )
        if not _is_int(exp) or exp <= now:
            return (
                "'Expiration time' claim ('exp') must be a numeric value representing the "
                "future time at which the assertion expires."
            )
        if exp - iat > JWT_MAX_LIFETIME or exp > now + JWT_MAX_LIFETIME:
            return "'Expiration time' claim ('exp') is too far in the future."
        if iat > now + JWT_FUTURE_LEEWAY:
            return "'Issued at' claim ('iat') must be an Integer representing a time in the past."
        if str(claims.get("iss")) != str(self.app.app_id):
            return "'Issuer' claim ('iss') must be the App's id or client id."
        self.jwt_claims.append(claims)
        return None

    # -- /app ---------------------------------------------------------------------------------

    async def _get_app(self, request: web.Request) -> web.Response:
        assert self.app is not None
        return web.json_response({"id": self.app.app_id, "slug": "vdc-fake", "name": "vdc"})

    async def _access_token(self, request: web.Request) -> web.Response:
        assert self.app is not None
        if request.match_info["iid"] != str(self.app.installation_id):
            return _error(
                404, "Not Found", f"{DOCS}/apps/apps#create-an-installation-access-token-for-an-app"
            )
        token = "ghs_" + secrets.token_urlsafe(27)
        expires = int(self.now() + self.token_lifetime)
        self.installation_tokens[token] = expires
        body = {
            "token": token,
            "expires_at": _iso(expires),
            "permissions": {"administration": "write", "organization_self_hosted_runners": "write"},
            "repository_selection": "all",
        }
        return web.json_response(body, status=201)

    # -- runners ------------------------------------------------------------------------------

    def _scope(self, request: web.Request) -> str | None:
        """Which of our registries the path names, or None: GitHub's 404."""
        info = request.match_info
        if "org" in info:
            return "org" if info["org"].casefold() == self.owner.casefold() else None
        if (
            self.repo is not None
            and info["owner"].casefold() == self.owner.casefold()
            and info["repo"].casefold() == self.repo.casefold()
        ):
            return "repo"
        return None

    def _runner_in(self, request: web.Request, scope: str) -> FakeRunner | None:
        runner = self.runners.get(int(request.match_info["id"]))
        return runner if runner is not None and runner.scope == scope else None

    async def _generate_jitconfig(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        if scope is None:
            return _error(404, "Not Found", JIT_DOCS)
        body = request[_BODY]
        errors = self._validate_jit(body)
        if errors:
            return _error(422, "Validation Failed", JIT_DOCS, errors=errors)
        assert isinstance(body, dict)
        name = body["name"]
        if any(
            r.scope == scope and r.name.casefold() == name.casefold() for r in self.runners.values()
        ):
            return _error(
                409, f"Already exists - A runner with the name {name} already exists.", JIT_DOCS
            )
        labels = [
            {"id": self._label_id(n), "name": n, "type": "read-only"} for n in READ_ONLY_LABELS
        ]
        for label in body["labels"]:
            if label.casefold() not in {x["name"].casefold() for x in labels}:
                labels.append({"id": self._label_id(label), "name": label, "type": "custom"})
        runner = FakeRunner(
            id=next(self._ids),
            name=name,
            scope=scope,
            group_id=body["runner_group_id"],
            labels=labels,
            work_folder=body.get("work_folder", "_work"),
            token=secrets.token_urlsafe(32),
            requested_labels=list(body["labels"]),
        )
        self.runners[runner.id] = runner
        return web.json_response(
            {"runner": runner.as_json(), "encoded_jit_config": self.jit_config(runner)}, status=201
        )

    def _validate_jit(self, body: Any) -> list[dict[str, Any]]:
        errors: list[dict[str, Any]] = []

        def bad(fld: str, message: str, code: str = "invalid") -> None:
            errors.append({"resource": "Runner", "field": fld, "code": code, "message": message})

        if not isinstance(body, dict):
            bad("", "the request body must be a JSON object")
            return errors
        for key in ("name", "runner_group_id", "labels"):
            if key not in body:
                bad(key, f"{key} is required", "missing_field")
        name = body.get("name")
        if "name" in body and (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME):
            bad("name", f"name must be a string of 1 to {MAX_NAME} characters")
        group = body.get("runner_group_id")
        if "runner_group_id" in body:
            if not _is_int(group):
                bad("runner_group_id", "runner_group_id must be an integer")
            elif group not in self.runner_groups:
                bad("runner_group_id", f"runner group {group} does not exist")
        labels = body.get("labels")
        if "labels" in body:
            if not isinstance(labels, list) or not 0 < len(labels) <= MAX_LABELS:
                bad("labels", f"labels must be a list of 1 to {MAX_LABELS} strings")
            elif not all(isinstance(x, str) and 0 < len(x) <= MAX_LABEL for x in labels):
                bad("labels", f"each label must be a string of 1 to {MAX_LABEL} characters")
        if "work_folder" in body and not isinstance(body["work_folder"], str):
            bad("work_folder", "work_folder must be a string")
        return errors

    def _label_id(self, name: str) -> int:
        return self._label_ids.setdefault(name.casefold(), len(self._label_ids) + 1)

    async def _list_runners(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        if scope is None:
            return _error(404, "Not Found", RUNNERS_DOCS)
        try:
            per_page = min(int(request.query.get("per_page", 30)), 100)
            page = max(int(request.query.get("page", 1)), 1)
        except ValueError:
            return _error(422, "Validation Failed", RUNNERS_DOCS, errors=[])
        name = request.query.get("name")
        found = [
            r
            for r in sorted(self.runners.values(), key=lambda r: r.id)
            if r.scope == scope and (name is None or r.name == name)
        ]
        chunk = found[(page - 1) * per_page : page * per_page]
        return web.json_response(
            {"total_count": len(found), "runners": [r.as_json() for r in chunk]}
        )

    async def _get_runner(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        runner = self._runner_in(request, scope) if scope else None
        if runner is None:
            return _error(404, "Not Found", RUNNERS_DOCS)
        return web.json_response(runner.as_json())

    async def _delete_runner(self, request: web.Request) -> web.Response:
        scope = self._scope(request)
        runner = self._runner_in(request, scope) if scope else None
        if runner is None:
            return _error(404, "Not Found", RUNNERS_DOCS)
        del self.runners[runner.id]
        job = self.jobs.get(runner.job) if runner.job is not None else None
        if job is not None and not job.handed_out:
            # The runner never picked it up: another runner may.
            job.runner = None
            self._dispatch()
        return web.Response(status=204)

    # -- the stand-in actions service ---------------------------------------------------------

    def _actions_runner(self, request: web.Request) -> FakeRunner | web.Response:
        runner = self.runners.get(int(request.match_info["id"]))
        if runner is None:
            return _error(404, "Not Found")
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            credential.strip(), runner.token
        ):
            return _error(401, "Bad credentials")
        return runner

    async def _connect(self, request: web.Request) -> web.Response:
        runner = self._actions_runner(request)
        if isinstance(runner, web.Response):
            return runner
        if runner.connected:
            return _error(409, "This JIT configuration has already been used.")
        runner.connected = True
        runner.status = "online"
        self._dispatch()
        return web.json_response(runner.as_json())

    async def _job(self, request: web.Request) -> web.Response:
        runner = self._actions_runner(request)
        if isinstance(runner, web.Response):
            return runner
        if runner.status != "online":
            return _error(409, f"Runner {runner.name} is not connected.")
        job = self.jobs.get(runner.job) if runner.job is not None else None
        if job is None:
            return web.Response(status=204)
        job.handed_out = True
        runner.busy = True
        return web.json_response(job.as_json())

    async def _result(self, request: web.Request) -> web.Response:
        runner = self._actions_runner(request)
        if isinstance(runner, web.Response):
            return runner
        job = self.jobs.get(runner.job) if runner.job is not None else None
        if job is None or not job.handed_out or job.result is not None:
            return _error(409, f"Runner {runner.name} has no job running.")
        body = request[_BODY]
        problem = _check_result(body)
        if problem:
            return _error(
                422, "Validation Failed", errors=[{"code": "invalid", "message": problem}]
            )
        job.result = JobResult(body["result"], body["steps"], runner.id)
        runner.status, runner.busy, runner.finished = "offline", False, True
        job.done.set()
        return web.json_response({"id": job.id, "result": job.result.result})

    def _dispatch(self) -> None:
        """Give queued jobs to connected idle runners that have all their labels."""
        for job in self.jobs.values():
            if job.runner is not None:
                continue
            wanted = {x.casefold() for x in job.labels}
            for runner in sorted(self.runners.values(), key=lambda r: r.id):
                idle = runner.status == "online" and runner.job is None
                if idle and wanted <= runner.label_names():
                    job.runner, runner.job = runner.id, job.id
                    break

    # -- control for other processes ----------------------------------------------------------

    async def _fake_queue(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        if not isinstance(body, dict):
            return _error(400, "Problems parsing JSON")
        try:
            job_id = self.queue_job(
                body.get("labels", []),
                body.get("name", "job"),
                body.get("steps"),
                body.get("env"),
            )
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(422, str(exc))
        return web.json_response({"id": job_id}, status=201)

    async def _fake_job(self, request: web.Request) -> web.Response:
        job = self.jobs.get(int(request.match_info["id"]))
        if job is None:
            return _error(404, "Not Found")
        out: dict[str, Any] = {
            **job.as_json(),
            "labels": job.labels,
            "state": job.state,
            "runner_id": job.runner,
            "result": None,
        }
        if job.result is not None:
            out["result"] = {"result": job.result.result, "steps": job.result.steps}
        return web.json_response(out)

    async def _fake_runners(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{**r.as_json(), "scope": r.scope, "job": r.job} for r in self.runners.values()]
        )


def _check_result(body: Any) -> str | None:
    if not isinstance(body, dict) or body.get("result") not in RESULTS:
        return f"result must be one of {', '.join(RESULTS)}"
    steps = body.get("steps")
    if not isinstance(steps, list):
        return "steps must be a list"
    for step in steps:
        if not (
            isinstance(step, dict)
            and isinstance(step.get("name"), str)
            and _is_int(step.get("exit_code"))
            and isinstance(step.get("output"), str)
        ):
            return "each step is {name: string, exit_code: integer, output: string}"
    return None


# -- in a thread ------------------------------------------------------------------------------


class FakeGitHubThread:
    """The fake on an event loop in a background thread, for blocking tests.

    `with FakeGitHubThread(owner="acme", repo="lab", token="t") as gh:` starts it;
    `gh.url` and `gh.api_url` are its addresses, `gh.fake` the server (read its state
    through `gh.call`), `gh.queue_job(...)` and `gh.wait_result(job_id)` drive jobs.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="fake-github", daemon=True
        )
        self.fake: FakeGitHub | None = None

    def start(self) -> str:
        """Start the loop and the server; returns the server's base URL."""
        self._thread.start()

        async def make() -> FakeGitHub:
            fake = FakeGitHub(**self._kwargs)
            await fake.start()
            return fake

        self.fake = self._run(make(), 30)
        return self.fake.base_url

    def stop(self) -> None:
        if self.fake is not None:
            self._run(self.fake.stop(), 30)
            self.fake = None
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()

    def __enter__(self) -> FakeGitHubThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.fake is not None
        return self.fake.base_url

    @property
    def api_url(self) -> str:
        assert self.fake is not None
        return self.fake.api_url

    def _run(self, coro: Any, timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` (a function or coroutine function) on the fake's loop; its result."""

        async def run() -> Any:
            out = fn(*args, **kwargs)
            return await out if inspect.isawaitable(out) else out

        return self._run(run(), 60)

    def queue_job(
        self,
        labels: Iterable[str],
        name: str = "job",
        steps: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
    ) -> int:
        assert self.fake is not None
        return self.call(self.fake.queue_job, list(labels), name, steps, env)

    def wait_result(self, job_id: int, timeout: float = 60.0) -> JobResult:
        assert self.fake is not None
        return self._run(self.fake.wait_result(job_id, timeout), timeout + 10)


# -- command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.github.fake_github", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--owner", required=True, help="the organisation (or user)")
    parser.add_argument("--repo", help="a repository of the owner")
    parser.add_argument("--token", help="a token (PAT) the API accepts")
    parser.add_argument("--app-id", help="a GitHub App whose JWTs /app/... accepts")
    parser.add_argument("--installation-id", type=int, default=1)
    parser.add_argument("--public-key", type=Path, help="the App's public (or private) key PEM")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--ghes", action="store_true", help="serve the API under /api/v3")
    parser.add_argument("--public-url", help="how runners reach this server (JIT configs)")
    parser.add_argument("--token-lifetime", type=float, default=3600.0)
    args = parser.parse_args(argv)
    if not args.token and not args.app_id:
        parser.error("give --token and/or --app-id with --public-key")
    if args.app_id and not args.public_key:
        parser.error("--app-id needs --public-key")
    if bool(args.tls_cert) != bool(args.tls_key):
        parser.error("give both --tls-cert and --tls-key, or neither")
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    app = None
    if args.app_id:
        app = FakeApp(args.app_id, args.installation_id, args.public_key.read_bytes())

    async def serve() -> None:
        fake = FakeGitHub(
            args.owner,
            args.repo,
            token=args.token,
            app=app,
            ghes=args.ghes,
            host=args.host,
            port=args.port,
            ssl_context=context,
            public_url=args.public_url,
            token_lifetime=args.token_lifetime,
        )
        await fake.start()
        print(
            f"fake GitHub: API {fake.api_url}, web {fake.html_url()}, actions {fake.actions_url}",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await fake.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
