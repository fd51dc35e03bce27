"""kopf handlers for VirtualDataCenters: thin, level-based, safe to repeat.

Every handler reads the current state and converges it on the desired one built by
`builders`: an operator restart, a duplicate event or two handlers racing end with the
same single pod, because every child's name follows from the VDC's name.

A spec change replaces the pod: the data center is rebuilt from the new spec (machines
boot afresh, volumes start empty), as the README documents. The old pod's agent stops
writing the status as soon as it sees the newer generation.

Every handler is a coroutine, even one that awaits nothing (an index, a webhook): kopf runs
a plain function in a thread of its executor, a hand-off per call, and the VDCs' and pods'
events of a burst each call several.

Run with `kopf run -m vdc_operator.handlers --all-namespaces` (the operator image does).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import secrets
import time
from collections.abc import Callable
from typing import Any

import kopf

from vdc_operator import builders, github, metrics, persistence, runners
from vdc_operator import snapshots as snapshot_handlers  # registers the snapshots' handlers
from vdc_operator.admission import AdmissionServer
from vdc_operator.events import Source, build_event
from vdc_operator.kube import Api, Manifest
from vdc_operator.podwatch import PodWatch
from vdc_operator.specs import PlacedSpecs
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.status import (
    RUNNERS_REGISTERED,
    Phase,
    VirtualDataCenterStatus,
    timestamp,
)
from vdc_runtime.spec import SpecErrors

RESOURCE = (cr.GROUP, cr.VERSION, cr.PLURAL)

log = logging.getLogger(__name__)


@kopf.on.startup()
def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger, **_: Any
) -> None:
    # What every handler uses lives in kopf's memo (each object's memo is a shallow copy
    # of this one): made at start-up, from the environment of that moment, not at import.
    memo.api = Api()
    memo.settings = builders.Settings.from_env()
    memo.specs = PlacedSpecs(memo.settings)
    # kopf's bookkeeping stays out of the status users read (and the agent writes), and
    # out of the API where it need not outlive the process (`persistence`).
    settings.persistence.finalizer = persistence.FINALIZER
    settings.persistence.progress_storage = persistence.UnmarkedAnnotationsProgress(prefix=cr.GROUP)
    memo.diffbase = persistence.RememberedDiffBase()
    settings.persistence.diffbase_storage = memo.diffbase
    # Events are posted on purpose (below), not for every log line.
    settings.posting.level = logging.WARNING
    # A line per admission request (three per VDC created) says nothing kopf's do not.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").addFilter(routine_success)
    # One operator replica (the Deployment recreates it); names make duplicates impossible.
    settings.peering.standalone = True
    # The CRD comes with the chart, before the operator: no need to watch every CRD of
    # the cluster for it (and no right to list them).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    cert, key = os.environ.get("VDC_WEBHOOK_CERT"), os.environ.get("VDC_WEBHOOK_KEY")
    if cert and key:
        port = int(os.environ.get("VDC_WEBHOOK_PORT", "9443"))
        settings.admission.server = AdmissionServer(
            specs=memo.specs, addr="0.0.0.0", port=port, certfile=cert, pkeyfile=key
        )
        logger.info("admission webhook on port %d", port)
    metrics_port = int(os.environ.get("VDC_METRICS_PORT", "8080"))
    if metrics_port:
        metrics.serve(metrics_port)
    logger.info("runtime image %s; metrics on port %d", memo.settings.runtime_image, metrics_port)


@kopf.on.startup()
async def pods_watch(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """The pods' own watch (`podwatch`: kopf's handling of their events was most of the
    operator's work in a burst of new VDCs), in the namespaces kopf watches; it starts
    once kopf has logged in (`login`)."""
    names = os.environ.get("VDC_NAMESPACES", "")
    namespaces = [n for n in names.split(",") if n] or None
    memo.event_source = Source.of(settings.posting)
    memo.vdcs = {}
    memo.pods = PodWatch(
        memo.api,
        builders.LABEL_NAME,
        functools.partial(pod_changed, memo),
        labels=(builders.LABEL_GROUP,),
        annotations=(builders.ANNOTATION_HASH,),
        namespaces=namespaces,
    )


@kopf.on.login()
async def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own login through the `kubernetes` client, whose configuration `Api` uses;
    then the pods' watch starts. (Start-up handlers run before the login: a request made
    by one found no configuration.) kopf logs in again when its credentials are refused:
    the watch, started, goes on."""
    credentials = kopf.login_via_client(memo=memo, **kwargs)
    if credentials is not None and "pods_watching" not in memo:
        memo.pods_watching = asyncio.create_task(memo.pods.run(), name="pods' watch")
    return credentials


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    if "pods_watching" in memo:
        memo.pods_watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await memo.pods_watching
    if "api" in memo:
        await memo.api.close()


