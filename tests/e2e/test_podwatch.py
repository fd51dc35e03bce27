"""The operator's own watch of the VDCs' pods against the real API server: the first list,
the events, and a relist when the version it would resume from is too old (410 Gone),
which hands on the pods that went meanwhile as deleted."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import config

from tests.e2e.cluster import cluster
from tests.e2e.conftest import Kube
from vdc_operator import builders
from vdc_operator.kube import Api
from vdc_operator.podwatch import PodWatch

pytestmark = [pytest.mark.root, pytest.mark.slow]

OWNER = "lab"


def _pod(name: str, labels: dict[str, str]) -> str:
    # Never scheduled (no node has the label), so nothing is pulled or run.
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeSelector": {"vdc.dev/no-such-node": "true"},
                 "containers": [{"name": "c", "image": "vdc.local/vdc-runtime:dev"}]},
    })  # fmt: skip


_COMPACT = """
import json, urllib.request
def post(path, body):
    request = urllib.request.Request("http://127.0.0.1:2379" + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)
revision = post("/v3/kv/range", {"key": "AA=="})["header"]["revision"]
post("/v3/kv/compaction", {"revision": revision, "physical": True})
"""


def _compact_etcd() -> None:
    """Drop etcd's history up to now, through its JSON gateway on the cluster's loopback
    (the image has no etcdctl)."""
    cluster.sh(sys.executable, "-c", _COMPACT, netns=True)


@pytest.fixture
def namespace(kube: Kube) -> Iterator[str]:
    name = f"podwatch-{uuid.uuid4().hex[:6]}"
    kube.run("create", "namespace", name)
    yield name
    kube.run("delete", "namespace", name, "--wait=false")


async def _until(what: str, done: Callable[[], bool], within: float = 30) -> None:
    """Poll `done`: what it checks is the watch's index, which has no event to wait on."""
    try:
        async with asyncio.timeout(within):
            while not done():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {within} s: {what}") from None


def test_the_pods_are_listed_then_followed_and_listed_again_when_too_old(
    kube: Kube, namespace: str
) -> None:
    config.load_kube_config(str(kube.layout.kubeconfig))
    events: list[tuple[str, str]] = []

    async def changed(kind: str, pod: dict[str, Any]) -> None:
        events.append((kind, pod["metadata"]["name"]))

    def create(name: str, **labels: str) -> None:
        manifest = _pod(name, {builders.LABEL_NAME: OWNER, **labels})
        kube.run("-n", namespace, "apply", "-f", "-", stdin=manifest)

    async def kubectl(*args: str) -> None:
        await asyncio.to_thread(kube.run, "-n", namespace, *args)

    async def scenario() -> None:
        api = Api()
        watch = PodWatch(api, builders.LABEL_NAME, changed, labels=(builders.LABEL_GROUP,),
                         namespaces=[namespace])  # fmt: skip

        def names() -> list[str]:
            return sorted(p["metadata"]["name"] for p in watch.labelled(namespace, OWNER))

        await asyncio.to_thread(create, "a", **{builders.LABEL_GROUP: "g1"})
        running = asyncio.create_task(watch.run())
        try:
            await asyncio.wait_for(watch.synced.wait(), 30)
            assert names() == ["a"] and events == [("ADDED", "a")]
            (a,) = watch.labelled(namespace, OWNER)
            assert a["metadata"]["labels"] == {builders.LABEL_NAME: OWNER,
                                               builders.LABEL_GROUP: "g1"}  # fmt: skip
            # Events: a new pod, a pod that is not a VDC's (no label: not seen), the
            # scheduler's verdict, a pod deleted.
            await asyncio.to_thread(create, "b")
            await asyncio.to_thread(kube.run, "-n", namespace, "apply", "-f", "-",
                                    stdin=_pod("unlabelled", {}))  # fmt: skip
            await _until("b is seen", lambda: names() == ["a", "b"])
            await _until("a's verdict is seen", lambda: any(
                c.get("reason") == "Unschedulable"
                for p in watch.labelled(namespace, OWNER) if p["metadata"]["name"] == "a"
                for c in p["status"].get("conditions") or []))  # fmt: skip
            await kubectl("delete", "pod", "a", "--wait=true")
            await _until("a is gone", lambda: names() == ["b"])
            assert ("DELETED", "a") in events
            assert all(name != "unlabelled" for _, name in events)
            assert watch.lists == 1
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        # While nobody watches: b goes, c comes, and etcd's history is compacted (as the
        # API server does every 5 min; a young cluster has all of it). Resumed from a
        # version that is gone, the watch lists again and hands on both.
        await kubectl("delete", "pod", "b", "--wait=true")
        await asyncio.to_thread(create, "c")
        await asyncio.to_thread(_compact_etcd)
        watch.versions[namespace] = "1"
        events.clear()
        running = asyncio.create_task(watch.run())
        try:
            await _until("the relist", lambda: names() == ["c"])
            assert watch.lists == 2
            assert sorted(events) == [("ADDED", "c"), ("DELETED", "b")]
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await api.close()

    asyncio.run(scenario())
