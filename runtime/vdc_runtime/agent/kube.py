"""The agent's few calls to the Kubernetes API: read its VDC, patch its status, post events.

The `kubernetes` client is synchronous, so each call runs in a thread. The agent's Role
allows exactly these calls on its own VDC (see vdc_operator.builders.build_role).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from vdc_runtime.spec import cr
from vdc_runtime.status import Event, timestamp

log = logging.getLogger("vdc.agent")


class Conflict(Exception):
    """The VDC changed since the resourceVersion a write was based on."""


class Gone(Exception):
    """The VDC no longer exists."""


class KubeError(Exception):
    pass


class Kube:
    def __init__(self, namespace: str, name: str, pod: str | None = None) -> None:
        # Imported here: the kubernetes client costs ~0.5 s, and only the agent needs it.
        from kubernetes import client, config

        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config()
        else:  # an agent run by hand, or by tests, outside a pod
            config.load_kube_config()
        api = client.ApiClient()
        self._custom = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._exception = client.ApiException
        self.namespace = namespace
        self.name = name
        self.pod = pod

    def _raise(self, exc: Exception, what: str) -> None:
        status = getattr(exc, "status", None)
        if status == 409:
            raise Conflict(what) from None
        if status == 404:
            raise Gone(f"{what}: VirtualDataCenter {self.namespace}/{self.name} is gone") from None
        reason = getattr(exc, "reason", None) or exc
        raise KubeError(f"{what}: {status or ''} {reason}".strip()) from None

    async def get(self) -> dict[str, Any]:
        def call() -> dict[str, Any]:
            try:
                return self._custom.get_namespaced_custom_object(  # type: ignore[no-any-return]
                    cr.GROUP, cr.VERSION, self.namespace, cr.PLURAL, self.name
                )
            except self._exception as exc:
                self._raise(exc, "reading the VDC")
                raise

        return await asyncio.to_thread(call)

    async def patch_status(
        self, status: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """A merge patch of the status; with `resource_version`, only on top of that
        version (Conflict otherwise)."""
        body: dict[str, Any] = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}

        def call() -> dict[str, Any]:
            try:
                return self._custom.patch_namespaced_custom_object_status(  # type: ignore[no-any-return]
                    cr.GROUP, cr.VERSION, self.namespace, cr.PLURAL, self.name, body
                )
            except self._exception as exc:
                self._raise(exc, "writing the status")
                raise

        return await asyncio.to_thread(call)

    async def post_event(self, vdc: dict[str, Any], event: Event) -> None:
        meta = vdc["metadata"]
        now = timestamp()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": self.namespace},
            "involvedObject": {
                "apiVersion": cr.API_VERSION,
                "kind": cr.KIND,
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

        def call() -> None:
            try:
                self._core.create_namespaced_event(self.namespace, body)
            except self._exception as exc:
                self._raise(exc, f"posting event {event.reason}")

        await asyncio.to_thread(call)