GC_YOUNG = 20_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


@kopf.on.startup()
async def collect_less(**_: Any) -> None:
    """Fewer, larger garbage collections. A burst of new VDCs allocates fast (decoded
    events, requests, answers) and most of it is gone within milliseconds; collected every
    700 allocations, much of it was still alive and got walked and promoted, and promoted
    objects made the older generations' collections frequent and long. The modules and
    kopf's registry, all there by now and never garbage, are frozen out of every
    collection. The operator's CPU while 520 VDCs are made (bench/operator.py --mode
    scale): 8.3 -> 5.9 s by 8 clients at once, 9.2 -> 7.2 s by one `kubectl apply`."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG, 20, 20)


def routine_success(record: logging.LogRecord) -> bool:
    """Leave out kopf's "Handler '…' succeeded." lines: one for every event of every pod
    and VDC, which a burst of new VDCs spent a twentieth of the operator's CPU writing.
    Failures, retries and the handlers' own lines stay."""
    message = record.msg
    return not (
        record.levelno == logging.INFO
        and isinstance(message, str)
        and message.startswith("Handler ")
        and message.endswith(" succeeded.")
    )


# -- the VDC's children ------------------------------------------------------------------------


async def _missing_sources(api: Api, namespace: str, spec: cr.VirtualDataCenterSpec) -> list[str]:
    problems = []
    for (kind, name), keys in sorted(builders.referenced_keys(spec).items()):
        problem = await api.missing_keys(namespace, kind, name, keys)
        if problem is not None:
            problems.append(problem)
    return problems


