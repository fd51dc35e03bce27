"""Events on a VDC posted outside kopf's handlers (by the pods' watch, `podwatch`): kopf's
`kopf.event` works only within the handlers it calls, which queue it for kopf's poster.
These look as kopf's do (same source, same name prefix), so `kubectl describe vdc` lists
them all alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vdc_runtime.resource.status import timestamp

MESSAGE_MOST = 1024
"""The API server's limit on an event's message (kopf cuts them to it too)."""


@dataclass(frozen=True)
class Source:
    """Who posts: the names kopf's own events carry."""

    component: str
    instance: str
    name_prefix: str

    @classmethod
    def of(cls, posting: Any) -> Source:
        """From kopf's `settings.posting`."""
        return cls(posting.reporting_component, posting.reporting_instance,
                   posting.event_name_prefix)  # fmt: skip


def build_event(
    obj: Mapping[str, Any],
    type: str,
    reason: str,
    message: str,
    source: Source,
    now: float | None = None,
) -> dict[str, Any]:
    """The Event that says `reason` and `message` about `obj`."""
    meta = obj["metadata"]
    if len(message) > MESSAGE_MOST:
        message = message[: MESSAGE_MOST - 3] + "..."
    at = timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": meta["namespace"], "generateName": source.name_prefix},
        "type": type,
        "reason": reason,
        "message": message,
        "action": reason,
        "reportingComponent": source.component,
        "reportingInstance": source.instance,
        "source": {"component": source.component},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion"),
            "kind": obj.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "firstTimestamp": at,
        "lastTimestamp": at,
        "count": 1,
    }
