"""The VDC's admission webhooks, answered on kopf's webhook server but not by kopf's
admission engine.

For every request, kopf's engine builds a whole handler cause, and to answer a mutation it
deep-copies the object and diffs it with the copy to find the JSON patch (it deep-copies
it for a request that changes nothing too). A new VDC is asked about twice, so in a
burst of new VDCs that work showed up in profiles of the operator. These two webhooks
need none of it: one checks the spec, the other adds a finalizer, whose JSON patch is one
operation. kopf's server still serves them (its TLS, its reloading of the certificate);
a request for any other webhook goes to kopf's engine as before.

The answer is the `AdmissionReview` response of `admission.k8s.io/v1`: the request's
uid, whether it is allowed, a status saying why not, and a base64 JSON patch.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import kopf

from vdc_operator import persistence
from vdc_operator.specs import PlacedSpecs
from vdc_runtime.spec import SpecErrors

log = logging.getLogger(__name__)

SPEC = "vdc-spec"
"""The validating webhook (the Helm chart's path `/vdc-spec`)."""
FINALIZER = "vdc-finalizer"
"""The mutating webhook (path `/vdc-finalizer`)."""
REFUSED = 422


def refusal(review: Mapping[str, Any], specs: PlacedSpecs) -> str | None:
    """Why the VDC of this request must not be admitted, as `vdc validate` would say it
    (with automatic groups this operator cannot place), or None.

    An update that leaves the spec as it was (finalizers, annotations, labels) always
    passes: an object admitted before a stricter check must still be deletable."""
    new, old = review.get("object"), review.get("oldObject")
    if new is None:
        return None
    if old is not None and old.get("spec") == new.get("spec"):
        return None
    try:
        specs.checked(new.get("spec") or {})
    except SpecErrors as exc:
        return str(exc)
    return None


def finalizer_patch(review: Mapping[str, Any], finalizer: str) -> list[dict[str, Any]]:
    """The finalizer kopf needs for `delete`, on the VDC as it is created: kopf's own would
    be a PATCH of every new VDC, and a round of its events, before `reconcile`. (Without
    the webhook, or where it ignores failures, kopf still adds it itself.)"""
    metadata = (review.get("object") or {}).get("metadata") or {}
    finalizers = persistence.with_finalizer(metadata.get("finalizers"), finalizer)
    if finalizers is None:
        return []
    # "add" of an object member that exists replaces it (RFC 6902, 4.1).
    return [{"op": "add", "path": "/metadata/finalizers", "value": finalizers}]


def answer(
    request: Mapping[str, Any],
    *,
    refused: str | None = None,
    code: int = REFUSED,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The AdmissionReview that answers `request`."""
    response: dict[str, Any] = {
        "uid": (request.get("request") or {}).get("uid", ""),
        "allowed": refused is None,
    }
    if refused is not None:
        response["status"] = {"message": refused, "code": code}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode("ascii")
    return {
        "apiVersion": request.get("apiVersion", "admission.k8s.io/v1"),
        "kind": request.get("kind", "AdmissionReview"),
        "response": response,
    }


def review(request: Mapping[str, Any], webhook: str | None, specs: PlacedSpecs) -> dict[str, Any]:
    """The answer of one of this module's webhooks to `request`."""
    body = request.get("request") or {}
    try:
        if webhook == SPEC:
            return answer(request, refused=refusal(body, specs))
        if body.get("operation") != "CREATE":
            return answer(request)
        return answer(request, patch=finalizer_patch(body, persistence.FINALIZER))
    except Exception as exc:  # a bug: refused, as kopf's engine refuses a handler's failure
        log.exception("admission webhook %s failed", webhook)
        return answer(request, refused=str(exc) or repr(exc), code=500)


class AdmissionServer(kopf.WebhookServer):
    """kopf's webhook server, which answers `SPEC` and `FINALIZER` itself (`review`)."""

    def __init__(self, *, specs: PlacedSpecs, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.specs = specs

    def __call__(self, fn: kopf.WebhookFn) -> AsyncIterator[kopf.WebhookClientConfig]:
        async def answering(
            request: Any,
            *,
            webhook: str | None = None,
            headers: Any = None,
            sslpeer: Any = None,
            reason: Any = None,
        ) -> Any:
            if webhook in (SPEC, FINALIZER):
                return review(request, webhook, self.specs)
            return await fn(
                request, webhook=webhook, headers=headers, sslpeer=sslpeer, reason=reason
            )

        return super().__call__(answering)