async def converge(
    body: Any,
    patch: kopf.Patch,
    logger: logging.Logger,
    memo: kopf.Memo,
    labelled: list[Any],
) -> None:
    """Make the VDC's ServiceAccount, Role, RoleBinding and pod exist and match its spec.

    `labelled`: the pods labelled with its name, as the pods' watch shows them."""
    api: Api = memo.api
    meta = body["metadata"]
    namespace = meta["namespace"]
    try:
        spec = memo.specs.checked(body.get("spec"), body)
    except SpecErrors as exc:
        # Only without the admission webhook (or for an object older than it, or than the
        # operator's per-pod limit of automatic groups).
        message = f"invalid spec: {exc}"
        await _write_status(
            api, body, lambda vdc: builders.status_patch(vdc, Phase.FAILED, "InvalidSpec", message)
        )
        kopf.event(body, type="Warning", reason="InvalidSpec", message=message[:1024])
        metrics.ERRORS.labels("reconcile", "InvalidSpec").inc()
        return
    missing = await _missing_sources(api, namespace, spec)
    if missing:
        message = "waiting for " + "; ".join(missing)
        await _write_status(
            api,
            body,
            lambda vdc: builders.status_patch(vdc, Phase.PENDING, "MissingSource", message),
        )
        kopf.event(body, type="Warning", reason="MissingSource", message=message)
        raise kopf.TemporaryError(message, delay=10)
    try:
        storage = await snapshot_handlers.snapshot_storage(api, namespace, spec, memo.settings)
    except snapshot_handlers.NotYet as exc:
        message = f"waiting: {exc}"
        await _write_status(
            api, body, lambda vdc: builders.status_patch(vdc, Phase.PENDING, "Waiting", message)
        )
        raise kopf.TemporaryError(message, delay=10) from None
    except snapshot_handlers.Unusable as exc:
        message = f"cannot start from the snapshot: {exc}"
        failed = Phase.FAILED
        await _write_status(
            api, body, lambda vdc: builders.status_patch(vdc, failed, "RestoreFailed", message)
        )
        kopf.event(body, type="Warning", reason="RestoreFailed", message=message[:1024])
        return
    if builders.generates_bmc_account(spec):
        # Made once: an existing Secret (this VDC's, by its owner) keeps its password.
        # 20 characters: IPMI 2.0 takes no longer password (120 random bits).
        password = secrets.token_urlsafe(15)
        if await api.ensure(builders.build_bmc_secret(body, password)):
            logger.info("generated the BMCs' account in Secret %s",
                        builders.bmc_secret_name(meta["name"]))  # fmt: skip
    if spec.runners is not None:
        await _register_runners(api, body, spec.runners, patch, logger)
    # The account and the role at once. The binding needs the role, which the API server
    # reads to check that the operator may grant what it grants (404 without it); the pods
    # need only the account, so the binding is made beside them.
    await asyncio.gather(
        api.ensure(builders.build_service_account(body)),
        api.ensure(builders.build_role(body)),
    )
    binding = asyncio.ensure_future(api.ensure(builders.build_role_binding(body)))
    try:
        await _converge_pods(api, body, spec, memo, logger, labelled, storage)
    finally:
        await binding


async def _converge_pods(
    api: Api,
    body: Any,
    spec: cr.VirtualDataCenterSpec,
    memo: kopf.Memo,
    logger: logging.Logger,
    labelled: list[Any],
    storage: builders.Storage,
) -> None:
    meta = body["metadata"]
    namespace = meta["namespace"]
    desired = {
        p["metadata"]["name"]: p for p in builders.build_pods(body, spec, memo.settings, storage)
    }
    # (A pod still stopping may be an earlier VDC's of the same name.)
    if any(p["metadata"].get("deletionTimestamp") for p in labelled):
        raise kopf.TemporaryError("waiting for the previous pods to stop", delay=2)
    existing = {p["metadata"]["name"]: p for p in labelled if _owned_by(p, body)}
    stale = sorted(
        name for name, pod in existing.items()
        if name not in desired or _pod_hash(pod) != _pod_hash(desired[name])
    )  # fmt: skip
    if stale:
        message = (
            f"the spec changed (generation {meta.get('generation')}): replacing the"
            f" pod{'s' if len(stale) > 1 else ''}; the data center is rebuilt"
        )
        logger.info("%s", message)
        kopf.event(body, type="Normal", reason="Replacing", message=message)
        await _write_status(
            api,
            body,
            lambda vdc: builders.status_patch(vdc, Phase.PENDING, "PodReplacing", message),
        )
        for name in stale:
            await api.delete("Pod", namespace, name)
        # The old pod's runners used their single-use JIT configs: the new pod gets new ones.
        await _deregister_runners(api, body, spec.runners, logger, memo)
        await api.delete("Secret", namespace, builders.runners_secret_name(meta["name"]))
        raise kopf.TemporaryError("waiting for the previous pods to stop", delay=2)
    missing = {name: pod for name, pod in desired.items() if name not in existing}
    made = await asyncio.gather(*(api.ensure(manifest) for manifest in missing.values()))
    created = {name: missing[name] for name, new in zip(missing, made, strict=True) if new}
    if len(created) < len(missing):
        # There already, and not yet in the watch's view of the pods: the next attempt
        # compares it with the spec.
        raise kopf.TemporaryError("waiting for the pods' watch to show the VDC's pods", delay=1)
    if not created:
        return
    message = f"created pod{'s' if len(created) > 1 else ''} {', '.join(created)}"
    logger.info("%s", message)
    # One event for the VDC's pods: each is a request to the API.
    kopf.event(body, type="Normal", reason="PodCreated", message=message)
    by_group = {
        (p["metadata"].get("labels") or {}).get(builders.LABEL_GROUP): p for p in created.values()
    }
    # The status their first events would write, now.
    await _write_status(api, body, lambda vdc: builders.created_status(vdc, spec, by_group))


