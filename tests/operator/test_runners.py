"""A VDC's runners: registration against the fake GitHub (idempotent, crash-safe), their
containers in the pod, and when the VDC is deleted once their jobs are done."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.github.fake_github import FakeGitHub
from tests.operator.test_builders import assert_golden, pod_of, vdc
from vdc_operator import builders, github, runners
from vdc_runtime.resource import spec as cr

TOKEN = "ghp_runners-test"
T0 = 1_790_000_000.0
RUNNERS = {
    "url": "https://github.com/acme/lab",
    "credentials": {"secretName": "gh"},
    "labels": ["vdc-lab"],
    "count": 2,
    "afterJob": {"keepFor": "10m", "keepFailedFor": "2h"},
}


def spec_of(**changes: Any) -> cr.Runners:
    spec = cr.parse({"runners": {**RUNNERS, **changes}}).runners
    assert spec is not None
    return spec


def stamp(t: float) -> str:
    from vdc_runtime.resource.status import timestamp

    return timestamp(t)


def test_pod_has_a_runner_container_each() -> None:
    body = vdc(runners=RUNNERS)
    pod = pod_of(body)
    assert_golden("runners-pod", pod)
    names = [c["name"] for c in pod["spec"]["containers"]]
    assert names == ["agent", "holder", "runner-0", "runner-1"]
    runner = pod["spec"]["containers"][2]
    assert runner["command"][:6] == ["vdc", "runner", "--name", "runner-0", "--state-dir",
                                     builders.RUNNER_STATE_DIR]  # fmt: skip
    assert runner["command"][-2:] == ["--jitconfig", "$(ACTIONS_RUNNER_INPUT_JITCONFIG)"]
    ref = runner["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "vdc-quickstart-runners", "key": "runner-0"}
    assert "securityContext" not in runner  # only the agent and the holder are privileged


def test_deletion_time() -> None:
    spec = spec_of()
    done = {"phase": "Finished", "result": "succeeded", "endedAt": stamp(T0)}
    assert runners.deletion_time(spec, {}) is None
    assert runners.deletion_time(spec, {"runners": [done]}) is None  # one of two reported
    busy = {"phase": "Busy", "job": "j"}
    assert runners.deletion_time(spec, {"runners": [done, busy]}) is None
    both = {"runners": [done, {**done, "endedAt": stamp(T0 + 30)}]}
    assert runners.deletion_time(spec, both) == T0 + 30 + 600
    failed = {"runners": [done, {**done, "result": "failed"}]}
    assert runners.deletion_time(spec, failed) == T0 + 7200
    crashed = {"runners": [done, {"phase": "Failed", "endedAt": stamp(T0)}]}
    assert runners.deletion_time(spec, crashed) == T0 + 7200
    kept = {**both, "keepUntil": stamp(T0 + 86400)}
    assert runners.deletion_time(spec, kept) == T0 + 86400
    assert runners.deletion_time(spec_of(afterJob={}), both) == T0 + 30


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub("acme", "lab", token=TOKEN) as server:
        yield server


def client(fake: FakeGitHub) -> github.GitHub:
    target = github.Target(api_url=fake.api_url, owner="acme", repo="lab",
                           html_url="https://github.com/acme/lab")  # fmt: skip
    return github.GitHub(target, github.TokenAuth(TOKEN))


async def test_register_is_recorded_after_each_runner_and_idempotent(fake: FakeGitHub) -> None:
    body = vdc(runners=RUNNERS)
    spec = spec_of()
    secret = builders.build_runners_secret(body)
    saved: list[dict[str, Any]] = []

    async def save(s: dict[str, Any]) -> dict[str, Any]:
        saved.append(copy.deepcopy(s))
        return s

    async with client(fake) as gh:
        first = await runners.register(gh, body, spec, secret, save)
        assert len(saved) == 2  # one save per registration: a crash loses none
        assert first.created == [r.name for r in fake.runners.values()]
        known = runners.registered(first.secret)
        assert sorted(known) == [0, 1]
        label = github.vdc_label("lab", "quickstart", body["metadata"]["uid"])
        for index, entry in known.items():
            encoded = base64.b64decode(first.secret["data"][runners.key(index)]).decode()
            config = json.loads(base64.b64decode(encoded))
            runner_file = json.loads(base64.b64decode(config[".runner"]))
            assert runner_file["AgentId"] == entry["id"] and runner_file["Labels"] == [
                "vdc-lab", label]  # fmt: skip
        again = await runners.register(gh, body, spec, first.secret, save)
        assert again.created == [] and len(fake.runners) == 2

        # A registration whose record was lost (a crash before the save): GitHub knows the
        # name, so the runner is removed and registered anew, not duplicated.
        lost = copy.deepcopy(first.secret)
        record = json.loads(lost["metadata"]["annotations"][runners.ANNOTATION])
        del record["1"]
        lost["metadata"]["annotations"][runners.ANNOTATION] = json.dumps(record)
        old_id = known[1]["id"]
        redone = await runners.register(gh, body, spec, lost, save)
        assert len(redone.created) == 1 and len(fake.runners) == 2
        assert old_id not in fake.runners

        removed = await runners.deregister(gh, redone.secret)
        assert sorted(removed) == sorted(first.created)
        assert fake.runners == {}


async def test_rate_limit_reaches_the_caller(fake: FakeGitHub) -> None:
    fake.rate_limit(1, reset_in=120)
    async with client(fake) as gh:
        with pytest.raises(github.RateLimited) as info:

            async def save(s: dict[str, Any]) -> dict[str, Any]:
                return s

            await runners.register(gh, vdc(runners=RUNNERS), spec_of(),
                                   builders.build_runners_secret(vdc()), save)  # fmt: skip
    assert info.value.retry_at > fake.now()
