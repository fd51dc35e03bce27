"""The floor under bench/operator_scale.py: the same children of every VDC, made by a
controller that does nothing else.

For each VDC its watch shows added, `floor` makes what the operator's `converge` makes, in
the same order and with the same request code (`vdc_operator.kube.Api`, 48 connections):
the ServiceAccount and the Role together, then the RoleBinding and a pod per group, as
`vdc_operator.builders` builds them from the spec checked by `PlacedSpecs`. What it leaves
out is all the operator does besides: kopf and its handling of every event, the admission
webhooks, the status writes, the events posted, the pods' watch. Its p99 on the same
burst, on the same machine, is what the API server, etcd and the scheduler allow; the
operator's p99 over it is what the operator adds.

It runs in a process of its own (`Floor`), with the cluster's admin credentials, while the
operator's chart is uninstalled (no webhook asks an absent operator about each create).
An admin's Roles and RoleBindings skip RBAC's escalation check, as the operator's do since
it may `escalate` and `bind` Roles (deploy/helm/vdc/templates/rbac.yaml); before that, the
check was most of what the operator added to the floor in a burst.
A VDC it saw is not seen again: it makes no finalizer, so deleting the VDCs leaves their
children to the garbage collector (they are owned by their VDC).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
from typing import Any

import aiohttp
from kubernetes import client, config

from vdc_operator import builders
from vdc_operator.kube import Api
from vdc_operator.specs import PlacedSpecs
from vdc_runtime.resource import spec as cr


class Floor:
    """The floor controller's process, watching `namespace`."""

    def __init__(self, kubeconfig: str, namespace: str) -> None:
        context = multiprocessing.get_context("fork")
        self._ready = context.Event()
        self._stop = context.Event()
        self._process = context.Process(
            target=_main, args=(kubeconfig, namespace, self._ready, self._stop), daemon=True
        )

    @property
    def pid(self) -> int:
        assert self._process.pid is not None
        return self._process.pid

    def start(self, timeout: float = 30) -> None:
        """Return once its watch is established."""
        self._process.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the floor controller's watch did not start")

    def stop(self) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()


def _main(kubeconfig: str, namespace: str, ready: Any, stop: Any) -> None:
    asyncio.run(_floor(kubeconfig, namespace, ready, stop))


async def _floor(kubeconfig: str, namespace: str, ready: Any, stop: Any) -> None:
    configuration = client.Configuration()
    config.load_kube_config(kubeconfig, client_configuration=configuration)
    api = Api(configuration=configuration)
    settings = builders.Settings()
    specs = PlacedSpecs(settings)
    seen: set[str] = set()
    made: set[asyncio.Task[None]] = set()

    async def children(vdc: dict[str, Any]) -> None:
        spec = specs.checked(vdc.get("spec"), vdc)
        await asyncio.gather(
            api.ensure(builders.build_service_account(vdc)), api.ensure(builders.build_role(vdc))
        )
        await asyncio.gather(
            api.ensure(builders.build_role_binding(vdc)),
            *(api.ensure(pod) for pod in builders.build_pods(vdc, spec, settings)),
        )

    async def watch() -> None:
        path = f"/apis/{cr.GROUP}/{cr.VERSION}/namespaces/{namespace}/{cr.PLURAL}"
        version: str | None = None
        while True:
            params = {"watch": "1", "allowWatchBookmarks": "true", "timeoutSeconds": "300"}
            if version is not None:
                params["resourceVersion"] = version
            try:
                async with api.stream(path, params, read_timeout=330) as answer:
                    answer.raise_for_status()
                    ready.set()
                    async for line in answer.content:
                        event = json.loads(line)
                        if event.get("type") == "ERROR":
                            version = None  # expired: watch again from now
                            break
                        meta = (event.get("object") or {}).get("metadata") or {}
                        version = meta.get("resourceVersion", version)
                        uid = meta.get("uid")
                        if event.get("type") == "ADDED" and uid not in seen:
                            seen.add(uid)
                            task = asyncio.create_task(children(event["object"]))
                            made.add(task)
                            task.add_done_callback(made.discard)
            except (TimeoutError, aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError):
                continue  # the API server ended the watch: again

    watching = asyncio.create_task(watch())
    try:
        # `stop` is another process's (a multiprocessing Event): polled, not awaited.
        while not stop.is_set() and not watching.done():  # noqa: ASYNC110
            await asyncio.sleep(0.2)
        if watching.done():
            watching.result()  # its failure ends the process, with the traceback
    finally:
        watching.cancel()
        for task in (watching, *made):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await api.close()
