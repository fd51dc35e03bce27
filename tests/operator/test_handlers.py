"""The handlers' own logic that needs no cluster (the rest runs in tests/e2e)."""

from __future__ import annotations

import kopf

from tests.operator.test_builders import vdc
from vdc_operator import builders, handlers


def test_two_status_updates_in_one_run_keep_each_others_conditions() -> None:
    body = vdc()
    body["status"] = {"conditions": [
        {"type": "RunnersRegistered", "status": "False", "reason": "RateLimited",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Ready", "status": "False", "reason": "PodCreating",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]}  # fmt: skip
    patch = kopf.Patch()
    handlers._runners_condition(body, patch, "True", "Registered", "1 runner")
    handlers._merge_status(body, patch, builders.status_patch(body, "Pending", "PodStarting", "x"))
    conditions = {c["type"]: (c["status"], c["reason"]) for c in patch.status["conditions"]}
    assert conditions == {"RunnersRegistered": ("True", "Registered"),
                          "Ready": ("False", "PodStarting")}  # fmt: skip
    assert patch.status["phase"] == "Pending"
