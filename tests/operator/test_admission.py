"""The VDC's admission webhooks (`vdc_operator.admission`): their answers, the same as
kopf's admission engine gave, and the server that routes to them, on loopback."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import aiohttp
import jsonpatch
import kopf
import pytest

from vdc_operator import admission, builders, persistence
from vdc_operator.specs import PlacedSpecs


def _vdc(spec: dict[str, Any] | None = None, finalizers: list[str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "lab", "namespace": "ns"}
    if finalizers is not None:
        metadata["finalizers"] = finalizers
    return {
        "apiVersion": "vdc.dev/v1alpha1",
        "kind": "VirtualDataCenter",
        "metadata": metadata,
        "spec": spec if spec is not None else {"networks": [{"name": "lan", "type": "internal"}]},
    }


BAD_SPEC = {"networks": [{"name": "lan", "type": "internal"}, {"name": "lan", "type": "internal"}]}


def _request(
    operation: str, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "req-1", "operation": operation, "object": obj, "oldObject": old},
    }


def _specs() -> PlacedSpecs:
    return PlacedSpecs(builders.Settings())


def _patch_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    response = answer["response"]
    if "patch" not in response:
        return []
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))  # type: ignore[no-any-return]


def test_a_valid_spec_is_admitted_and_a_bad_one_refused_with_the_models_message() -> None:
    ok = admission.review(_request("CREATE", _vdc()), admission.SPEC, _specs())
    assert ok == {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": {"uid": "req-1", "allowed": True},
    }
    bad = admission.review(_request("CREATE", _vdc(BAD_SPEC)), admission.SPEC, _specs())
    assert bad["response"]["allowed"] is False
    assert bad["response"]["status"]["code"] == 422
    assert "spec.networks[1]" in bad["response"]["status"]["message"]
    assert "lan" in bad["response"]["status"]["message"]


def test_an_update_that_keeps_the_spec_passes_even_if_the_spec_is_now_refused() -> None:
    old, new = _vdc(BAD_SPEC), _vdc(BAD_SPEC, finalizers=[])
    kept = admission.review(_request("UPDATE", new, old), admission.SPEC, _specs())
    assert kept["response"]["allowed"] is True
    changed = admission.review(_request("UPDATE", new, _vdc()), admission.SPEC, _specs())
    assert changed["response"]["allowed"] is False


@pytest.mark.parametrize("finalizers", [None, [], ["other.dev/x"], [persistence.FINALIZER]])
def test_the_finalizer_patch_is_what_kopfs_engine_answered(finalizers: list[str] | None) -> None:
    """The same JSON patch as kopf's engine computed for the handler this replaces (a merge
    patch of the finalizers, diffed against the object), and it does what it says."""
    obj = _vdc(finalizers=finalizers)
    answer = admission.review(_request("CREATE", obj), admission.FINALIZER, _specs())
    assert answer["response"]["allowed"] is True
    ops = _patch_of(answer)
    kopfs = kopf.Patch(body=kopf.Body(copy.deepcopy(obj)))
    wanted = persistence.with_finalizer(finalizers, persistence.FINALIZER)
    if wanted is not None:
        kopfs.metadata["finalizers"] = wanted
    patched = jsonpatch.apply_patch(obj, ops)
    assert patched == jsonpatch.apply_patch(obj, kopfs.as_json_patch())
    assert patched["metadata"]["finalizers"][-1] == persistence.FINALIZER
    assert patched["metadata"]["finalizers"].count(persistence.FINALIZER) == 1
    if finalizers is not None and persistence.FINALIZER in finalizers:
        assert ops == []


def test_the_finalizer_is_added_at_creation_only() -> None:
    answer = admission.review(_request("UPDATE", _vdc(), _vdc()), admission.FINALIZER, _specs())
    assert answer["response"] == {"uid": "req-1", "allowed": True}


def test_a_failing_check_refuses_with_its_error_as_kopfs_engine_did() -> None:
    class Broken(PlacedSpecs):
        def checked(self, raw: Any, vdc: Any = None) -> Any:
            raise RuntimeError("checker broke")

    answer = admission.review(
        _request("CREATE", _vdc()), admission.SPEC, Broken(builders.Settings())
    )
    assert answer["response"]["allowed"] is False
    assert answer["response"]["status"] == {"message": "checker broke", "code": 500}


async def test_the_server_answers_its_webhooks_and_passes_the_others_to_kopf() -> None:
    """kopf's webhook server (plain HTTP here), with the two webhooks answered by the
    module and any other request given to kopf's engine (`fn`)."""
    passed: list[tuple[Any, str | None]] = []

    async def kopfs_engine(request: Any, *, webhook: str | None = None, **_: Any) -> Any:
        passed.append((request, webhook))
        return admission.answer(request)

    server = admission.AdmissionServer(specs=_specs(), addr="127.0.0.1", port=0, insecure=True)
    server.port = server._allocate_free_port()
    configs = server(kopfs_engine)
    config = await anext(configs)
    try:
        async with aiohttp.ClientSession() as session:

            async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
                async with session.post(config["url"].rstrip("/") + path, json=body) as response:
                    assert response.status == 200
                    return await response.json()  # type: ignore[no-any-return]

            refused = await post("/vdc-spec", _request("CREATE", _vdc(BAD_SPEC)))
            assert refused["response"]["allowed"] is False
            finalized = await post("/vdc-finalizer", _request("CREATE", _vdc()))
            assert _patch_of(finalized) == [
                {"op": "add", "path": "/metadata/finalizers", "value": [persistence.FINALIZER]}
            ]
            assert passed == []
            other = _request("CREATE", _vdc())
            assert (await post("/something-else", other))["response"]["allowed"] is True
            assert passed == [(other, "something-else")]
    finally:
        await configs.aclose()
