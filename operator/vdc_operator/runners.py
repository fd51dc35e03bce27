"""GitHub Actions runners of a VirtualDataCenter: registration, removal, and when the VDC
goes once their jobs are done.

The operator registers each runner with a just-in-time configuration (GitHub's
`generate-jitconfig`), so GitHub credentials stay with the operator: the pod gets only the
single-use JIT configs, in a Secret owned by the VDC. Which runners exist is recorded in
that Secret's annotation right after each registration, so an operator killed between
two registrations neither forgets one nor makes a second; a name GitHub already knows (a
registration whose record was lost) is removed and registered again.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vdc_operator import github
from vdc_runtime.resource import spec as cr
from vdc_runtime.runner import RunnerPhase

log = logging.getLogger("vdc.operator.runners")

ANNOTATION = f"{cr.GROUP}/runners"
"""On the runners' Secret: {index: {"id", "name"}} of every registered runner."""


def key(index: int) -> str:
    """The runner's key in the Secret, and its container's name."""
    return f"runner-{index}"


def registered(secret: Mapping[str, Any] | None) -> dict[int, dict[str, Any]]:
    """The runners recorded on the Secret (index -> {"id", "name"})."""
    if not secret:
        return {}
    raw = (secret.get("metadata", {}).get("annotations") or {}).get(ANNOTATION)
    if not raw:
        return {}
    return {int(i): entry for i, entry in json.loads(raw).items()}


def labels(runners: cr.Runners, vdc: Mapping[str, Any]) -> list[str]:
    meta = vdc["metadata"]
    unique = github.vdc_label(meta["namespace"], meta["name"], meta["uid"])
    return [*runners.labels, unique]


def deletion_time(runners: cr.Runners, status: Mapping[str, Any]) -> float | None:
    """When the VDC is to be deleted: its jobs all ended, kept `afterJob` (longer if a job
    failed and keepFailedFor says so, and at least as long as a job asked); None while a
    runner has not finished."""
    reported = status.get("runners") or []
    ended = (RunnerPhase.FINISHED, RunnerPhase.FAILED)
    if len(reported) < runners.count or any(r.get("phase") not in ended for r in reported):
        return None
    ended = [_epoch(r.get("endedAt")) for r in reported]
    if any(e is None for e in ended):
        return None
    failed = any(
        r.get("phase") == RunnerPhase.FAILED or r.get("result") == "failed" for r in reported
    )
    after = runners.after_job
    keep = after.keep_failed_for if failed and after.keep_failed_for is not None else after.keep_for
    at = max(e for e in ended if e is not None) + cr.duration_seconds(keep)
    kept = _epoch(status.get("keepUntil"))
    return max(at, kept) if kept is not None else at


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


@dataclass
class Registration:
    """The runners' Secret after registering what was missing."""

    secret: dict[str, Any]
    created: list[str]


def _ssl(runners: cr.Runners) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if runners.ca_bundle:
        context.load_verify_locations(cadata=runners.ca_bundle)
    return context


def client(runners: cr.Runners, credentials: Mapping[str, bytes | str]) -> github.GitHub:
    target = github.Target.from_url(runners.url)
    auth = github.credentials_from_secret(credentials)
    return github.GitHub(target, auth, ssl=_ssl(runners))


async def register(
    gh: github.GitHub,
    vdc: Mapping[str, Any],
    runners: cr.Runners,
    secret: dict[str, Any],
    save: Any,
) -> Registration:
    """Register every runner the Secret does not record yet; `save(secret)` persists the
    Secret after each one (so a crash loses no registration)."""
    meta = vdc["metadata"]
    known = registered(secret)
    created = []
    wanted = labels(runners, vdc)
    for index in range(runners.count):
        if index in known:
            continue
        name = github.runner_name(meta["namespace"], meta["name"], meta["uid"], index)
        try:
            jit = await gh.jit_config(name, wanted, runner_group_id=runners.group_id)
        except github.Conflict:
            # Registered by an earlier attempt whose record was lost: that JIT config is
            # gone with it, so the runner is removed and registered again.
            for runner in await gh.runners():
                if runner.get("name") == name:
                    await gh.delete_runner(int(runner["id"]))
            jit = await gh.jit_config(name, wanted, runner_group_id=runners.group_id)
        known[index] = {"id": jit.id, "name": jit.name}
        data = dict(secret.get("data") or {})
        data[key(index)] = base64.b64encode(jit.encoded_jit_config.encode()).decode()
        secret["data"] = data
        secret.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION] = json.dumps(
            {str(i): e for i, e in sorted(known.items())}, separators=(",", ":")
        )
        secret = await save(secret)
        created.append(name)
        log.info("registered runner %s (id %s) for %s/%s", name, jit.id,
                 meta["namespace"], meta["name"])  # fmt: skip
    return Registration(secret, created)


async def deregister(gh: github.GitHub, secret: Mapping[str, Any] | None) -> list[str]:
    """Remove the recorded runners from GitHub; returns the names removed."""
    removed = []
    for _, entry in sorted(registered(secret).items()):
        if await gh.delete_runner(int(entry["id"])):
            removed.append(str(entry["name"]))
    return removed
