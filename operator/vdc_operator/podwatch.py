"""The VDCs' pods, listed and watched by the operator itself rather than through kopf.

kopf puts every event of every object it watches through its per-object machinery (a
worker and a queue per object, causes, filters, progress) and keeps the whole object for
its indexes and handlers. A VDC of two groups has two pods and at least four pod events
before anything runs (created, then the scheduler's verdict), each 8 kB of JSON that is
mostly the pod's spec and managedFields. In a burst of new VDCs that was most of the
operator's work and most of the objects its garbage collector went through
(bench/operator.py --mode scale). Here each event is decoded, cut down at once to what
the handlers read (`slim`), and handed on:

- an index of the pods by VDC (`labelled`), which `converge` and `delete` read instead
  of listing; it is complete once `synced` is set (the first list is in);
- `changed`, called with the newest state of a pod, one call at a time per pod: events
  that arrive during a call are folded into the next call, because every handler reads
  the pod's level, not its edges. A call that fails is retried, with backoff, unless a
  newer event has come meanwhile (then that one is handled instead).

The watch is resumed from the last resource version it saw (bookmarks keep that recent
while nothing changes); when the API server no longer has that version (410 Gone), the
pods are listed again, and those gone meanwhile are handed on as deleted.

Written here rather than with the `kubernetes` client's Watch: that one runs in a thread
of its own (blocking reads) and builds typed models, or with `deserialize=False` still
decodes every line in that thread, which takes the GIL from the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import aiohttp
from kubernetes.client import ApiException

from vdc_operator.kube import Api, Manifest

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name)."""

Changed = Callable[[str, Manifest], Awaitable[None]]
"""Called with an event's type (ADDED, MODIFIED, DELETED) and the pod, `slim`."""

WATCH_SECONDS = 300
"""How long the API server keeps one watch request open before it ends it (the watch is
then resumed): as kopf's watches of the VDCs."""
RETRY_FIRST, RETRY_MOST = 1.0, 30.0
"""Seconds before a failed call of `changed` or a failed list or watch is tried again,
doubling each time up to the most."""


def slim(pod: Manifest, labels: Iterable[str], annotations: Iterable[str]) -> Manifest:
    """What the handlers read of a pod: its identity, `labels` and `annotations` (those
    that it has), its owners, whether it is going, and its status."""
    meta = pod.get("metadata") or {}
    own_labels = meta.get("labels") or {}
    own_annotations = meta.get("annotations") or {}
    kept = {
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
        "labels": {k: own_labels[k] for k in labels if k in own_labels},
        "annotations": {k: own_annotations[k] for k in annotations if k in own_annotations},
        "ownerReferences": [
            {"kind": o.get("kind"), "uid": o.get("uid")} for o in meta.get("ownerReferences") or []
        ],
    }
    if meta.get("deletionTimestamp"):
        kept["deletionTimestamp"] = meta["deletionTimestamp"]
    return {"metadata": kept, "status": pod.get("status") or {}}


