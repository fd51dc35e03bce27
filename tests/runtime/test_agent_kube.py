"""The agent's reads at start-up, against an HTTP server on loopback that answers as the
API server does before and after the pod's RoleBinding reaches its authorizer."""

from __future__ import annotations

import ssl

import pytest
from aiohttp import web

from vdc_runtime.agent.kube import Forbidden, Kube


async def _serve(answers: list[int]) -> tuple[web.AppRunner, str, list[str]]:
    seen: list[str] = []

    async def vdc(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        status = answers.pop(0) if answers else 200
        if status == 403:
            return web.json_response(
                {"kind": "Status", "message": 'virtualdatacenters.vdc.dev "lab" is forbidden'},
                status=403,
            )
        return web.json_response({"metadata": {"name": "lab", "generation": 1}})

    app = web.Application()
    app.router.add_get("/apis/vdc.dev/v1alpha1/namespaces/ns/virtualdatacenters/lab", vdc)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}", seen


def _kube(server: str) -> Kube:
    return Kube("ns", "lab", server=server, ssl_context=ssl.create_default_context(), token="t")


async def test_a_403_at_start_up_is_asked_again_until_the_binding_counts() -> None:
    runner, server, seen = await _serve([403, 403])
    try:
        vdc = await _kube(server).first_get(patience=10)
    finally:
        await runner.cleanup()
    assert vdc["metadata"]["name"] == "lab"
    assert seen == ["Bearer t"] * 3


async def test_a_403_that_lasts_is_the_error_after_the_patience() -> None:
    runner, server, seen = await _serve([403] * 100)
    try:
        with pytest.raises(Forbidden, match=r"403 .*forbidden"):
            await _kube(server).first_get(patience=0.6)
    finally:
        await runner.cleanup()
    assert 2 <= len(seen) <= 3
