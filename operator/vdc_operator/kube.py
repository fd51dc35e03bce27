"""The operator's calls to the Kubernetes API: plain JSON over aiohttp, with the credentials
of the `kubernetes` client's configuration (see `Api._request`).

Creation is idempotent: names come from the VDC's name, so an object that already exists
was made by an earlier attempt of ours.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import json
import ssl
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from kubernetes import client
from kubernetes.client import ApiException

from vdc_runtime.resource import snapshots
from vdc_runtime.resource import spec as cr

Manifest = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
_KINDS = {
    "ServiceAccount": "/api/v1",
    "Pod": "/api/v1",
    "Secret": "/api/v1",
    "Role": "/apis/rbac.authorization.k8s.io/v1",
    "RoleBinding": "/apis/rbac.authorization.k8s.io/v1",
    "Event": "/api/v1",
}
"""The kinds the operator makes and deletes, by the API path of their group and version."""


def _plural(kind: str) -> str:
    return kind.lower() + "s"


def _core_path(namespace: str, plural: str, name: str | None = None) -> str:
    path = f"/api/v1/namespaces/{namespace}/{plural}"
    return path if name is None else f"{path}/{name}"


def _custom_path(namespace: str, plural: str, name: str) -> str:
    return f"/apis/{cr.GROUP}/{cr.VERSION}/namespaces/{namespace}/{plural}/{name}"


def _kind_path(kind: str, namespace: str, name: str | None = None) -> str:
    path = f"{_KINDS[kind]}/namespaces/{namespace}/{_plural(kind)}"
    return path if name is None else f"{path}/{name}"


STATUS_ATTEMPTS = 5
STATUS_GATHER = 0.2
"""Seconds a VDC's status change waits for others to go in the same write. A new VDC's
pods are reported unschedulable (or scheduled) within a moment of their creation, one
event each, right after the write that announced them: three writes, each waking every
watcher of the VDC, where one says it all."""
API_CONNECTIONS = 48
"""Requests in flight at once. A VDC makes six before its pods exist, and a burst of new
VDCs would otherwise wait on the API server's latency, not on the operator's CPU
(bench/operator.py --mode scale)."""
API_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
"""No request of the operator's takes long: one that does is retried by its handler."""
CREDENTIALS_KEPT = 10.0
"""Seconds the API server's URL and the credentials' headers are used before the
configuration is asked again (`Api._target`)."""


class StatusConflict(RuntimeError):
    """Other writers kept changing the status; kopf retries the handler."""


