"""The operator's requests as the API server receives them: paths, methods, content types,
credentials and bodies, and the answers' statuses as the callers see them, against an HTTP
server on loopback that answers as the API server does."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web
from kubernetes import client
from kubernetes.client import ApiException

from tests.e2e.cluster.pki import Pki
from tests.loopback import serving
from vdc_operator.kube import Api

TOKEN = "Bearer s3cret"


class ApiServer:
    """Objects by path; POST to a collection creates (409 if there), GET reads (404 if
    not), DELETE removes (404 if not), PATCH of a status merges (409 on a stale version);
    every request is recorded as (method, path with query, content type, body)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, str | None, Any]] = []
        self.fail_with: int | None = None

    async def handle(self, request: web.Request) -> web.Response:
        text = await request.text()
        body = json.loads(text) if text else None
        self.requests.append((request.method, request.path_qs, request.content_type, body))
        if request.headers.get("Authorization") != TOKEN:
            return _status(401, "Unauthorized")
        if self.fail_with is not None:
            return _status(self.fail_with, "InternalError")
        path = request.path
        if request.method == "POST":
            path = f"{path}/{body['metadata']['name']}"
            if path in self.objects:
                return _status(409, "AlreadyExists")
            self.objects[path] = {**body, "metadata": {**body["metadata"], "uid": "u-1"}}
            return web.json_response(self.objects[path], status=201)
        if request.method == "GET" and "labelSelector" in request.query:
            items = [o for p, o in self.objects.items() if p.startswith(path + "/")]
            return web.json_response({"kind": "PodList", "items": items})
        if request.method == "PATCH" and path.endswith("/status"):
            found = self.objects.get(path.removesuffix("/status"))
            if found is None:
                return _status(404, "NotFound")
            if body["metadata"].get("resourceVersion") != found["metadata"]["resourceVersion"]:
                return _status(409, "Conflict")
            found["status"] = {**found.get("status", {}), **body["status"]}
            return web.json_response(found)
        found = self.objects.get(path)
        if found is None:
            return _status(404, "NotFound")
        if request.method == "DELETE":
            del self.objects[path]
            return web.json_response({"kind": "Status", "status": "Success"})
        if request.method == "PATCH":
            found["metadata"]["annotations"] = body["metadata"]["annotations"]
            found["data"] = body["data"]
        return web.json_response(found)


def _status(code: int, reason: str) -> web.Response:
    return web.json_response({"kind": "Status", "code": code, "reason": reason}, status=code)


def _app(server: ApiServer) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Api, ApiServer]]:
    server = ApiServer()
    async with serving(_app(server)) as url:
        configuration = client.Configuration(host=url)
        configuration.api_key = {"authorization": TOKEN}
        api = Api(gather=0, configuration=configuration)
        try:
            yield api, server
        finally:
            await api.close()


def _manifest(kind: str, name: str) -> dict[str, Any]:
    api_version = "rbac.authorization.k8s.io/v1" if kind.startswith("Role") else "v1"
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name, "namespace": "lab-ns"},
    }


@pytest.mark.parametrize(
    ("kind", "collection"),
    [
        ("Pod", "/api/v1/namespaces/lab-ns/pods"),
        ("ServiceAccount", "/api/v1/namespaces/lab-ns/serviceaccounts"),
        ("Secret", "/api/v1/namespaces/lab-ns/secrets"),
        ("Role", "/apis/rbac.authorization.k8s.io/v1/namespaces/lab-ns/roles"),
        ("RoleBinding", "/apis/rbac.authorization.k8s.io/v1/namespaces/lab-ns/rolebindings"),
    ],
)
async def test_made_then_found_made_then_deleted_then_found_gone(
    served: tuple[Api, ApiServer], kind: str, collection: str
) -> None:
    api, server = served
    manifest = _manifest(kind, "vdc-lab")
    assert await api.ensure(manifest)
    assert not await api.ensure(manifest)  # 409: made by an earlier attempt
    assert server.requests[0] == ("POST", collection, "application/json", manifest)
    assert await api.delete(kind, "lab-ns", "vdc-lab")
    assert not await api.delete(kind, "lab-ns", "vdc-lab")  # 404: gone already
    assert server.requests[-1][:2] == ("DELETE", f"{collection}/vdc-lab")
    assert server.requests[-1][3] is None