async def _labelled(memo: kopf.Memo, vdc: Any) -> list[Any]:
    """The pods labelled with the VDC's name (an earlier VDC's of that name included), as
    the pods' watch last showed them: where a list each time was a request per VDC created
    and one per two seconds of every deletion. Only once the watch has listed them all."""
    await memo.pods.synced.wait()
    meta = vdc["metadata"]
    return memo.pods.labelled(meta["namespace"], meta["name"])  # type: ignore[no-any-return]


def _owned_by(pod: Any, vdc: Any) -> bool:
    owners = pod["metadata"].get("ownerReferences") or []
    return any(o.get("uid") == vdc["metadata"].get("uid") for o in owners)


def _pod_hash(pod: Any) -> str | None:
    return (pod["metadata"].get("annotations") or {}).get(builders.ANNOTATION_HASH)


def _set_status(patch: kopf.Patch, **fields: Any) -> None:
    """Set status fields through the typed model: checked, and spelt as the CRD spells them
    (a field set to None is cleared by the merge patch)."""
    patch.status.update(VirtualDataCenterStatus(**fields).model_dump(exclude_unset=True))


async def _write_status(
    api: Api, body: Any, compute: Callable[[Any], dict[str, Any] | None]
) -> None:
    """Write a status that holds conditions, computed from the VDC as it is at the write.

    Not through kopf's patch: that is applied after the handler, from the object the
    handler started with and without a version, so it would undo conditions the agent
    (or the pod handler) wrote meanwhile, and they would undo it. See `update_vdc_status`:
    the first attempt computes from the VDC the handler got (no read), and a write since
    then is a conflict, after which it reads the VDC and computes again.
    """
    meta = body["metadata"]
    await api.update_vdc_status(meta["namespace"], meta["name"], compute, dict(body))


async def _runners_condition(api: Api, body: Any, status: str, reason: str, message: str) -> None:
    def conditions(vdc: Any) -> dict[str, Any]:
        found = builders.with_condition(vdc, RUNNERS_REGISTERED, status, reason, message)  # type: ignore[arg-type]
        return {"conditions": found}

    await _write_status(api, body, conditions)


async def _registration_waits(
    api: Api,
    body: Any,
    reason: str,
    message: str,
    *,
    delay: float,
    event: bool = False,
    metric: str | None = None,
) -> kopf.TemporaryError:
    """Why runner registration waits, said in the RunnersRegistered condition (and, when
    asked, an event and the GitHub outcomes metric); the handler raises what it returns."""
    await _runners_condition(api, body, "False", reason, message)
    if event:
        kopf.event(body, type="Warning", reason=reason, message=message[:1024])
    if metric is not None:
        metrics.GITHUB.labels(metric).inc()
    return kopf.TemporaryError(message, delay=delay)