class Api:
    """Made when the operator starts; its connections on first use, because the `kubernetes`
    client's default configuration (host, credentials) is only set once kopf has logged
    in, which happens after the start-up handlers."""

    def __init__(
        self,
        gather: float = STATUS_GATHER,
        configuration: client.Configuration | None = None,
        credentials_kept: float = CREDENTIALS_KEPT,
    ) -> None:
        self.gather = gather
        self.credentials_kept = credentials_kept
        self._configuration = configuration
        self._target_cache: tuple[str, dict[str, str]] | None = None
        self._target_asked = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[tuple[str, str], _Waiting] = {}
        """Per VDC, the changes its next status write will carry."""
        self._writes: dict[tuple[str, str], asyncio.Task[None]] = {}
        """Per VDC, its latest status write (each waits for the one before it)."""
        self._written: dict[tuple[str, str], tuple[str, Manifest]] = {}
        """Per VDC, the version this operator's last status write applied to and the
        object that write returned."""

    @functools.cached_property
    def configuration(self) -> client.Configuration:
        return self._configuration or client.Configuration.get_default_copy()

    @functools.cached_property
    def _tls(self) -> ssl.SSLContext | bool:
        """The TLS the configuration asks for, as the `kubernetes` client sets it up."""
        config = self.configuration
        if not config.host.startswith("https:"):
            return False
        context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif config.assert_hostname is False:
            context.check_hostname = False
        return context

    def _connections(self) -> aiohttp.ClientSession:
        # One session per event loop (a test may run several loops in turn).
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=API_CONNECTIONS, ssl=self._tls),
                timeout=API_TIMEOUT,
            )
            self._session_loop = loop
        return self._session

    def _target(self) -> tuple[str, dict[str, str]]:
        """The API server's URL and the headers of the credentials, asked of the
        configuration at most every `credentials_kept` seconds. Asking is not free: the
        in-cluster loader's refresh hook sets the whole configuration again on every call,
        and the host is computed anew each time (both showed in profiles of a burst of new
        VDCs). A rotated token is still taken within that time; the loader
        itself rereads its file only every minute."""
        now = time.monotonic()
        if self._target_cache is None or now - self._target_asked >= self.credentials_kept:
            config = self.configuration
            headers = {"Accept": "application/json"}
            for auth in config.auth_settings().values():
                if auth["in"] == "header" and auth["value"]:
                    headers[auth["key"]] = auth["value"]
            self._target_cache = (config.host, headers)
            self._target_asked = now
        return self._target_cache

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        none_on: int | None = None,
    ) -> Any:
        """One request, its JSON answer decoded; None if the API server answers `none_on`
        (404: not there, 409: there already), ApiException (with the status) if refused.

        Written here rather than through the client's generated methods: those block a
        thread per call, validate every argument with pydantic and build typed models of
        every answer, read as plain dicts here anyway. In a burst of new VDCs that was a
        sixth of the operator's CPU (py-spy), and its threads took the GIL from the event
        loop. The configuration still gives the host, the TLS and the credentials (a
        refreshed token included)."""
        headers, data = {}, None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with self._send(method, path, params, data=data, headers=headers) as response:
            answer = await response.read()
            if response.status == none_on:
                return None
            if not 200 <= response.status <= 299:
                raise ApiException(
                    status=response.status,
                    reason=response.reason,
                    body=answer.decode("utf-8", "replace"),
                )
        return json.loads(answer) if answer else None

    async def read(self, path: str, params: dict[str, str] | None = None) -> Manifest:
        """A GET of `path` (a list, say), its answer decoded."""
        return await self._request("GET", path, params=params)  # type: ignore[no-any-return]

    @contextlib.asynccontextmanager
    async def stream(
        self, path: str, params: dict[str, str], read_timeout: float
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A long GET (a watch), its response to read as it comes: the caller checks the
        status. `read_timeout`: seconds of silence after which reading fails."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        async with self._send("GET", path, params, limits=timeout) as response:
            yield response

    @contextlib.asynccontextmanager
    async def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        *,
        data: str | None = None,
        headers: dict[str, str] | None = None,
        limits: aiohttp.ClientTimeout = API_TIMEOUT,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A request with the configuration's host, TLS, proxy and credentials."""
        config = self.configuration
        host, credentials = self._target()
        async with self._connections().request(
            method,
            host + path,
            params=params,
            data=data,
            headers={**credentials, **(headers or {})},
            timeout=limits,
            proxy=config.proxy or None,
            server_hostname=config.tls_server_name or None,
        ) as response:
            yield response

    async def _get(self, path: str) -> Manifest | None:
        """The object at `path`, or None if there is none."""
        return await self._request("GET", path, none_on=404)  # type: ignore[no-any-return]

    # -- reads ------------------------------------------------------------------------------

    async def get_vdc(self, namespace: str, name: str) -> Manifest | None:
        return await self._get(_custom_path(namespace, cr.PLURAL, name))

    async def get_snapshot(self, namespace: str, name: str) -> Manifest | None:
        return await self._get(_custom_path(namespace, snapshots.PLURAL, name))

    async def claim_exists(self, namespace: str, name: str) -> bool:
        return await self._get(_core_path(namespace, "persistentvolumeclaims", name)) is not None

    async def patch_snapshot_status(
        self, namespace: str, name: str, status: Manifest
    ) -> Manifest | None:
        """A merge patch of a snapshot's status; None if it is gone."""
        path = _custom_path(namespace, snapshots.PLURAL, name) + "/status"
        return await self._request("PATCH", path, {"status": status}, MERGE_PATCH, none_on=404)  # type: ignore[no-any-return]

    async def get_pod(self, namespace: str, name: str) -> Manifest | None:
        return await self._get(_core_path(namespace, "pods", name))

    async def list_pods(self, namespace: str, selector: str) -> list[Manifest]:
        found = await self._request(
            "GET", _core_path(namespace, "pods"), params={"labelSelector": selector}
        )
        return list(found.get("items") or [])

    async def get_secret(self, namespace: str, name: str) -> Manifest | None:
        return await self._get(_core_path(namespace, "secrets", name))

    async def secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        """A Secret's keys, decoded; None if it does not exist."""
        secret = await self.get_secret(namespace, name)
        if secret is None:
            return None
        return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}

    async def patch_secret(self, secret: Manifest) -> Manifest:
        """Write a Secret's data and annotations (a merge patch of those only)."""
        meta = secret["metadata"]
        body = {
            "metadata": {"annotations": meta.get("annotations") or {}},
            "data": secret.get("data") or {},
        }
        path = _core_path(meta["namespace"], "secrets", meta["name"])
        return await self._request("PATCH", path, body, MERGE_PATCH)  # type: ignore[no-any-return]

    async def missing_keys(
        self, namespace: str, kind: str, name: str, keys: set[str]
    ) -> str | None:
        """Why a ConfigMap's or Secret's keys cannot be mounted, or None if they can."""
        config_map = kind == "configMap"
        label = "ConfigMap" if config_map else "Secret"
        obj = await self._get(
            _core_path(namespace, "configmaps" if config_map else "secrets", name)
        )
        if obj is None:
            return f"{label} {name} does not exist"
        present = set((obj.get("data") or {}).keys())
        if config_map:
            present |= set((obj.get("binaryData") or {}).keys())
        absent = sorted(keys - present)
        if absent:
            return f"{label} {name} has no key {', '.join(absent)}"
        return None

    # -- writes -----------------------------------------------------------------------------

    async def ensure(self, manifest: Manifest) -> bool:
        """Create the object unless it exists; True if this call created it."""
        path = _kind_path(manifest["kind"], manifest["metadata"]["namespace"])
        return await self._request("POST", path, manifest, none_on=409) is not None

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete the object; False if it was already gone."""
        path = _kind_path(kind, namespace, name)
        return await self._request("DELETE", path, none_on=404) is not None

    async def delete_vdc(self, namespace: str, name: str) -> None:
        await self._request("DELETE", _custom_path(namespace, cr.PLURAL, name), none_on=404)

    async def update_vdc_status(
        self,
        namespace: str,
        name: str,
        compute: Callable[[Manifest], Manifest | None],
        read: Manifest | None = None,
    ) -> bool:
        """Write the status `compute` makes from the VDC as it is now, on top of exactly that
        version; False when there was nothing to write (or no VDC).

        The agent and the operator's handlers all write `status.conditions`, and a merge
        patch replaces the whole list: written from an older read, one writer's list would
        silently undo another's condition (a RunnersRegistered that stayed False after the
        runners were registered). So every write names the version it was computed from,
        and a conflict means: read again, compute again. `read` is the VDC as the caller has
        just read it (or as its watch event showed it): the first attempt computes from it
        instead of reading once more.

        One write at a time per VDC, and the changes that arrive within `gather` seconds,
        or while a write is under way, go together as one write: each computed from the
        VDC as the ones before it in that write leave it. A VDC's events come in bunches
        (its pods', its groups'), and under load each write would otherwise wait for the
        one before it anyway.
        """
        key = (namespace, name)
        waiting = self._waiting.get(key)
        if waiting is None:
            waiting = self._waiting[key] = _Waiting([], None, asyncio.Future())
            waiting.done.add_done_callback(_retrieved)
            # A task of its own: a caller cancelled does not cancel the others' write.
            task = asyncio.create_task(self._write_after(key, waiting, self._writes.get(key)))
            self._writes[key] = task
        index = len(waiting.computes)
        waiting.computes.append(compute)
        if read is not None and (waiting.read is None or _later(read, waiting.read)):
            waiting.read = read  # the newest copy its callers have is the one to compute from
        return (await asyncio.shield(waiting.done))[index]

    async def _write_after(
        self, key: tuple[str, str], waiting: _Waiting, previous: asyncio.Task[None] | None
    ) -> None:
        try:
            if self.gather:
                await asyncio.sleep(self.gather)
            if previous is not None:
                await asyncio.wait([previous])  # its outcome is its own callers'
            del self._waiting[key]  # what comes now waits for the next write
            try:
                written = await self._write_status(key, waiting.computes, waiting.read)
            except asyncio.CancelledError:
                waiting.done.cancel()  # the operator stops
                raise
            except Exception as exc:
                waiting.done.set_exception(exc)
            else:
                waiting.done.set_result(written)
        finally:
            if self._writes.get(key) is asyncio.current_task():
                del self._writes[key]

    async def _write_status(
        self,
        key: tuple[str, str],
        computes: list[Callable[[Manifest], Manifest | None]],
        read: Manifest | None,
    ) -> list[bool]:
        """`computes`, in order, as few writes as their patches compose into; for each,
        whether its change was written."""
        namespace, name = key
        result: list[bool] = []
        while len(result) < len(computes):
            for _ in range(STATUS_ATTEMPTS):
                vdc, read = read or await self.get_vdc(namespace, name), None
                if vdc is None:
                    self._written.pop(key, None)
                    return result + [False] * (len(computes) - len(result))
                vdc = self._newest(key, vdc)
                status, changed = combined(vdc, computes[len(result) :])
                if not status:
                    return result + changed
                version = vdc["metadata"]["resourceVersion"]
                body = {"metadata": {"resourceVersion": version}, "status": status}
                try:
                    written = await self._patch_status(namespace, name, body)
                except ApiException as exc:
                    if exc.status == 404:
                        self._written.pop(key, None)
                        return result + [False] * (len(computes) - len(result))
                    if exc.status != 409:
                        raise
                    continue
                if isinstance(written, dict):
                    self._written[key] = (version, written)
                    read = written
                result += changed
                break
            else:
                raise StatusConflict(
                    f"the status of {namespace}/{name} kept changing under {STATUS_ATTEMPTS} writes"
                )
        return result

    async def _patch_status(self, namespace: str, name: str, body: Manifest) -> Any:
        path = _custom_path(namespace, cr.PLURAL, name) + "/status"
        return await self._request("PATCH", path, body, MERGE_PATCH)

    def _newest(self, key: tuple[str, str], vdc: Manifest) -> Manifest:
        """`vdc`, or what this operator's last write made of it when that is newer: the
        copy a watch showed may predate several writes of this operator in a row (a VDC's
        pods' events come together), and a write computed from it would meet a conflict
        and a read.

        Resource versions are opaque by contract; the API server's are etcd's revisions,
        which grow. Comparing them only chooses the copy to compute from: the write names
        its version, so a wrong choice costs a conflict, never another writer's update."""
        written = self._written.get(key)
        if written is None:
            return vdc
        base, after = written
        if base == vdc["metadata"].get("resourceVersion") or _later(after, vdc):
            return after
        return vdc

    def forget(self, namespace: str, name: str) -> None:
        """A VDC is gone: its last write need not be kept."""
        self._written.pop((namespace, name), None)


@dataclasses.dataclass
class _Waiting:
    """The changes waiting for a VDC's next status write, and their outcome."""

    computes: list[Callable[[Manifest], Manifest | None]]
    read: Manifest | None
    done: asyncio.Future[list[bool]]


def _retrieved(done: asyncio.Future[list[bool]]) -> None:
    # A failed write is raised to its first caller; the others may all have been
    # cancelled, and asyncio would then log the exception as never retrieved.
    if not done.cancelled():
        done.exception()


def combined(
    vdc: Manifest, computes: list[Callable[[Manifest], Manifest | None]]
) -> tuple[Manifest, list[bool]]:
    """One status patch for as many of `computes` as compose into one (all but rarely),
    each computed from the VDC as the patches before it leave it; and for each of those,
    whether it changes anything."""
    patch: Manifest = {}
    changed: list[bool] = []
    for compute in computes:
        current = vdc.get("status") or {}
        status = compute(vdc)
        if not status or all(current.get(k) == v for k, v in status.items()):
            changed.append(False)
            continue
        together = compose(patch, status)
        if together is None:
            break  # the next write takes it, computed from what this one returns
        patch = together
        vdc = {**vdc, "status": merge_patch(current, status)}
        changed.append(True)
    return patch, changed


def merge_patch(target: Any, patch: Any) -> Any:
    """`patch` applied to `target` as the API server applies a JSON merge patch (RFC 7386)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def compose(first: Manifest, then: Manifest) -> Manifest | None:
    """One merge patch that does what `first` and then `then` do, or None where none can:
    `first` removes or replaces with a non-object what `then` merges an object into (the
    one patch would merge into the value `first` removed)."""
    result = dict(first)
    for key, value in then.items():
        if isinstance(value, dict) and key in first:
            before = first[key]
            if not isinstance(before, dict):
                return None
            inner = compose(before, value)
            if inner is None:
                return None
            result[key] = inner
        else:
            result[key] = value
    return result


def _later(one: Manifest, other: Manifest) -> bool:
    """Whether `one` is a later version than `other`, as far as their versions tell."""
    ours, theirs = _revision(one), _revision(other)
    return ours is not None and theirs is not None and ours > theirs


def _revision(obj: Manifest) -> int | None:
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return int(version) if isinstance(version, str) and version.isdigit() else None
