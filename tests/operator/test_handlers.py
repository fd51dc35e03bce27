"""The handlers' own logic that needs no cluster (the rest runs in tests/e2e)."""

from __future__ import annotations

import logging
from typing import Any

import kopf
import pytest

from vdc_operator import github, handlers
from vdc_operator.specs import PlacedSpecs


def test_status_fields_go_through_the_typed_model() -> None:
    patch = kopf.Patch()
    handlers._set_status(patch, runner_label="vdc-abc", runners_registered=2)
    handlers._set_status(patch, delete_at=None)  # a merge patch's null clears it
    assert dict(patch.status) == {"runnerLabel": "vdc-abc", "runnersRegistered": 2,
                                  "deleteAt": None}  # fmt: skip
    with pytest.raises(ValueError, match=r"runners_registered|runnersRegistered"):
        handlers._set_status(patch, runners_registered="two")


# -- runner registration and removal ------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "failures", "delay"),
    [
        (github.GitHubError(502, "bad gateway", transient=True), 1, 15.0),
        (github.GitHubError(None, "no route", transient=True), 7, 15.0),
        (github.GitHubError(503, "unavailable", transient=True), 8, None),  # given up
        (github.GitHubError(401, "bad credentials"), 1, None),  # will not pass by itself
        (github.RateLimited(403, "rate limit", retry_at=1000.0 + 120), 1, 120.0),
        (github.RateLimited(429, "secondary", retry_at=1000.0 - 5), 1, 5.0),  # reset passed
    ],
)
def test_runner_removal_is_retried_by_kopf_then_given_up(
    error: github.GitHubError, failures: int, delay: float | None
) -> None:
    assert handlers.deregistration_retry(error, failures, now=1000.0) == delay


def test_handlers_take_the_api_and_settings_from_kopfs_memo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VDC_METRICS_PORT", "0")  # no metrics server in a unit test
    monkeypatch.setenv("VDC_RUNTIME_IMAGE", "registry.example/vdc-runtime:test")
    monkeypatch.setattr(handlers, "Api", lambda: "the API client")
    memo = kopf.Memo()
    handlers.configure(settings=kopf.OperatorSettings(), memo=memo, logger=logging.getLogger())
    assert memo.api == "the API client"
    assert memo.settings.runtime_image == "registry.example/vdc-runtime:test"
    assert not hasattr(handlers, "SETTINGS")  # nothing read from the environment at import


def test_a_vdcs_spec_is_parsed_once_per_generation() -> None:
    from tests.operator.test_builders import vdc

    specs = PlacedSpecs(handlers.builders.Settings())
    body = vdc()
    body["metadata"].update(uid="u-1", generation=1)
    first = specs.of(body)
    assert specs.of(body) is first  # a status write's event: the same spec
    body["metadata"]["generation"] = 2
    body["spec"]["nodes"][0]["memory"] = "512M"
    second = specs.of(body)
    assert second is not first and second.nodes[0].memory == "512M"


# -- following the pod ---------------------------------------------------------------------------


class _ConflictingApi:
    """update_vdc_status as kube.Api does it, where the first write meets a conflict: the
    VDC was written meanwhile (`newer`), so the status is computed again from that; the
    events it is asked to post, kept."""

    def __init__(self, newer: dict[str, Any]) -> None:
        self.newer = newer
        self.written: list[dict[str, Any]] = []
        self.posted: list[dict[str, Any]] = []

    async def update_vdc_status(
        self, namespace: str, name: str, compute: Any, read: Any = None
    ) -> bool:
        compute(read)  # conflict
        status = compute(self.newer)
        if status:
            self.written.append(status)
        return bool(status)

    async def ensure(self, manifest: dict[str, Any]) -> bool:
        self.posted.append(manifest)
        return True


async def test_a_restart_is_announced_only_by_the_write_that_records_it() -> None:
    from tests.operator.test_builders import OOM, restarted, running_vdc

    the_pod = restarted({"running": {}}, 2, lastState=OOM)
    source = handlers.Source.of(kopf.OperatorSettings().posting)

    def change(now: Any) -> handlers.builders.PodChange:
        return handlers.builders.pod_change(now, the_pod)

    # Another event of the same restart recorded it meanwhile: nothing written, no event.
    api: Any = _ConflictingApi(running_vdc(agentRestarts=2))
    await handlers._write_pod_change(api, running_vdc(agentRestarts=1), change, source)
    assert (api.written, api.posted) == ([], [])

    # Nobody had: the write records it and the event follows, once.
    api = _ConflictingApi(running_vdc(agentRestarts=1, message="newer"))
    await handlers._write_pod_change(api, running_vdc(agentRestarts=1), change, source)
    assert api.written == [{"agentRestarts": 2}]
    assert [(e["kind"], e["reason"]) for e in api.posted] == [("Event", "AgentRestarted")]


def test_kopfs_routine_success_lines_are_left_out() -> None:
    def record(level: int, message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    assert not handlers.routine_success(record(logging.INFO, "Handler 'pod_changed' succeeded."))
    kept = [
        record(logging.INFO, "created pods vdc-lab-a, vdc-lab-b"),
        record(logging.INFO, "Creation is processed: 1 succeeded; 0 failed."),
        record(logging.WARNING, "Handler 'reconcile' succeeded."),
        record(logging.ERROR, "Handler 'reconcile' failed temporarily: waiting"),
    ]
    assert all(handlers.routine_success(r) for r in kept)


def test_a_spec_is_checked_once_for_the_webhook_and_reconcile() -> None:
    from tests.operator.test_builders import vdc

    specs = PlacedSpecs(handlers.builders.Settings())
    body = vdc()
    del body["metadata"]["uid"]  # as the webhook sees a new VDC
    admitted = specs.checked(kopf.Body(body)["spec"])
    body["metadata"].update(uid="u-1", generation=1)
    assert specs.checked(body["spec"], body) is admitted  # `reconcile`: the same spec
    assert specs.of(body) is admitted  # its pods' events: parsed already


def test_a_refused_spec_is_refused_each_time_and_not_taken_as_parsed() -> None:
    from tests.operator.test_builders import vdc

    specs = PlacedSpecs(handlers.builders.Settings())
    bad = vdc()
    bad["spec"]["nodes"][0]["interfaces"] = [{"network": "nowhere"}]  # parses; `load` refuses
    bad["metadata"].update(uid="u-2", generation=1)
    for _ in range(2):
        with pytest.raises(handlers.SpecErrors, match=r"nowhere") as refused:
            specs.checked(bad["spec"], bad)
        assert refused.value.__traceback__ is not None
    assert len(specs._checked) == 1
    # Its pods (made by an older operator whose checks were looser) still have a spec.
    assert specs.of(bad).nodes[0].name == bad["spec"]["nodes"][0]["name"]


def test_checked_specs_are_bounded() -> None:
    from tests.operator.test_builders import vdc

    specs = PlacedSpecs(handlers.builders.Settings(), kept=2)
    for memory in ("256M", "512M", "1G"):
        body = vdc()
        body["spec"]["nodes"][0]["memory"] = memory
        specs.checked(body["spec"])
    assert len(specs._checked) == 2


async def test_the_operator_collects_garbage_less_often_and_never_its_modules() -> None:
    import gc

    before = gc.get_threshold()
    try:
        await handlers.collect_less()
        assert gc.get_threshold()[0] == handlers.GC_YOUNG > before[0]
        assert gc.get_freeze_count() > 0  # what was loaded is out of every collection
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
