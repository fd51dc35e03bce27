"""The agent's few calls to the Kubernetes API: read and watch its VDC, patch its status,
post events; list and watch its VDC's snapshots and patch their status.

REST calls with the standard library, each in a thread, instead of the `kubernetes`
client: that client builds hundreds of pydantic models when its API classes are imported,
all between the pod starting and its first QEMU; aiohttp, too, is kept off that path,
which every VDC starting on a node pays for (bench/operator.py measures it). The watch,
which starts once the machines run, is aiohttp's: a stream a thread would hold open past
the agent's exit. The agent's Role allows exactly these calls (see
vdc_operator.builders.build_role).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vdc_runtime.resource import spec as cr

if TYPE_CHECKING:
    from vdc_runtime.agent.status import Event

log = logging.getLogger("vdc.agent")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TIMEOUT = 15.0
WATCH_SECONDS = 300
"""How long the API server keeps one watch open (the agent then watches again)."""
GRANT_PATIENCE, GRANT_RETRY = 30.0, 0.5
"""How long, and how often, the first read of the VDC is asked again after a 403."""


class Conflict(Exception):
    """The VDC changed since the resourceVersion a write was based on."""


class Gone(Exception):
    """The VDC no longer exists."""


class KubeError(Exception):
    pass


class Expired(KubeError):
    """A watch's resourceVersion is too old (410 Gone): list again."""


class Forbidden(KubeError):
    """403: the pod's ServiceAccount may not (yet) do this."""