async def test_reads_answer_plain_objects_and_none_for_what_is_not_there(
    served: tuple[Api, ApiServer],
) -> None:
    api, server = served
    assert await api.get_vdc("lab-ns", "lab") is None
    assert server.requests[-1][:2] == (
        "GET",
        "/apis/vdc.dev/v1alpha1/namespaces/lab-ns/virtualdatacenters/lab",
    )
    assert await api.get_pod("lab-ns", "vdc-lab") is None
    assert not await api.claim_exists("lab-ns", "disks")
    assert server.requests[-1][1] == "/api/v1/namespaces/lab-ns/persistentvolumeclaims/disks"

    pod = {**_manifest("Pod", "vdc-lab"), "spec": {"containers": [{"name": "agent"}]}}
    await api.ensure(pod)
    got = await api.get_pod("lab-ns", "vdc-lab")
    assert got is not None and got["spec"] == pod["spec"]  # as sent: camelCase, no model
    listed = await api.list_pods("lab-ns", "vdc.dev/name=lab,vdc.dev/group in (a,b)")
    assert [p["metadata"]["name"] for p in listed] == ["vdc-lab"]
    query = parse_qs(server.requests[-1][1].partition("?")[2])
    assert query == {"labelSelector": ["vdc.dev/name=lab,vdc.dev/group in (a,b)"]}


async def test_secrets_and_config_maps_keys(served: tuple[Api, ApiServer]) -> None:
    api, server = served
    assert await api.missing_keys("lab-ns", "secret", "bmc", {"password"}) == (
        "Secret bmc does not exist"
    )
    secret = {**_manifest("Secret", "bmc"), "data": {"password": base64.b64encode(b"pw").decode()}}
    await api.ensure(secret)
    assert await api.missing_keys("lab-ns", "secret", "bmc", {"password"}) is None
    assert await api.missing_keys("lab-ns", "secret", "bmc", {"user", "password"}) == (
        "Secret bmc has no key user"
    )
    assert await api.secret_data("lab-ns", "bmc") == {"password": b"pw"}
    assert await api.secret_data("lab-ns", "other") is None

    server.objects["/api/v1/namespaces/lab-ns/configmaps/files"] = {
        "data": {"a.txt": "a"},
        "binaryData": {"b.bin": "Yg=="},
    }
    assert await api.missing_keys("lab-ns", "configMap", "files", {"a.txt", "b.bin"}) is None
    assert await api.missing_keys("lab-ns", "configMap", "files", {"c"}) == (
        "ConfigMap files has no key c"
    )

    secret["metadata"]["annotations"] = {"vdc.dev/runners": "2"}
    secret["data"] = {"jit": "eA=="}
    patched = await api.patch_secret(secret)
    assert patched["data"] == {"jit": "eA=="}
    method, path, content_type, body = server.requests[-1]
    assert (method, path, content_type) == (
        "PATCH",
        "/api/v1/namespaces/lab-ns/secrets/bmc",
        "application/merge-patch+json",
    )
    assert body == {"metadata": {"annotations": {"vdc.dev/runners": "2"}}, "data": {"jit": "eA=="}}


async def test_a_status_write_is_a_merge_patch_of_the_version_it_was_computed_from(
    served: tuple[Api, ApiServer],
) -> None:
    api, server = served
    path = "/apis/vdc.dev/v1alpha1/namespaces/lab-ns/virtualdatacenters/lab"
    server.objects[path] = {
        "metadata": {"name": "lab", "namespace": "lab-ns", "resourceVersion": "7"},
        "status": {"phase": "Pending"},
    }
    assert await api.update_vdc_status("lab-ns", "lab", lambda vdc: {"phase": "Running"})
    method, sent, content_type, body = server.requests[-1]
    assert (method, sent, content_type) == (
        "PATCH",
        path + "/status",
        "application/merge-patch+json",
    )
    assert body == {"metadata": {"resourceVersion": "7"}, "status": {"phase": "Running"}}
    with pytest.raises(ApiException) as refused:
        await api._patch_status(
            "lab-ns", "lab", {"metadata": {"resourceVersion": "6"}, "status": {}}
        )
    assert refused.value.status == 409
    assert not await api.update_vdc_status("lab-ns", "gone", lambda vdc: {"phase": "Running"})