async def _register_runners(
    api: Api, body: Any, spec: cr.Runners, patch: kopf.Patch, logger: logging.Logger
) -> None:
    """Register the VDC's runners with GitHub (JIT configs in the runners' Secret) before
    its pod, whose runner containers read them, is made."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    secret_name = builders.runners_secret_name(name)
    secret = await api.get_secret(namespace, secret_name)
    if secret is None:
        await api.ensure(builders.build_runners_secret(body))
        secret = await api.get_secret(namespace, secret_name)
    assert secret is not None
    label = github.vdc_label(namespace, name, meta["uid"])
    _set_status(patch, runner_label=label)
    if len(runners.registered(secret)) < spec.count:
        credentials = await api.secret_data(namespace, spec.credentials.secret_name)
        if credentials is None:
            message = f"waiting for Secret {spec.credentials.secret_name} (GitHub credentials)"
            raise await _registration_waits(api, body, "MissingCredentials", message, delay=10)
        try:
            gh = runners.client(spec, credentials)
        except ValueError as exc:
            message = f"Secret {spec.credentials.secret_name}: {exc}"
            raise await _registration_waits(
                api, body, "BadCredentials", message, delay=30, event=True
            ) from None
        try:
            registration = await runners.register(gh, body, spec, secret, api.patch_secret)
        except github.RateLimited as exc:
            delay = max(5.0, exc.retry_at - time.time())
            message = f"GitHub rate limit: retrying in {delay:.0f} s ({exc})"
            raise await _registration_waits(
                api, body, "RateLimited", message, delay=delay, metric="rate_limited"
            ) from None
        except github.GitHubError as exc:
            reason = "AuthFailed" if isinstance(exc, github.AuthFailed) else "GitHubError"
            message = f"registering runners at {spec.url}: {exc}"
            delay = 15 if exc.transient else 60
            raise await _registration_waits(
                api, body, reason, message, delay=delay, event=True, metric=reason
            ) from None
        finally:
            await gh.close()
        for runner_name in registration.created:
            kopf.event(body, type="Normal", reason="RunnerRegistered",
                       message=f"registered runner {runner_name} with labels {label}")  # fmt: skip
            metrics.GITHUB.labels("registered").inc()
    _set_status(patch, runners_registered=spec.count)
    message = f"{spec.count} runner(s) with label {label} at {spec.url}"
    await _runners_condition(api, body, "True", "Registered", message)


DEREGISTER_ATTEMPTS = 8
"""Then a VDC's deletion goes on without: GitHub drops offline ephemeral runners itself."""


def deregistration_retry(exc: github.GitHubError, failures: int, now: float) -> float | None:
    """How long kopf is to wait before it calls the handler again, after `failures`
    failed attempts to remove the runners (this one included), or None to give up:
    GitHub stays unreachable, or the error is not one that passes."""
    if not exc.transient or failures >= DEREGISTER_ATTEMPTS:
        return None
    if isinstance(exc, github.RateLimited):
        return max(5.0, exc.retry_at - now)
    return 15.0


async def _deregister_runners(
    api: Api, body: Any, spec: cr.Runners | None, logger: logging.Logger, memo: kopf.Memo
) -> None:
    """Remove the VDC's runners from GitHub; while GitHub cannot be reached, kopf retries
    the handler (the failures are counted in the object's memo: the handler's own retry
    count also counts its waits for the pod), then this gives up with a warning event."""
    if spec is None:
        return  # the credentials come with the spec: nothing was registered without one
    meta = body["metadata"]
    secret = await api.get_secret(meta["namespace"], builders.runners_secret_name(meta["name"]))
    if not runners.registered(secret):
        return
    credentials = await api.secret_data(meta["namespace"], spec.credentials.secret_name)
    if credentials is None:
        logger.warning("cannot remove the runners from GitHub: Secret %s is gone",
                       spec.credentials.secret_name)  # fmt: skip
        return
    gh = runners.client(spec, credentials)
    try:
        removed = await runners.deregister(gh, secret)
    except github.GitHubError as exc:
        memo.deregistration_failures = memo.get("deregistration_failures", 0) + 1
        delay = deregistration_retry(exc, memo.deregistration_failures, time.time())
        if delay is not None:
            raise kopf.TemporaryError(f"removing runners: {exc}", delay=delay) from None
        message = f"cannot remove the runners from GitHub, going on without: {exc}"
        logger.warning("%s", message)
        kopf.event(body, type="Warning", reason="RunnersNotRemoved", message=message[:1024])
        return
    finally:
        await gh.close()
    memo.deregistration_failures = 0
    if removed:
        logger.info("removed runners %s from GitHub", ", ".join(removed))