class Kube:
    def __init__(
        self,
        namespace: str,
        name: str,
        pod: str | None = None,
        *,
        server: str,
        ssl_context: ssl.SSLContext,
        token_file: Path | None = None,
        token: str | None = None,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.pod = pod
        self.server = server.rstrip("/")
        self._ssl = ssl_context
        self._token_file = token_file
        self._token = token

    @classmethod
    def from_environment(cls, namespace: str, name: str, pod: str | None = None) -> Kube:
        """In a pod, its ServiceAccount; elsewhere (by hand, in tests) the kubeconfig."""
        host = os.environ.get("KUBERNETES_SERVICE_HOST")
        if host:
            port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
            server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
            context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT / "ca.crt"))
            # The kubelet rotates the token file: it is read again for every request.
            return cls(namespace, name, pod, server=server, ssl_context=context,
                       token_file=SERVICE_ACCOUNT / "token")  # fmt: skip
        from kubernetes import client, config  # only the kubeconfig loader, outside pods

        configuration = client.Configuration()
        config.load_kube_config(client_configuration=configuration)
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        bearer = (configuration.api_key or {}).get("authorization", "")
        return cls(namespace, name, pod, server=configuration.host, ssl_context=context,
                   token=bearer.removeprefix("Bearer ") or None)  # fmt: skip

    def _headers(self) -> dict[str, str]:
        token = self._token
        if self._token_file is not None:
            token = self._token_file.read_text().strip()
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def _call(self, method: str, path: str, what: str, body: Any = None,
                    content_type: str = "application/json",
                    gone: str | None = None) -> dict[str, Any]:  # fmt: skip
        headers = self._headers() | {"Accept": "application/json"}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.server + path, data=data, headers=headers, method=method
        )

        def call() -> tuple[int, bytes]:
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT, context=self._ssl) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        try:
            status, text = await asyncio.to_thread(call)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise KubeError(f"{what}: {getattr(exc, 'reason', None) or exc}") from None
        if status < 300:
            return json.loads(text) if text else {}
        if status == 409:
            raise Conflict(what)
        if status == 404:
            raise Gone(f"{what}: {gone or f'VirtualDataCenter {self.namespace}/{self.name}'}"
                       " is gone")  # fmt: skip
        try:
            message = json.loads(text).get("message", text.decode(errors="replace"))
        except ValueError:
            message = text.decode(errors="replace")
        error = Forbidden if status == 403 else KubeError
        raise error(f"{what}: {status} {message}".strip())

    @property
    def _vdc_path(self) -> str:
        return (f"/apis/{cr.GROUP}/{cr.VERSION}/namespaces/{self.namespace}/{cr.PLURAL}/"
                f"{self.name}")  # fmt: skip

    async def get(self) -> dict[str, Any]:
        return await self._call("GET", self._vdc_path, "reading the VDC")

    async def first_get(self, patience: float = GRANT_PATIENCE) -> dict[str, Any]:
        """The VDC, read at start-up: a 403 is asked again for `patience` seconds. The
        operator makes the pod's RoleBinding beside the pod, and the API server's
        authorizer learns of a new binding from its own watch, a moment later."""
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            try:
                return await self.get()
            except Forbidden as exc:
                if asyncio.get_running_loop().time() >= deadline:
                    raise
                log.info("%s; asking again", exc)
                await asyncio.sleep(GRANT_RETRY)

    async def patch_status(
        self, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """A merge patch of the status; with `resource_version`, only on top of that
        version (Conflict otherwise)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        return await self._call("PATCH", self._vdc_path + "/status", "writing the status",
                                body, "application/merge-patch+json")  # fmt: skip

    # -- its snapshots ------------------------------------------------------------------------

    def _snapshots_path(self, name: str | None = None) -> str:
        from vdc_runtime.resource import snapshots

        path = f"/apis/{cr.GROUP}/{cr.VERSION}/namespaces/{self.namespace}/{snapshots.PLURAL}"
        return path if name is None else f"{path}/{name}"

    def _snapshots_query(self, **extra: str) -> str:
        from urllib.parse import urlencode

        from vdc_runtime.resource.snapshots import LABEL_SOURCE

        return urlencode({"labelSelector": f"{LABEL_SOURCE}={self.name}", **extra})

    async def list_snapshots(self) -> dict[str, Any]:
        """The VirtualDataCenterSnapshots of this VDC (labelled with it by the operator)."""
        path = f"{self._snapshots_path()}?{self._snapshots_query()}"
        return await self._call("GET", path, "listing snapshots")

    async def watch_snapshots(self, version: str) -> AsyncIterator[dict[str, Any]]:
        """Their changes after `version`, as watch events, until the server ends the watch;
        Expired when `version` is too old."""
        async for event in self._watch(self._snapshots_path(), self._snapshots_query(
            watch="1", resourceVersion=version, allowWatchBookmarks="true",
            timeoutSeconds=str(WATCH_SECONDS),
        ), "watching snapshots"):  # fmt: skip
            yield event

    async def watch(self, version: str) -> AsyncIterator[dict[str, Any]]:
        """The VDC's changes after `version` (its spec's, its status's), as watch events."""
        from urllib.parse import urlencode

        collection = self._vdc_path.rsplit("/", 1)[0]
        query = urlencode({
            "fieldSelector": f"metadata.name={self.name}", "watch": "1",
            "resourceVersion": version, "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        })  # fmt: skip
        async for event in self._watch(collection, query, "watching the VDC"):
            yield event

    async def _watch(self, path: str, query: str, what: str) -> AsyncIterator[dict[str, Any]]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(sock_connect=TIMEOUT, sock_read=WATCH_SECONDS + 30)
        headers = self._headers() | {"Accept": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(f"{self.server}{path}?{query}", headers=headers, ssl=self._ssl) as r,
            ):
                if r.status == 410:
                    raise Expired(f"{what}: too old a version")
                if r.status >= 300:
                    raise KubeError(f"{what}: {r.status} {(await r.text())[:300]}")
                async for line in r.content:
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    if event.get("type") == "ERROR":
                        if (event.get("object") or {}).get("code") == 410:
                            raise Expired(f"{what}: too old a version")
                        raise KubeError(f"{what}: {event.get('object')}")
                    yield event
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise KubeError(f"{what}: {exc}") from None

    async def patch_snapshot_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """A merge patch of a snapshot's status (the agent writes its own part's key)."""
        path = self._snapshots_path(name) + "/status"
        gone = f"VirtualDataCenterSnapshot {self.namespace}/{name}"
        body = {"status": status}
        merge = "application/merge-patch+json"
        return await self._call("PATCH", path, f"writing {name}'s status", body, merge, gone)

    async def post_event(self, vdc: dict[str, Any], event: Event) -> None:
        from vdc_runtime.resource.status import timestamp

        meta = vdc["metadata"]
        now = timestamp()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace},
            "involvedObject": {
                # The VDC, or one of its snapshots.
                "apiVersion": vdc.get("apiVersion", cr.API_VERSION),
                "kind": vdc.get("kind", cr.KIND),
                "name": meta["name"],
                "namespace": self.namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": event.reason,
            "message": event.message,
            "type": event.type,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": "vdc-agent", **({"host": self.pod} if self.pod else {})},
            "reportingComponent": "vdc.dev/agent",
            "reportingInstance": self.pod or "vdc-agent",
        }
        path = f"/api/v1/namespaces/{self.namespace}/events"
        await self._call("POST", path, f"posting event {event.reason}", body)


RETRY = 5.0
"""Seconds before reading again after the API server failed."""


async def keep_watching(
    read: Callable[[], Awaitable[str]],
    watch: Callable[[str], AsyncIterator[dict[str, Any]]],
    handle: Callable[[str, dict[str, Any]], Awaitable[None]],
    what: str,
) -> None:
    """`read` the objects as they are (it returns the version it read), then hand every
    change `watch` brings after that version to `handle(type, object)`, for as long as the
    caller runs: read again when the version is too old or the API server fails."""
    while True:
        try:
            version = await read()
            while True:
                async for event in watch(version):
                    obj = event.get("object") or {}
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    if event["type"] != "BOOKMARK":
                        await handle(event["type"], obj)
        except Expired:
            continue
        except (KubeError, Gone, KeyError) as exc:
            log.warning("%s: %s; reading again in %.0f s", what, exc, RETRY)
        await asyncio.sleep(RETRY)
