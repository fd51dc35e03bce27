"""Contract tests of the operator's GitHub client against the fake GitHub, and of the fake's
own refusals (a fake that accepted anything would prove nothing about the client)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.github.fake_github import FakeApp, FakeGitHub, FakeGitHubThread
from vdc_operator.github import (
    AppAuth,
    AuthFailed,
    Conflict,
    GitHub,
    GitHubError,
    NotFound,
    RateLimited,
    Target,
    TokenAuth,
    credentials_from_secret,
    runner_name,
    vdc_label,
)

pytestmark = pytest.mark.timeout(30)

TOKEN = "ghp_fake-token"
APP_ID = 12345
INSTALLATION = 77
ROOT = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves by hand, shared by the client and the fake."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="session")
def app_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(app_key: rsa.RSAPrivateKey, clock: Clock) -> AsyncIterator[FakeGitHub]:
    app = FakeApp(APP_ID, INSTALLATION, app_key.public_key())
    async with FakeGitHub("acme", "lab", token=TOKEN, app=app, now=clock) as server:
        yield server


def target(fake: FakeGitHub, scope: str = "repo") -> Target:
    repo = fake.repo if scope == "repo" else None
    return Target(fake.api_url, fake.owner, repo, fake.html_url(scope))


def app_auth(key: rsa.RSAPrivateKey) -> AppAuth:
    return AppAuth(str(APP_ID), INSTALLATION, pem(key))


def decode_jit(encoded: str) -> dict[str, Any]:
    outer = json.loads(base64.b64decode(encoded, validate=True))
    return {k: json.loads(base64.b64decode(v, validate=True)) for k, v in outer.items()}


def api_headers(credential: str | None = TOKEN) -> dict[str, str]:
    headers = {
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": "test",
    }
    if credential:
        headers["Authorization"] = f"Bearer {credential}"
    return headers


# -- URLs, credentials, names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "api", "owner", "repo", "html"),
    [
        ("https://github.com/acme/lab", "https://api.github.com", "acme", "lab", None),
        ("https://github.com/acme/lab/", "https://api.github.com", "acme", "lab",
         "https://github.com/acme/lab"),
        ("https://github.com/acme/lab.git", "https://api.github.com", "acme", "lab",
         "https://github.com/acme/lab"),
        ("https://GitHub.com/acme", "https://api.github.com", "acme", None,
         "https://github.com/acme"),
        ("https://ghe.example.com/acme/lab", "https://ghe.example.com/api/v3", "acme", "lab",
         None),
        ("https://ghe.example.com:8443/acme", "https://ghe.example.com:8443/api/v3", "acme",
         None, None),
        ("https://[::1]:8443/acme/x.y_z", "https://[::1]:8443/api/v3", "acme", "x.y_z", None),
    ],
)  # fmt: skip
def test_target_from_url(url: str, api: str, owner: str, repo: str | None, html: str) -> None:
    t = Target.from_url(url)
    assert (t.api_url, t.owner, t.repo, t.html_url) == (api, owner, repo, html or url)
    if repo:
        assert t.scope == "repo"
        assert t.runners_path == f"/repos/{owner}/{repo}/actions/runners"
    else:
        assert t.scope == "org"
        assert t.runners_path == f"/orgs/{owner}/actions/runners"


@pytest.mark.parametrize(
    "url",
    [
        "http://github.com/acme/lab",
        "git@github.com:acme/lab.git",
        "github.com/acme/lab",
        "https://github.com",
        "https://github.com/",
        "https://github.com/acme/lab/tree/main",
        "https://github.com/acme/lab?tab=settings",
        "https://github.com/acme/lab#readme",
        "https://user:pw@github.com/acme/lab",
        "https://github.com/-acme",
        "https://github.com/acme/..",
        "https://api.github.com/acme",
        "https://ghe.example.com:99999/acme",
    ],
)
def test_target_rejects(url: str) -> None:
    with pytest.raises(ValueError, match=re.escape("https://github.com/OWNER/REPO")):
        Target.from_url(url)


def test_credentials_from_secret(app_key: rsa.RSAPrivateKey) -> None:
    assert credentials_from_secret({"token": b"ghp_x\n"}) == TokenAuth("ghp_x")
    auth = credentials_from_secret(
        {"app-id": b"12345", "installation-id": "77\n", "private-key": pem(app_key).encode()}
    )
    assert auth == AppAuth("12345", 77, pem(app_key))
    assert "ghp_x" not in repr(TokenAuth("ghp_x"))
    assert "PRIVATE" not in repr(auth)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "neither a token nor App keys"),
        ({"tokn": "x"}, r"it has tokn"),
        ({"token": "x", "app-id": "1"}, "both a token and App keys"),
        ({"token": "x", "ca.crt": "y"}, "unexpected key ca.crt"),
        ({"token": " \n"}, "token is empty"),
        ({"app-id": "1"}, "lacks key installation-id, private-key"),
        ({"app-id": "1", "installation-id": "x", "private-key": "k"}, "must be a number"),
        ({"app-id": "1", "installation-id": "2", "private-key": "junk"}, "not an unencrypted PEM"),
    ],
)
def test_credentials_refused(data: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        credentials_from_secret(data)


def test_credentials_need_rsa() -> None:
    key = pem(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="not an RSA key"):
        credentials_from_secret({"app-id": "1", "installation-id": "2", "private-key": key})


def test_names_and_labels() -> None:
    uid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert runner_name("ci", "lab", uid, 0) == "vdc-ci-lab-1b4e28ba-0"
    assert vdc_label("ci", "lab", uid) == "vdc-ci-lab-1b4e28ba"
    long = "x" * 63
    safe = re.compile(r"[A-Za-z0-9_.-]{1,64}")
    names = {runner_name(long, "a." + long, uid, i) for i in range(20)}
    assert len(names) == 20
    for name in [*names, vdc_label(long, long, uid), runner_name("ns", "n", "", 12345)]:
        assert safe.fullmatch(name), name
        assert not name.endswith(("-", ".")) and "--" not in name.replace("-0", "")
    assert runner_name(long, long, uid, 7).endswith("-1b4e28ba-7")
    assert vdc_label(long, long, uid).endswith("-1b4e28ba")
    other = "9a4e28ba-2fa1-11d2-883f-0016d3cca427"
    assert runner_name("ci", "lab", other, 0) != runner_name("ci", "lab", uid, 0)
    assert vdc_label("ci", "lab", other) != vdc_label("ci", "lab", uid)


# -- token auth -----------------------------------------------------------------------------------


async def test_jit_config_request_and_format(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth(TOKEN), user_agent="vdc-test/1") as gh:
        jit = await gh.jit_config("vdc-ci-lab-1-0", ["self-hosted", "vdc-ci-lab-1"])
    [req] = fake.requests
    assert (req.method, req.path, req.status) == (
        "POST",
        "/repos/acme/lab/actions/runners/generate-jitconfig",
        201,
    )
    assert req.json == {
        "name": "vdc-ci-lab-1-0",
        "runner_group_id": 1,
        "labels": ["self-hosted", "vdc-ci-lab-1"],
        "work_folder": "_work",
    }
    assert req.headers["Accept"] == "application/vnd.github+json"
    assert req.headers["X-GitHub-Api-Version"] == "2022-11-28"
    assert req.headers["User-Agent"] == "vdc-test/1"
    assert req.headers["Authorization"] == f"Bearer {TOKEN}"

    assert jit.name == "vdc-ci-lab-1-0" and jit.id in fake.runners
    assert jit.encoded_jit_config not in repr(jit)
    config = decode_jit(jit.encoded_jit_config)
    assert set(config) == {".runner", ".credentials", ".credentials_rsaparams"}
    assert config[".runner"] == {
        "AgentId": jit.id,
        "AgentName": "vdc-ci-lab-1-0",
        "PoolId": 1,
        "PoolName": "Default",
        "ServerUrl": f"{fake.base_url}/_actions/",
        "GitHubUrl": "https://github.com/acme/lab",
        "WorkFolder": "_work",
        "Labels": ["self-hosted", "vdc-ci-lab-1"],
    }
    creds = config[".credentials"]
    assert creds["Scheme"] == "OAuth"
    assert creds["Data"]["authorizationUrl"] == f"{fake.base_url}/_apis/oauth2/token/{jit.id}"
    assert creds["Data"]["token"] == fake.runners[jit.id].token
    assert creds["Data"]["requireFipsCryptography"] == "False"
    for value in config[".credentials_rsaparams"].values():
        base64.b64decode(value, validate=True)

    runner = fake.runners[jit.id].as_json()
    assert runner["status"] == "offline" and runner["busy"] is False
    assert [(x["name"], x["type"]) for x in runner["labels"]] == [
        ("self-hosted", "read-only"),
        ("vdc-ci-lab-1", "custom"),
    ]


async def test_org_scope(fake: FakeGitHub) -> None:
    async with GitHub(target(fake, "org"), TokenAuth(TOKEN)) as gh:
        jit = await gh.jit_config("r1", ["vdc-x"], work_folder="w")
        assert await gh.runner(jit.id) is not None
    assert fake.requests[0].path == "/orgs/acme/actions/runners/generate-jitconfig"
    assert decode_jit(jit.encoded_jit_config)[".runner"]["GitHubUrl"] == "https://github.com/acme"
    assert fake.runners[jit.id].scope == "org"
    # Repository and organisation runners are separate registries, as on GitHub.
    async with GitHub(target(fake, "repo"), TokenAuth(TOKEN)) as gh:
        assert await gh.runner(jit.id) is None
        assert (await gh.jit_config("r1", ["vdc-x"])).id != jit.id


async def test_duplicate_name_conflicts(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh:
        await gh.jit_config("twice", ["a"])
        with pytest.raises(Conflict) as exc:
            await gh.jit_config("twice", ["a"])
    assert exc.value.status == 409
    assert exc.value.message == "Already exists - A runner with the name twice already exists."
    assert "409 Already exists" in str(exc.value)


async def test_bad_input_refused_before_sending(fake: FakeGitHub) -> None:
    # Input GitHub would refuse is a bug of ours: it fails here, naming the problem, and
    # costs no request (nor rate limit).
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh:
        for name, labels in [("", ["a"]), ("x" * 65, ["a"]), ("a b", ["a"]), ("ok", []),
                             ("ok", [""]), ("ok", ["a,b"]), ("ok", ["x"] * 101)]:  # fmt: skip
            with pytest.raises(ValueError):
                await gh.jit_config(name, labels)
        with pytest.raises(ValueError):
            await gh.jit_config("ok", ["a"], runner_group_id=True)
    assert fake.requests == []


async def test_validation_failed_from_github(fake: FakeGitHub) -> None:
    # What only GitHub knows (which runner groups exist) comes back as its 422.
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh:
        with pytest.raises(Conflict) as exc:
            await gh.jit_config("r", ["a"], runner_group_id=9)
    assert exc.value.status == 422 and exc.value.message == "Validation Failed"
    assert exc.value.errors[0]["field"] == "runner_group_id"
    assert "runner group 9 does not exist" in str(exc.value)


async def test_fake_validates_jit_payload(fake: FakeGitHub) -> None:
    url = f"{fake.api_url}/repos/acme/lab/actions/runners/generate-jitconfig"
    good = {"name": "r", "runner_group_id": 1, "labels": ["a"], "work_folder": "_w", "x": 1}
    cases: list[tuple[Any, set[str]]] = [
        ({**good, "labels": []}, {"labels"}),
        ({**good, "labels": ["a", ""]}, {"labels"}),
        ({**good, "labels": ["a" * 257]}, {"labels"}),
        ({**good, "labels": "a"}, {"labels"}),
        ({**good, "name": "n" * 65}, {"name"}),
        ({**good, "name": ""}, {"name"}),
        ({**good, "runner_group_id": "1"}, {"runner_group_id"}),
        ({**good, "work_folder": 3}, {"work_folder"}),
        ({"labels": ["a"]}, {"name", "runner_group_id"}),
        ([good], {""}),
    ]
    async with aiohttp.ClientSession(headers=api_headers()) as http:
        for body, fields in cases:
            async with http.post(url, json=body) as resp:
                data = await resp.json()
            assert resp.status == 422, body
            assert data["message"] == "Validation Failed"
            assert data["documentation_url"].startswith("https://docs.github.com/")
            assert {e["field"] for e in data["errors"]} == fields, body
        async with http.post(url, data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["message"] == "Problems parsing JSON"
        async with http.post(url, json=good) as resp:
            assert resp.status == 201  # unknown keys are ignored
    assert len(fake.runners) == 1


async def test_bad_token(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth("ghp_wrong")) as gh:
        with pytest.raises(AuthFailed) as exc:
            await gh.jit_config("r", ["a"])
    assert exc.value.status == 401 and exc.value.message == "Bad credentials"
    assert not exc.value.transient


async def test_wrong_repo_not_found(fake: FakeGitHub) -> None:
    for t in [
        Target(fake.api_url, "acme", "other", "https://github.com/acme/other"),
        Target(fake.api_url, "someone", None, "https://github.com/someone"),
    ]:
        async with GitHub(t, TokenAuth(TOKEN)) as gh:
            with pytest.raises(NotFound) as exc:
                await gh.jit_config("r", ["a"])
            assert exc.value.message == "Not Found"
            with pytest.raises(NotFound):
                await gh.runners()
    assert not fake.runners


async def test_runner_get_delete_list(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh:
        ids = [(await gh.jit_config(f"r{i}", ["a"])).id for i in range(3)]
        got = await gh.runner(ids[0])
        assert got is not None and got["name"] == "r0" and got["status"] == "offline"
        assert [r["id"] for r in await gh.runners()] == ids
        assert await gh.delete_runner(ids[0]) is True
        assert await gh.runner(ids[0]) is None
        assert await gh.delete_runner(ids[0]) is False
        assert [r["id"] for r in await gh.runners()] == ids[1:]
    deletes = [r for r in fake.requests if r.method == "DELETE"]
    assert [(r.path, r.status) for r in deletes] == [
        (f"/repos/acme/lab/actions/runners/{ids[0]}", 204),
        (f"/repos/acme/lab/actions/runners/{ids[0]}", 404),
    ]


async def test_list_pages(fake: FakeGitHub) -> None:
    async with aiohttp.ClientSession(headers=api_headers()) as http:
        for i in range(5):
            body = {"name": f"r{i}", "runner_group_id": 1, "labels": ["a"]}
            await http.post(
                f"{fake.api_url}/orgs/acme/actions/runners/generate-jitconfig", json=body
            )
        url = f"{fake.api_url}/orgs/acme/actions/runners?per_page=2&page=3"
        async with http.get(url) as resp:
            data = await resp.json()
    assert data["total_count"] == 5 and [r["name"] for r in data["runners"]] == ["r4"]


# -- errors: rate limits, failures -------------------------------------------------------------


async def test_primary_rate_limit(fake: FakeGitHub, clock: Clock) -> None:
    fake.rate_limit(1, reset_in=120)
    async with GitHub(target(fake), TokenAuth(TOKEN), now=clock) as gh:
        with pytest.raises(RateLimited) as exc:
            await gh.jit_config("r", ["a"])
        assert exc.value.retry_at == int(clock.t + 120)
        assert exc.value.status == 403 and exc.value.transient
        assert "API rate limit exceeded" in exc.value.message
        await gh.jit_config("r", ["a"])  # the limit has passed: the name is still free


async def test_secondary_rate_limit(fake: FakeGitHub, clock: Clock) -> None:
    fake.secondary_limit(2, retry_after=30)
    async with GitHub(target(fake), TokenAuth(TOKEN), now=clock) as gh:
        with pytest.raises(RateLimited) as exc:
            await gh.runner(1)
        assert exc.value.retry_at == clock.t + 30
        assert "secondary rate limit" in exc.value.message
        clock.t += 5
        with pytest.raises(RateLimited) as exc:
            await gh.delete_runner(1)
        assert exc.value.retry_at == clock.t + 30
        assert await gh.runner(1) is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_transient(fake: FakeGitHub, status: int) -> None:
    fake.fail(1, status)
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh:
        with pytest.raises(GitHubError) as exc:
            await gh.jit_config("r", ["a"])
        assert type(exc.value) is GitHubError
        assert exc.value.status == status and exc.value.transient
        assert ("Server Error" if status == 500 else "Bad Gateway") in str(exc.value)
        await gh.jit_config("r", ["a"])


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = Target(f"http://127.0.0.1:{port}", "acme", "lab", "https://github.com/acme/lab")
    async with GitHub(t, TokenAuth(TOKEN)) as gh:
        with pytest.raises(GitHubError) as exc:
            await gh.runner(1)
    assert exc.value.status is None and exc.value.transient


async def test_injected_session_is_not_closed(fake: FakeGitHub) -> None:
    async with aiohttp.ClientSession() as session:
        async with GitHub(target(fake), TokenAuth(TOKEN), session=session) as gh:
            await gh.runners()
        assert not session.closed


# -- App auth ---------------------------------------------------------------------------------


def exchanges(fake: FakeGitHub) -> list[Any]:
    path = f"/app/installations/{INSTALLATION}/access_tokens"
    return [r for r in fake.requests if r.path == path]


async def test_app_jwt_and_token_exchange(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    async with GitHub(target(fake), app_auth(app_key), now=clock) as gh:
        await gh.jit_config("r", ["a"])
        await gh.runner(1)
        await gh.runners()
    [exchange] = exchanges(fake)
    assert exchange.method == "POST" and exchange.status == 201
    [claims] = fake.jwt_claims
    assert claims == {"iat": clock.t - 60, "exp": clock.t + 540, "iss": str(APP_ID)}
    sent = exchange.headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(sent)["alg"] == "RS256"
    [token] = fake.installation_tokens
    for req in fake.requests:
        for name in ("Accept", "X-GitHub-Api-Version", "User-Agent"):
            assert name in req.headers, (req.path, name)
        credential = req.headers["Authorization"].removeprefix("Bearer ")
        # The JWT only ever goes to /app; the installation token everywhere else.
        assert credential == (sent if req.path.startswith("/app/") else token)
    assert len(fake.requests) == 4


async def test_app_token_refreshed_after_expiry(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    async with GitHub(target(fake), app_auth(app_key), now=clock) as gh:
        await gh.runners()
        clock.t += 3600 - 60 - 1
        await gh.runners()
        assert len(exchanges(fake)) == 1
        clock.t += 2  # within a minute of expiry: a request could arrive too late
        await gh.runners()
        assert len(exchanges(fake)) == 2
        clock.t += 3600 * 5  # long idle: GitHub would refuse the old token
        await gh.runners()
    assert len(exchanges(fake)) == 3
    assert all(r.status == 200 for r in fake.requests if "runners" in r.path)


async def test_app_token_refreshed_after_401(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    async with GitHub(target(fake), app_auth(app_key), now=clock) as gh:
        await gh.runners()
        fake.installation_tokens.clear()  # revoked (e.g. the App was reinstalled)
        await gh.jit_config("r", ["a"])
    assert len(exchanges(fake)) == 2
    assert [r.status for r in fake.requests] == [201, 200, 401, 201, 201]


async def test_app_gives_up_after_one_refresh(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    fake.token_lifetime = 0  # every token is dead on arrival
    async with GitHub(target(fake), app_auth(app_key), now=clock) as gh:
        with pytest.raises(AuthFailed) as exc:
            await gh.runner(1)
    assert exc.value.status == 401
    assert [r.status for r in fake.requests] == [201, 401, 201, 401]


async def test_app_wrong_key_or_installation(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    async with GitHub(target(fake), app_auth(other_key), now=clock) as gh:
        with pytest.raises(AuthFailed, match="JSON web token could not be decoded"):
            await gh.runners()
    wrong = AppAuth(str(APP_ID), 999, pem(app_key))
    async with GitHub(target(fake), wrong, now=clock) as gh:
        with pytest.raises(NotFound):
            await gh.runners()
    assert not fake.installation_tokens


# -- GHES and TLS -----------------------------------------------------------------------------


class Pki:
    def __init__(self, tmp: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vdc test CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = ca.public_bytes(serialization.Encoding.PEM).decode()
        self.cert = tmp / "server.crt"
        self.key = tmp / "server.key"
        self.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.key.write_text(pem(key))

    def server(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


async def test_ghes_over_tls(pki: Pki, app_key: rsa.RSAPrivateKey, clock: Clock) -> None:
    app = FakeApp(str(APP_ID), INSTALLATION, pem(app_key))
    async with FakeGitHub(
        "acme", "lab", app=app, ghes=True, ssl_context=pki.server(), now=clock
    ) as fake:
        t = Target.from_url(f"https://127.0.0.1:{fake.port}/acme/lab")
        assert t.api_url == fake.api_url == f"https://127.0.0.1:{fake.port}/api/v3"
        async with GitHub(t, app_auth(app_key), ssl=pki.client(), now=clock) as gh:
            jit = await gh.jit_config("r", ["a"])
            assert await gh.delete_runner(jit.id)
        assert [r.path for r in fake.requests] == [
            f"/api/v3/app/installations/{INSTALLATION}/access_tokens",
            "/api/v3/repos/acme/lab/actions/runners/generate-jitconfig",
            f"/api/v3/repos/acme/lab/actions/runners/{jit.id}",
        ]
        config = decode_jit(jit.encoded_jit_config)[".runner"]
        assert config["GitHubUrl"] == t.html_url
        assert config["ServerUrl"] == f"https://127.0.0.1:{fake.port}/_actions/"

        # Without the CA the certificate is refused, and retrying would not help.
        async with GitHub(t, app_auth(app_key), now=clock) as gh:
            with pytest.raises(GitHubError) as exc:
                await gh.runners()
        assert exc.value.status is None and not exc.value.transient
        assert "TLS" in str(exc.value)


async def test_ghes_paths_only_under_api_v3(clock: Clock) -> None:
    async with (
        FakeGitHub("acme", "lab", token=TOKEN, ghes=True, now=clock) as fake,
        aiohttp.ClientSession(headers=api_headers()) as http,
    ):
        async with http.get(f"{fake.base_url}/repos/acme/lab/actions/runners") as resp:
            assert resp.status == 404
        async with http.get(f"{fake.api_url}/repos/acme/lab/actions/runners") as resp:
            assert resp.status == 200


# -- the fake's own refusals ------------------------------------------------------------------


def make_jwt(key: rsa.RSAPrivateKey, iat: float, exp: float, iss: Any = str(APP_ID)) -> str:
    return jwt.encode({"iat": int(iat), "exp": int(exp), "iss": iss}, key, algorithm="RS256")


async def test_fake_jwt_rules(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    now = clock.t
    exchange = f"{fake.api_url}/app/installations/{INSTALLATION}/access_tokens"
    runners = f"{fake.api_url}/repos/acme/lab/actions/runners"
    good = make_jwt(app_key, now - 60, now + 540)
    cases = [
        ("POST", exchange, good, 201, None),
        ("GET", f"{fake.api_url}/app", good, 200, None),
        ("GET", runners, good, 401, "Bad credentials"),  # a JWT only works on /app
        ("POST", exchange, TOKEN, 401, "could not be decoded"),  # and only a JWT works there
        ("POST", exchange, make_jwt(other_key, now - 60, now + 540), 401, "could not be decoded"),
        ("POST", exchange, make_jwt(app_key, now - 60, now + 541), 401, "too far in the future"),
        ("POST", exchange, make_jwt(app_key, now, now + 601), 401, "too far in the future"),
        ("POST", exchange, make_jwt(app_key, now - 700, now - 1), 401, "future time"),
        ("POST", exchange, make_jwt(app_key, now + 120, now + 300), 401, "time in the past"),
        ("POST", exchange, make_jwt(app_key, now - 60, now + 540, "999"), 401, "Issuer"),
        ("POST", exchange, jwt.encode({"iat": int(now), "exp": int(now) + 60,
                                       "iss": str(APP_ID)}, "s" * 32, algorithm="HS256"),
         401, "could not be decoded"),
        ("POST", exchange, None, 401, "Requires authentication"),
        ("POST", f"{fake.api_url}/app/installations/1/access_tokens", good, 404, "Not Found"),
    ]  # fmt: skip
    async with aiohttp.ClientSession() as http:
        for method, url, credential, status, message in cases:
            async with http.request(method, url, headers=api_headers(credential)) as resp:
                data = await resp.json()
            assert resp.status == status, (url, credential, data)
            if message:
                assert message in data["message"]
                assert data["documentation_url"].startswith("https://docs.github.com/")
    assert len(fake.installation_tokens) == 1


async def test_fake_installation_token_expires(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    url = f"{fake.api_url}/app/installations/{INSTALLATION}/access_tokens"
    jwt_ = make_jwt(app_key, clock.t - 60, clock.t + 540)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, headers=api_headers(jwt_)) as resp:
            issued = await resp.json()
        expires = dt.datetime.fromisoformat(issued["expires_at"]).timestamp()
        assert expires == clock.t + 3600
        runners = f"{fake.api_url}/orgs/acme/actions/runners"
        async with http.get(runners, headers=api_headers(issued["token"])) as resp:
            assert resp.status == 200
        clock.t = expires
        async with http.get(runners, headers=api_headers(issued["token"])) as resp:
            assert resp.status == 401
            assert (await resp.json())["message"] == "Bad credentials"
        # A PAT is accepted as `Authorization: token X` as well as `Bearer X`.
        headers = {**api_headers(None), "Authorization": f"token {TOKEN}"}
        async with http.get(runners, headers=headers) as resp:
            assert resp.status == 200


async def test_fake_header_rules(fake: FakeGitHub) -> None:
    url = f"{fake.api_url}/repos/acme/lab/actions/runners"
    async with aiohttp.ClientSession() as http:
        headers = api_headers()
        del headers["User-Agent"]
        async with http.get(url, headers=headers, skip_auto_headers=["User-Agent"]) as resp:
            assert resp.status == 403
            assert "User-Agent" in (await resp.json())["message"]
        async with http.get(url, headers={**api_headers(), "X-GitHub-Api-Version": "2020-01-01"}):
            pass
        assert fake.requests[-1].status == 400
        # GitHub assumes the default version and JSON when told neither.
        async with http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 200
        async with http.put(url, headers=api_headers()) as resp:
            assert resp.status == 404
            assert (await resp.json())["message"] == "Not Found"


# -- the actions service: runners connect, take jobs, report --------------------------------


class Runner:
    """What a runner does with its JIT config, over the stand-in actions service."""

    def __init__(self, http: aiohttp.ClientSession, encoded: str) -> None:
        config = decode_jit(encoded)
        self.http = http
        self.url = config[".runner"]["ServerUrl"] + str(config[".runner"]["AgentId"])
        self.auth = {"Authorization": f"Bearer {config['.credentials']['Data']['token']}"}

    async def connect(self) -> int:
        async with self.http.post(f"{self.url}/connect", headers=self.auth) as resp:
            return resp.status

    async def job(self) -> dict[str, Any] | None:
        async with self.http.get(f"{self.url}/job", headers=self.auth) as resp:
            assert resp.status in (200, 204), resp.status
            return await resp.json() if resp.status == 200 else None

    async def result(self, result: str, steps: list[dict[str, Any]]) -> int:
        body = {"result": result, "steps": steps}
        async with self.http.post(f"{self.url}/result", headers=self.auth, json=body) as resp:
            return resp.status


async def test_runner_connects_once(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh, aiohttp.ClientSession() as http:
        jit = await gh.jit_config("r", ["vdc-a"])
        runner = Runner(http, jit.encoded_jit_config)
        intruder = Runner(http, jit.encoded_jit_config)
        intruder.auth = {"Authorization": "Bearer guess"}
        assert await intruder.connect() == 401
        assert await runner.connect() == 200
        assert (await gh.runner(jit.id) or {})["status"] == "online"
        assert await runner.connect() == 409  # a JIT config is single use


async def test_jobs_go_to_matching_runners(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh, aiohttp.ClientSession() as http:
        other = Runner(http, (await gh.jit_config("other", ["vdc-b"])).encoded_jit_config)
        mine_jit = await gh.jit_config("mine", ["vdc-a", "gpu"])
        mine = Runner(http, mine_jit.encoded_jit_config)
        assert await other.connect() == 200
        job_id = fake.queue_job(
            ["self-hosted", "VDC-A"],
            name="test",
            steps=[{"name": "hello", "run": "echo hi"}],
            env={"X": "1"},
        )
        unmatched = fake.queue_job(["vdc-a", "arm64"])
        # The other runner is connected first but lacks vdc-a: the job waits for ours.
        assert await other.job() is None
        assert await mine.connect() == 200
        job = await mine.job()
        assert job == {
            "id": job_id,
            "name": "test",
            "steps": [{"name": "hello", "run": "echo hi"}],
            "env": {"X": "1"},
        }
        state = await gh.runner(mine_jit.id) or {}
        assert (state["status"], state["busy"]) == ("online", True)
        steps = [{"name": "hello", "exit_code": 0, "output": "hi\n"}]
        assert await mine.result("bogus", steps) == 422
        assert await mine.result("succeeded", steps) == 200
        result = await fake.wait_result(job_id, timeout=5)
        assert (result.result, result.steps, result.runner_id) == ("succeeded", steps, mine_jit.id)
        state = await gh.runner(mine_jit.id) or {}
        assert (state["status"], state["busy"]) == ("offline", False)
        assert await mine.result("succeeded", steps) == 409  # one job per runner
        assert fake.jobs[unmatched].state == "queued"
        with pytest.raises(TimeoutError, match="queued"):
            await fake.wait_result(unmatched, timeout=0.05)


async def test_deleted_runner_gives_back_its_job(fake: FakeGitHub) -> None:
    async with GitHub(target(fake), TokenAuth(TOKEN)) as gh, aiohttp.ClientSession() as http:
        first = await gh.jit_config("first", ["vdc-a"])
        second = await gh.jit_config("second", ["vdc-a"])
        await Runner(http, first.encoded_jit_config).connect()
        job_id = fake.queue_job(["vdc-a"])
        assert fake.jobs[job_id].runner == first.id
        runner = Runner(http, second.encoded_jit_config)
        await runner.connect()
        assert await gh.delete_runner(first.id)
        assert (await runner.job() or {}).get("id") == job_id


# -- from a thread and from the command line ----------------------------------------------------


def http_json(url: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def test_fake_in_a_thread() -> None:
    with FakeGitHubThread(owner="acme", repo="lab", token=TOKEN) as gh:
        job_id = gh.queue_job(["vdc-a"], name="threaded")
        jit = http_json(
            f"{gh.api_url}/repos/acme/lab/actions/runners/generate-jitconfig",
            {"name": "r", "runner_group_id": 1, "labels": ["vdc-a"]},
            api_headers(),
        )
        config = decode_jit(jit["encoded_jit_config"])
        url = config[".runner"]["ServerUrl"] + str(jit["runner"]["id"])
        auth = {"Authorization": f"Bearer {config['.credentials']['Data']['token']}"}
        http_json(f"{url}/connect", {}, auth)
        assert http_json(f"{url}/job", headers=auth)["name"] == "threaded"
        steps = [{"name": "run", "exit_code": 1, "output": ""}]
        http_json(f"{url}/result", {"result": "failed", "steps": steps}, auth)
        assert gh.wait_result(job_id, timeout=5).result == "failed"
        fake = gh.fake
        assert fake is not None
        assert gh.call(lambda: fake.runners[jit["runner"]["id"]].finished)
        assert http_json(f"{gh.url}/_fake/jobs/{job_id}")["state"] == "completed"


def test_command_line(tmp_path: Path, app_key: rsa.RSAPrivateKey) -> None:
    key = tmp_path / "app.pem"
    key.write_bytes(
        app_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.github.fake_github", "--port", "0", "--owner", "acme",
         "--token", TOKEN, "--app-id", str(APP_ID), "--public-key", str(key), "--ghes"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        api = re.search(r"API (\S+),", line)
        assert api, line
        assert api.group(1).endswith("/api/v3")
        data = http_json(f"{api.group(1)}/orgs/acme/actions/runners", headers=api_headers())
        assert data == {"total_count": 0, "runners": []}
        base = api.group(1).removesuffix("/api/v3")
        job = http_json(f"{base}/_fake/jobs", {"labels": ["x"]})
        assert http_json(f"{base}/_fake/jobs/{job['id']}")["state"] == "queued"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


async def test_concurrent_requests_share_one_token(
    fake: FakeGitHub, app_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    async with GitHub(target(fake), app_auth(app_key), now=clock) as gh:
        await asyncio.gather(*(gh.runner(i) for i in range(10)))
    assert len(exchanges(fake)) == 1