@kopf.timer(*RESOURCE, interval=5, when=lambda spec, **_: bool(spec.get("runners")))
async def jobs_done(
    body: Any, patch: kopf.Patch, logger: logging.Logger, memo: kopf.Memo, **_: Any
) -> None:
    """Delete the VDC once its runners' jobs are done and it has been kept as asked."""
    if body["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = cr.parse(dict(body.get("spec") or {})).runners
    except SpecErrors:
        return
    if spec is None:
        return
    status = body.get("status") or {}
    at = runners.deletion_time(spec, status)
    stamp = timestamp(at) if at is not None else None
    if stamp != status.get("deleteAt"):
        _set_status(patch, delete_at=stamp)
    if at is not None and time.time() >= at:
        meta = body["metadata"]
        kopf.event(body, type="Normal", reason="JobsDone",
                   message="every runner's job is done: deleting the VDC")  # fmt: skip
        logger.info("jobs done: deleting %s/%s", meta["namespace"], meta["name"])
        await memo.api.delete_vdc(meta["namespace"], meta["name"])


@kopf.on.create(*RESOURCE)
@kopf.on.resume(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def reconcile(
    body: Any,
    patch: kopf.Patch,
    logger: logging.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    with metrics.reconcile("reconcile"):
        await converge(body, patch, logger, memo, await _labelled(memo, body))


STOP_WAIT, STOP_POLL = 60.0, 0.2
"""How long `delete` follows its pods' stopping in the pods' watch before kopf retries it
(each retry is a write of kopf's progress to the VDC), and how often it looks."""


@kopf.on.delete(*RESOURCE)
async def delete(
    body: Any,
    logger: logging.Logger,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    """Stop the pod (its agent tears the data center down) and remove the agent's access,
    so `kubectl delete vdc` returns when nothing of it is left."""
    api: Api = memo.api
    with metrics.reconcile("delete"):
        meta = body["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        owned = [p for p in await _labelled(memo, body) if _owned_by(p, body)]
        running = [p for p in owned if not p["metadata"].get("deletionTimestamp")]
        if running:
            await _write_status(
                api,
                body,
                lambda vdc: builders.status_patch(
                    vdc, Phase.TERMINATING, "Deleting", "removing the pod"
                ),
            )
        for pod in running:
            await api.delete("Pod", namespace, pod["metadata"]["name"])
        deadline = time.monotonic() + STOP_WAIT
        while any(_owned_by(p, body) for p in await _labelled(memo, body)):
            if time.monotonic() > deadline:
                raise kopf.TemporaryError("waiting for the pods to stop", delay=2)
            await asyncio.sleep(STOP_POLL)
        try:
            spec = cr.parse(dict(body.get("spec") or {})).runners
        except SpecErrors:
            spec = None  # an object older than the webhook: nothing was registered for it
        await _deregister_runners(api, body, spec, logger, memo)
        agent = builders.agent_name(name)
        for kind in ("RoleBinding", "Role", "ServiceAccount"):
            await api.delete(kind, namespace, agent)
        if spec is not None:
            # Without runners there is none (a spec change that removes them removes it).
            await api.delete("Secret", namespace, builders.runners_secret_name(name))
        metrics.PHASES_SEEN.seen.pop((namespace, name), None)
        api.forget(namespace, name)
        logger.info("removed the pods and the agent's access")


# -- following the pod -------------------------------------------------------------------------


async def pod_changed(memo: kopf.Memo, kind: str, body: Manifest) -> None:
    """Say in the VDC what its pod shows while the agent cannot (scheduling, image pulls,
    crash loops, the agent restarting) and announce each restart of the agent, and bring a
    deleted pod back; for a group's pod, also its address, which the other groups' agents
    tunnel to. Called by the pods' watch (`pods_watch`) with the pod's newest state."""
    meta = body["metadata"]
    labels = meta["labels"]
    namespace, name = meta["namespace"], labels[builders.LABEL_NAME]
    group = labels.get(builders.LABEL_GROUP)
    if cr.KIND not in [o.get("kind") for o in meta["ownerReferences"]]:
        return
    with metrics.reconcile("pod"):
        api: Api = memo.api
        pod = None if kind == "DELETED" else body
        # A pod gone is read against the VDC as it is now: it may be brought back. So is
        # one whose VDC's events kopf has not shown yet (the operator has just started).
        vdc = None if pod is None else memo.vdcs.get((namespace, name))
        if vdc is None:
            vdc = await api.get_vdc(namespace, name)
        if vdc is None or vdc["metadata"].get("deletionTimestamp"):
            return
        try:
            spec = memo.specs.of(vdc)
        except SpecErrors:
            return
        if pod is None:
            if group not in builders.pod_groups(spec):
                return  # a pod of a layout the spec no longer has: converge replaces it
            await _recreate(api, vdc, spec, group, memo)
        if group is None:
            change = functools.partial(builders.pod_change, pod=pod)
        else:
            change = functools.partial(builders.group_pod_change, spec=spec, group=group, pod=pod)
        await _write_pod_change(api, vdc, change, memo.event_source)


async def _write_pod_change(
    api: Api, vdc: Any, change: Callable[[Any], builders.PodChange], source: Source
) -> None:
    """Write the status a pod's event makes, then post the events of the change that was
    written: a conflict computes it again from the newer VDC, which may have recorded them
    already (an earlier event of the same restart)."""
    made: list[builders.PodChange] = []

    def compute(now: Any) -> dict[str, Any] | None:
        made.append(change(now))
        return made[-1].status

    meta = vdc["metadata"]
    if await api.update_vdc_status(meta["namespace"], meta["name"], compute, vdc):
        for event in made[-1].events:
            await api.ensure(build_event(vdc, event.type, event.reason, event.message, source))


async def _recreate(
    api: Api,
    vdc: Any,
    spec: cr.VirtualDataCenterSpec,
    group: str | None,
    memo: kopf.Memo,
) -> None:
    meta = vdc["metadata"]
    pod_name = builders.pod_name(meta["name"], group)
    if await api.ensure(builders.build_pod(vdc, spec, memo.settings, group)):
        log.info("[%s/%s] recreated pod %s", meta["namespace"], meta["name"], pod_name)
        message = f"pod {pod_name} was gone; created it again"
        await api.ensure(build_event(vdc, "Warning", "PodRecreated", message, memo.event_source))


@kopf.on.event(*RESOURCE, when=lambda status, **_: bool(status.get("groups")))
async def groups_changed(body: Any, memo: kopf.Memo, **_: Any) -> None:
    """In a VDC of several groups, the status as a whole follows each group's."""
    if body["metadata"].get("deletionTimestamp"):
        return
    try:
        spec = memo.specs.of(body)
    except SpecErrors:
        return
    if len(builders.pod_groups(spec)) < 2:
        return
    meta = body["metadata"]
    await memo.api.update_vdc_status(
        meta["namespace"], meta["name"], lambda now: builders.merged_status(now, spec), body
    )


@kopf.on.event(*RESOURCE)
async def seen(body: Any, type: str | None, memo: kopf.Memo, **_: Any) -> None:
    """Every VDC as its watch last showed it: its phase for the metrics, and the VDC for its
    pods' events, which compute its status from this copy rather than read the VDC first
    (a read per pod event was a third of the operator's requests); a write from an
    outdated copy meets a conflict and reads then."""
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    if type == "DELETED":
        metrics.PHASES_SEEN.seen.pop(key, None)
        memo.vdcs.pop(key, None)
        if "diffbase" in memo:
            memo.diffbase.forget(body["metadata"].get("uid"))
    else:
        metrics.PHASES_SEEN.seen[key] = (body.get("status") or {}).get("phase") or Phase.PENDING
        memo.vdcs[key] = dict(body)