async def test_errors_carry_their_status_and_the_servers_reason(
    served: tuple[Api, ApiServer],
) -> None:
    api, server = served
    server.fail_with = 500
    with pytest.raises(ApiException) as failed:
        await api.ensure(_manifest("Pod", "vdc-lab"))
    assert failed.value.status == 500
    assert "InternalError" in str(failed.value)
    with pytest.raises(ApiException) as read:
        await api.get_vdc("lab-ns", "lab")  # not a 404: raised, not None
    assert read.value.status == 500
    server.fail_with = None
    api.configuration.api_key = {"authorization": "Bearer wrong"}
    api.credentials_kept = 0  # asked of the configuration again at once
    with pytest.raises(ApiException) as unauthorized:
        await api.get_vdc("lab-ns", "lab")
    assert unauthorized.value.status == 401


async def test_credentials_are_asked_again_once_kept_long_enough(
    served: tuple[Api, ApiServer],
) -> None:
    """A token the configuration refreshes (as the in-cluster loader's hook does) is
    taken within `credentials_kept`, and not asked for on every request before that."""
    api, _ = served
    asked: list[float] = []
    token = {"value": TOKEN}

    def refresh(configuration: client.Configuration) -> None:
        asked.append(time.monotonic())
        configuration.api_key = {"authorization": token["value"]}

    api.configuration.refresh_api_key_hook = refresh
    api.credentials_kept = 0.3
    await api.get_vdc("lab-ns", "lab")
    await api.get_vdc("lab-ns", "lab")
    assert len(asked) == 1
    token["value"] = "Bearer rotated"
    await asyncio.sleep(0.35)
    with pytest.raises(ApiException) as refused:
        await api.get_vdc("lab-ns", "lab")  # the server knows only TOKEN
    assert refused.value.status == 401
    assert len(asked) == 2


async def test_tls_as_a_kubeconfig_sets_it_up(tmp_path: Path) -> None:
    """The API server's certificate checked against the configuration's CA, and the
    client's certificate shown to it (a kubeconfig's mutual TLS, as the e2e cluster's)."""
    pki, other = Pki(tmp_path / "pki"), Pki(tmp_path / "other")
    for each in (pki, other):
        each.ensure("node", "127.0.0.1", "10.0.0.1")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca_cert)
    tls.load_cert_chain(pki.path("apiserver.crt"), pki.path("apiserver.key"))
    tls.verify_mode = ssl.CERT_REQUIRED
    mutual = {"ssl_ca_cert": str(pki.ca_cert), "cert_file": str(pki.path("admin.crt")),
              "key_file": str(pki.path("admin.key"))}  # fmt: skip

    async def get_vdc(url: str, **settings: Any) -> Any:
        configuration = client.Configuration(host=url)
        configuration.api_key = {"authorization": TOKEN}
        for key, value in settings.items():
            setattr(configuration, key, value)
        api = Api(gather=0, configuration=configuration)
        try:
            return await api.get_vdc("lab-ns", "lab")
        finally:
            await api.close()

    async with serving(_app(ApiServer()), tls) as url:
        assert await get_vdc(url, **mutual) is None  # a 404: TLS both ways worked
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # another CA's server
            await get_vdc(url, **{**mutual, "ssl_ca_cert": str(other.ca_cert)})
        with pytest.raises(aiohttp.ClientError):  # no client certificate: refused
            await get_vdc(url, ssl_ca_cert=str(pki.ca_cert))
