"""The agent's reads at start-up, against an HTTP server on loopback that answers as the
API server does before and after the pod's RoleBinding reaches its authorizer."""

from __future__ import annotations

import ssl

import pytest
from aiohttp import web

from tests.loopback import serving
from vdc_runtime.agent.kube import Forbidden, Kube


def _api_server(answers: list[int], seen: list[str]) -> web.Application:

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
    return app


def _kube(server: str) -> Kube:
    return Kube("ns", "lab", server=server, ssl_context=ssl.create_default_context(), token="t")


async def test_a_403_at_start_up_is_asked_again_until_the_binding_counts() -> None:
    seen: list[str] = []
    async with serving(_api_server([403, 403], seen)) as server:
        vdc = await _kube(server).first_get(patience=10)
    assert vdc["metadata"]["name"] == "lab"
    assert seen == ["Bearer t"] * 3


async def test_a_403_that_lasts_is_the_error_after_the_patience() -> None:
    seen: list[str] = []
    async with serving(_api_server([403] * 100, seen)) as server:
        with pytest.raises(Forbidden, match=r"403 .*forbidden"):
            await _kube(server).first_get(patience=0.6)
    assert 2 <= len(seen) <= 3