class PodWatch:
    """The pods that have label `owner` (its value: the VDC's name), in `namespaces` (None:
    all), kept as `slim` keeps them, with `labels` and `annotations`."""

    def __init__(
        self,
        api: Api,
        owner: str,
        changed: Changed,
        *,
        labels: Iterable[str] = (),
        annotations: Iterable[str] = (),
        namespaces: Iterable[str] | None = None,
        retry_first: float = RETRY_FIRST,
        retry_most: float = RETRY_MOST,
    ) -> None:
        self.api = api
        self.owner = owner
        self.labels = (owner, *labels)
        self.annotations = tuple(annotations)
        self.namespaces: tuple[str | None, ...] = (
            (None,) if namespaces is None else tuple(namespaces)
        )
        self.retry_first, self.retry_most = retry_first, retry_most
        self.synced = asyncio.Event()
        """Set once the first list of every namespace is in the index."""
        self._pods: dict[Key, Manifest] = {}
        self._by_owner: dict[Key, dict[str, Manifest]] = {}
        self._listed: set[str | None] = set()
        self._handler = _Newest(changed, retry_first, retry_most)
        self.versions: dict[str | None, str | None] = {}
        """Per namespace watched, the resource version the watch resumes from (None: list
        first)."""
        self.lists = 0
        """Lists made: one per namespace, then one per version expired."""

    def labelled(self, namespace: str, owner: str) -> list[Manifest]:
        """The pods whose `owner` label is `owner`, as the watch last showed them."""
        return list(self._by_owner.get((namespace, owner), {}).values())

    async def run(self) -> None:
        """List and watch until cancelled; then stop the calls of `changed` under way."""
        try:
            async with asyncio.TaskGroup() as group:
                for namespace in self.namespaces:
                    group.create_task(self._follow(namespace))
        finally:
            await self._handler.close()

    async def _follow(self, namespace: str | None) -> None:
        delay = self.retry_first
        while True:
            try:
                if self.versions.get(namespace) is None:
                    self.versions[namespace] = await self._list(namespace)
                await self._watch(namespace)
                delay = self.retry_first
            except (aiohttp.ClientError, TimeoutError, ApiException, ValueError) as exc:
                # The API server restarting, a connection dropped, a refusal (RBAC being
                # granted): the next attempt lists again if it must.
                log.warning("pods in %s: %s; again in %.0f s", namespace or "all namespaces",
                            _said(exc), delay)  # fmt: skip
            except Exception:
                # Not one that passes by itself, but the index must not stop following.
                log.exception("pods in %s: listed again in %.0f s",
                              namespace or "all namespaces", delay)  # fmt: skip
                self.versions[namespace] = None
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_most)

    def _path(self, namespace: str | None) -> str:
        return "/api/v1/pods" if namespace is None else f"/api/v1/namespaces/{namespace}/pods"

    async def _list(self, namespace: str | None) -> str:
        """Every pod, in pages; the index is then what the list says, and each pod that
        is new, changed or gone since the index last saw it is handed on."""
        seen: dict[Key, Manifest] = {}
        params = {"labelSelector": self.owner, "limit": "500"}
        while True:
            page = await self.api.read(self._path(namespace), params)
            for item in page.get("items") or []:
                pod = slim(item, self.labels, self.annotations)
                meta = pod["metadata"]
                seen[(meta["namespace"], meta["name"])] = pod
            after = (page.get("metadata") or {}).get("continue")
            if not after:
                break
            params = {**params, "continue": after}
        version = page["metadata"]["resourceVersion"]
        for key, before in list(self._pods.items()):
            if (namespace is None or key[0] == namespace) and key not in seen:
                self._apply("DELETED", before)
        for key, pod in seen.items():
            before = self._pods.get(key)
            if before is None:
                self._apply("ADDED", pod)
            elif before["metadata"]["resourceVersion"] != pod["metadata"]["resourceVersion"]:
                self._apply("MODIFIED", pod)
        self.lists += 1
        self._listed.add(namespace)
        if len(self._listed) == len(self.namespaces):
            self.synced.set()
        return str(version)

    async def _watch(self, namespace: str | None) -> None:
        """Follow the events from the version listed or last seen, until the API server
        ends the request; on 410 Gone, forget the version (the next round lists)."""
        params = {
            "watch": "1",
            "labelSelector": self.owner,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
            "resourceVersion": str(self.versions[namespace]),
        }
        async with self.api.stream(self._path(namespace), params, WATCH_SECONDS + 30) as response:
            if response.status == 410:
                self.versions[namespace] = None
                return
            if not 200 <= response.status <= 299:
                said = (await response.read()).decode("utf-8", "replace")
                raise ApiException(status=response.status, reason=response.reason, body=said)
            async for line in _lines(response.content):
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        self.versions[namespace] = None  # too old: list again
                        return
                    raise ApiException(status=obj.get("code"), reason=obj.get("message"))
                version = (obj.get("metadata") or {}).get("resourceVersion")
                if version:
                    self.versions[namespace] = version
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(kind, slim(obj, self.labels, self.annotations))

    def _apply(self, kind: str, pod: Manifest) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        before = self._pods.get(key)
        if before is not None:
            owner = (key[0], before["metadata"]["labels"].get(self.owner))
            pods = self._by_owner.get(owner, {})
            pods.pop(key[1], None)
            if not pods:
                self._by_owner.pop(owner, None)
        if kind == "DELETED":
            self._pods.pop(key, None)
        else:
            self._pods[key] = pod
            owner = (key[0], meta["labels"].get(self.owner))
            self._by_owner.setdefault(owner, {})[key[1]] = pod
        self._handler.put(key, kind, pod)


class _Newest:
    """Calls `handle` with the newest event of each key, one call at a time per key."""

    def __init__(self, handle: Changed, retry_first: float, retry_most: float) -> None:
        self.handle = handle
        self.retry_first, self.retry_most = retry_first, retry_most
        self._waiting: dict[Key, tuple[str, Manifest]] = {}
        self._running: dict[Key, asyncio.Task[None]] = {}

    def put(self, key: Key, kind: str, pod: Manifest) -> None:
        self._waiting[key] = (kind, pod)
        if key not in self._running:
            self._running[key] = asyncio.create_task(self._drain(key))

    async def _drain(self, key: Key) -> None:
        delay = self.retry_first
        try:
            while key in self._waiting:
                kind, pod = self._waiting.pop(key)
                try:
                    await self.handle(kind, pod)
                    delay = self.retry_first
                except Exception:
                    log.exception("pod %s/%s: handling its %s event failed; again in %.0f s",
                                  *key, kind, delay)  # fmt: skip
                    self._waiting.setdefault(key, (kind, pod))  # unless a newer one came
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.retry_most)
        finally:
            del self._running[key]

    async def close(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._waiting.clear()


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The stream's lines. Not `async for line in content`: aiohttp refuses a line longer
    than its buffer's limit (128 kB), and a pod's status or annotations can be longer."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        start, end = 0, buffer.find(b"\n")
        while end >= 0:
            if end > start:
                yield buffer[start:end]
            start, end = end + 1, buffer.find(b"\n", end + 1)
        buffer = buffer[start:]
    if buffer.strip():
        yield buffer


def _said(exc: BaseException) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return str(exc) or type(exc).__name__
