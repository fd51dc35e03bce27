"""Pure builders of what the operator creates for one VirtualDataCenter: its pod, the pod's
ServiceAccount, Role and RoleBinding, and the status the operator writes around the pod.

Each takes the VDC object (as the API server returns it) and the operator's settings and
returns a manifest; nothing here talks to the API server, so every manifest is
golden-tested. Names are derived from the VDC's name alone, so a second creation attempt
(a duplicate event, an operator restart) finds the first object instead of making another.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import PurePosixPath
from typing import Any, Literal

from vdc_runtime import packing
from vdc_runtime.groups import group_of, group_order
from vdc_runtime.nodes.layout import memory_bytes
from vdc_runtime.resource import snapshots
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.spec import FileSource, PodSettings, VirtualDataCenterSpec
from vdc_runtime.resource.status import (
    READY,
    ConditionStatus,
    Phase,
    VirtualDataCenterStatus,
    condition,
    conditions_update,
)
from vdc_runtime.spec import strings
from vdc_runtime.spec.errors import SpecError, SpecErrors

Manifest = dict[str, Any]

LABEL_NAME = "vdc.dev/name"
LABEL_GROUP = "vdc.dev/group"
ANNOTATION_HASH = "vdc.dev/pod-hash"
ENV_ASSIGNMENT = "VDC_GROUP_ASSIGNMENT"
"""In each pod of a VDC with automatic groups: every member's group, as the operator packed
them (`packing.Assignment.to_json`); the agent applies it to the spec."""
AGENT_CONTAINER = "agent"
HOLDER_CONTAINER = "holder"
"""Runs the machines and apps for the agent, so that they outlive its container
(`vdc_runtime.holder`)."""
HOLDER_SOCKET = "/run/vdc/holder.sock"
SOURCES_DIR = "/etc/vdc/sources"
RUN_DIR, DATA_DIR, CACHE_DIR = "/run/vdc", "/var/lib/vdc", "/var/cache/vdc"
RUNNER_STATE_DIR = "/run/vdc-runners"
BMC_CREDENTIALS_DIR = "/etc/vdc/bmc"
RESTORE_DIR = "/var/lib/vdc-restore"
"""Where the claim of the snapshot a VDC starts from is mounted, when it is not the claim
the VDC keeps its own snapshots in."""
"""Shared by the agent and the runner containers: each runner's `vdc runner` state file."""
METRICS_PORT = 9090
MIB = 1 << 20


@dataclass(frozen=True)
class Settings:
    """The operator's configuration (Helm values, passed as VDC_* environment variables)."""

    runtime_image: str = "vdc.local/vdc-runtime:dev"
    image_pull_policy: str = "IfNotPresent"
    kvm_resource: str = ""
    """A device plugin's resource for /dev/kvm (e.g. devices.kubevirt.io/kvm); empty: the
    privileged pod uses the host's device."""
    tun_resource: str = ""
    cpu_allocation_ratio: float = 10.0
    """vCPUs per CPU requested, as KubeVirt's cpuAllocationRatio: a CI lab's guests idle."""
    cpu_overhead_milli: int = 100
    memory_overhead_mib: int = 192
    """The agent itself (Python, the BMCs, the image cache's work)."""
    node_memory_overhead_mib: int = 64
    """Each QEMU beyond its guest's RAM."""
    termination_grace_seconds: int = 60
    runner_image: str = "vdc.local/vdc-runner:dev"
    """The runner containers' image when a VDC names none (it must have `vdc`)."""
    snapshot_claim: str = ""
    """The PersistentVolumeClaim every VDC pod mounts, where its namespace has one of that
    name, to keep VirtualDataCenterSnapshots in (Helm value snapshots.claimName); a VDC's
    spec.pod.snapshotClaim replaces it. Empty: only VDCs that name one."""
    pod_limit_cpu: str = ""
    pod_limit_memory: str = ""
    """The most one pod of a VDC with `placement.groups: auto` may request (Helm value
    runtime.podLimit), as quantities; a VDC's placement.podLimit replaces either. Empty:
    no default."""

    def __post_init__(self) -> None:
        for name in ("pod_limit_cpu", "pod_limit_memory"):
            value = getattr(self, name)
            # Refused at start-up, not at the first auto VDC: the chart's value is wrong.
            if value and not strings.QUANTITY.accepts(value):
                raise ValueError(
                    f"VDC_{name.upper()}={value!r} is not a resource quantity (e.g. 8, 32Gi)"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"VDC_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(getattr(cls(), f.name))
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"VDC_{f.name.upper()}={raw!r} is not a {kind.__name__}") from None
        return cls(**values)


def pod_name(vdc_name: str, group: str | None = None) -> str:
    """The pod of a VDC, or of one of its groups when it has several."""
    return f"vdc-{vdc_name}" if group is None else f"vdc-{vdc_name}-{group}"


def overheads(settings: Settings) -> packing.Overheads:
    return packing.Overheads(
        pod_memory=settings.memory_overhead_mib * MIB,
        pod_milli=settings.cpu_overhead_milli,
        node_memory=settings.node_memory_overhead_mib * MIB,
        cpu_allocation_ratio=settings.cpu_allocation_ratio,
    )


def pod_limit(spec: VirtualDataCenterSpec, settings: Settings) -> packing.Limit | None:
    """The per-pod limit of automatic groups: each key of the spec's over the operator's;
    None when neither gives one."""
    own = spec.placement.pod_limit
    cpu = (own.cpu if own else None) or settings.pod_limit_cpu
    memory = (own.memory if own else None) or settings.pod_limit_memory
    if not cpu and not memory:
        return None
    return packing.Limit(
        memory=math.ceil(cr.quantity(memory)) if memory else None,
        milli=math.ceil(cr.quantity(cpu) * 1000) if cpu else None,
    )


def _machine(node: cr.CRNode) -> packing.Machine:
    networks = tuple(i.network for i in node.interfaces)
    return packing.Machine(node.name, memory_bytes(node.memory), node.cpus, networks)


def assignment(spec: VirtualDataCenterSpec, settings: Settings) -> packing.Assignment:
    """The automatic groups of a VDC with `placement.groups: auto`; SpecErrors (at the
    fields to change) when there is no limit or a machine can never fit under it."""
    limit = pod_limit(spec, settings)
    if limit is None:
        raise SpecErrors([_spec_error(
            "spec.placement.podLimit",
            "groups: auto needs a per-pod limit: give it here, or the operator a default"
            " (Helm value runtime.podLimit)",
        )])  # fmt: skip
    try:
        return packing.pack(
            [_machine(n) for n in spec.nodes],
            [packing.Namespace(ns.name, tuple(i.network for i in ns.interfaces))
             for ns in spec.network_namespaces],
            limit,
            overheads(settings),
            [n.name for n in spec.networks],
        )  # fmt: skip
    except packing.TooBig as exc:
        index = {n.name: i for i, n in enumerate(spec.nodes)}
        raise SpecErrors([
            _spec_error(f"spec.nodes[{index[name]}]", exc.message(name))
            for name, _ in exc.machines
        ]) from None  # fmt: skip


def _spec_error(path: str, message: str) -> SpecError:
    return SpecError(path, None, None, None, "", message)


def placed(spec: VirtualDataCenterSpec, settings: Settings) -> VirtualDataCenterSpec:
    """The spec as the operator builds it: with `placement.groups: auto`, each node and
    namespace in its automatic group and the groups declared (unchanged when everything
    fits one pod, which keeps the pod of a VDC without groups). Every builder below takes
    the spec this returns; SpecErrors as `assignment`."""
    if spec.placement.groups != "auto" or spec.groups:
        return spec  # manual, or placed already (a user's auto spec declares no groups)
    found = assignment(spec, settings)
    if len(found.groups) < 2:
        return spec
    return spec.model_copy(
        update={
            "nodes": [n.model_copy(update={"group": found.nodes[n.name]}) for n in spec.nodes],
            "network_namespaces": [
                ns.model_copy(update={"group": found.netns[ns.name]})
                for ns in spec.network_namespaces
            ],
            "groups": [cr.CRGroup(name=g) for g in found.groups],
        }
    )


def placed_assignment(spec: VirtualDataCenterSpec) -> packing.Assignment | None:
    """The automatic groups of a spec `placed` made, None for any other."""
    if spec.placement.groups != "auto" or not spec.groups:
        return None
    return packing.Assignment(
        groups=tuple(g.name for g in spec.groups),
        nodes={n.name: group_of(n.group) for n in spec.nodes},
        netns={ns.name: group_of(ns.group) for ns in spec.network_namespaces},
    )


def pod_groups(spec: VirtualDataCenterSpec) -> tuple[str | None, ...]:
    """The groups that get a pod each, or (None,) for a VDC in one pod: a VDC whose members
    are all in one group needs no tunnels, and keeps the pod name it always had. (For
    automatic groups, of the spec `placed` returns.)"""
    order = group_order(
        [m.group for m in [*spec.nodes, *spec.network_namespaces]], [g.name for g in spec.groups]
    )
    return (None,) if len(order) == 1 else order


def group_pod_settings(spec: VirtualDataCenterSpec, group: str | None) -> PodSettings:
    """spec.pod, with the keys the group's own `pod` gives replaced."""
    own = next((g.pod for g in spec.groups if g.name == group and g.pod is not None), None)
    if own is None:
        return spec.pod
    return spec.pod.model_copy(update={k: getattr(own, k) for k in own.model_fields_set})


def agent_name(vdc_name: str) -> str:
    """The ServiceAccount, Role and RoleBinding of the VDC's agent."""
    return f"vdc-{vdc_name}-agent"


def labels(vdc: Mapping[str, Any]) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "vdc",
        "app.kubernetes.io/component": "datacenter",
        "app.kubernetes.io/managed-by": "vdc-operator",
        LABEL_NAME: vdc["metadata"]["name"],
    }


def owner_reference(vdc: Mapping[str, Any]) -> dict[str, Any]:
    meta = vdc["metadata"]
    return {
        "apiVersion": cr.API_VERSION,
        "kind": cr.KIND,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(vdc: Mapping[str, Any], name: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": vdc["metadata"]["namespace"],
        "labels": labels(vdc),
        "ownerReferences": [owner_reference(vdc)],
    }


def build_service_account(vdc: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(vdc, agent_name(vdc["metadata"]["name"])),
    }


def build_role(vdc: Mapping[str, Any]) -> Manifest:
    """The agent may read its own VDC and write its own status, post events, and follow
    the namespace's snapshots (it saves its VDC's)."""
    name = vdc["metadata"]["name"]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(vdc, agent_name(name)),
        "rules": [
            {
                "apiGroups": [cr.GROUP],
                "resources": [cr.PLURAL],
                "resourceNames": [name],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [cr.GROUP],
                "resources": [f"{cr.PLURAL}/status"],
                "resourceNames": [name],
                "verbs": ["get", "patch"],
            },
            # Events are created under generated names: no resourceNames can limit that.
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            # Its snapshots (labelled with its name: a list cannot be limited by name) and
            # its part of their status.
            {
                "apiGroups": [cr.GROUP],
                "resources": [snapshots.PLURAL],
                "verbs": ["get", "list", "watch"],
            },
            {
                "apiGroups": [cr.GROUP],
                "resources": [f"{snapshots.PLURAL}/status"],
                "verbs": ["get", "patch"],
            },
        ],
    }


def build_role_binding(vdc: Mapping[str, Any]) -> Manifest:
    name = agent_name(vdc["metadata"]["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(vdc, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": name, "namespace": vdc["metadata"]["namespace"]}
        ],
    }


def source_path(source: FileSource) -> str | None:
    """Where the pod sees a ConfigMap's or Secret's key (None for other sources)."""
    if source.config_map_key_ref is not None:
        ref, kind = source.config_map_key_ref, "configmap"
    elif source.secret_key_ref is not None:
        ref, kind = source.secret_key_ref, "secret"
    else:
        return None
    return f"{kind}/{ref.name}/{ref.key}"


def referenced_keys(spec: VirtualDataCenterSpec) -> dict[tuple[str, str], set[str]]:
    """(configMap or secret, name) -> the keys of it that the spec names."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for source in cr.sources(spec):
        if source.config_map_key_ref is not None:
            ref = source.config_map_key_ref
            wanted.setdefault(("configMap", ref.name), set()).add(ref.key)
        elif source.secret_key_ref is not None:
            ref = source.secret_key_ref
            wanted.setdefault(("secret", ref.name), set()).add(ref.key)
    return wanted


def _sources_volume(spec: VirtualDataCenterSpec) -> dict[str, Any] | None:
    """One projected volume with every ConfigMap and Secret key the spec names."""
    wanted = referenced_keys(spec)
    if not wanted:
        return None
    projections = []
    for (kind, name), keys in sorted(wanted.items()):
        folder = "configmap" if kind == "configMap" else "secret"
        items = [{"key": k, "path": f"{folder}/{name}/{k}"} for k in sorted(keys)]
        projections.append({kind: {"name": name, "items": items}})
    return {"name": "sources", "projected": {"sources": projections, "defaultMode": 0o440}}


def _cache_volume(pod: PodSettings) -> dict[str, Any]:
    cache = pod.image_cache
    if cache is None or cache.empty_dir is not None:
        empty: dict[str, Any] = {}
        if cache is not None and cache.empty_dir is not None and cache.empty_dir.size_limit:
            empty["sizeLimit"] = cache.empty_dir.size_limit
        return {"name": "image-cache", "emptyDir": empty}
    if cache.persistent_volume_claim is not None:
        claim = cache.persistent_volume_claim.claim_name
        return {"name": "image-cache", "persistentVolumeClaim": {"claimName": claim}}
    assert cache.host_path is not None
    return {
        "name": "image-cache",
        "hostPath": {"path": cache.host_path.path, "type": "DirectoryOrCreate"},
    }


def requests(
    spec: VirtualDataCenterSpec, settings: Settings, group: str | None = None
) -> dict[str, str]:
    """CPU and memory for the pod: its nodes' vCPUs (over the allocation ratio) and RAM,
    plus QEMU's and the agent's own (as automatic groups count them: `packing.cost`); the
    spec (or the group) may override either."""
    nodes = [n for n in spec.nodes if group is None or group_of(n.group) == group]
    load = sum((_machine(n).load for n in nodes), packing.Load())
    found = packing.cost(load, overheads(settings))
    out = {"cpu": f"{found.milli}m", "memory": f"{found.memory // MIB}Mi"}
    overrides = group_pod_settings(spec, group).resources
    if overrides is not None:
        if overrides.cpu:
            out["cpu"] = overrides.cpu
        if overrides.memory:
            out["memory"] = overrides.memory
    return out


def split_requests(
    total: Mapping[str, str], settings: Settings
) -> tuple[dict[str, str], dict[str, str]]:
    """The pod's requests (`requests`) between its agent and its holder: the agent its own
    overhead, the holder the rest, its QEMUs' (the kernel charges a process's CPU and
    memory to the container it runs in, and weighs CPU between containers by request)."""
    milli = math.ceil(cr.quantity(total["cpu"]) * 1000)
    memory = math.ceil(cr.quantity(total["memory"]))
    agent_milli = min(settings.cpu_overhead_milli, milli)
    agent_memory = min(settings.memory_overhead_mib * MIB, memory)
    agent = {"cpu": f"{agent_milli}m", "memory": f"{agent_memory // MIB}Mi"}
    holder = {"cpu": f"{milli - agent_milli}m", "memory": f"{(memory - agent_memory) // MIB}Mi"}
    return agent, holder


def pod_requests(pod: Mapping[str, Any]) -> dict[str, str]:
    """What a pod requests in all (as the scheduler sums it), in millicores and MiB."""
    milli = memory = 0
    for container in pod["spec"]["containers"]:
        wanted = (container.get("resources") or {}).get("requests") or {}
        milli += math.ceil(cr.quantity(wanted.get("cpu", "0")) * 1000)
        memory += math.ceil(cr.quantity(wanted.get("memory", "0")))
    return {"cpu": f"{milli}m", "memory": f"{memory // MIB}Mi"}


def pod_hash(
    vdc: Mapping[str, Any], settings: Settings, groups: packing.Assignment | None = None
) -> str:
    """What the pod is made from: a change of it means the pod must be replaced. Automatic
    groups count too: the operator's limit may move a machine to another pod."""
    # Faults are applied in place by the agent, which follows the spec.
    basis: dict[str, Any] = {
        "spec": cr.rebuilt_from(vdc.get("spec")),
        "image": settings.runtime_image,
    }
    if groups is not None:
        basis["groups"] = groups.to_json()
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Restore:
    """Where the snapshot a VDC starts from (spec.restoreFrom) is: its claim, and each
    part's directory in it (`resource.snapshots.part_dir` / the snapshot's files)."""

    claim: str
    parts: Mapping[str, str]


@dataclass(frozen=True)
class Storage:
    """The claims a VDC's pods mount for snapshots, as the operator found them."""

    claim: str | None = None
    """Where its own snapshots are saved."""
    restore: Restore | None = None


def build_pods(
    vdc: Mapping[str, Any],
    spec: VirtualDataCenterSpec,
    settings: Settings,
    storage: Storage = Storage(),
) -> list[Manifest]:
    """The VDC's pods: one, or one per group (`spec` as `placed` returns it)."""
    return [build_pod(vdc, spec, settings, group, storage) for group in pod_groups(spec)]


def _snapshot_mounts(
    storage: Storage, part: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, mounts and the agent's environment for the snapshot claims."""
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    env: list[dict[str, Any]] = []
    if storage.claim is not None:
        volumes.append({"name": "snapshots", "persistentVolumeClaim": {"claimName": storage.claim}})
        mounts.append({"name": "snapshots", "mountPath": snapshots.SNAPSHOTS_DIR})
        env += [
            {"name": "VDC_SNAPSHOTS_DIR", "value": snapshots.SNAPSHOTS_DIR},
            {"name": "VDC_SNAPSHOTS_CLAIM", "value": storage.claim},
        ]
    restore = storage.restore
    if restore is not None:
        root = snapshots.SNAPSHOTS_DIR
        if restore.claim != storage.claim:
            root = RESTORE_DIR
            volumes.append({"name": "restore", "persistentVolumeClaim": {
                "claimName": restore.claim, "readOnly": True}})  # fmt: skip
            mounts.append({"name": "restore", "mountPath": RESTORE_DIR, "readOnly": True})
        where = PurePosixPath(root) / restore.parts[part]
        env += [
            {"name": "VDC_RESTORE", "value": where.name},
            {"name": "VDC_RESTORE_DIR", "value": str(where.parent)},
        ]
    return volumes, mounts, env


def build_pod(
    vdc: Mapping[str, Any],
    spec: VirtualDataCenterSpec,
    settings: Settings,
    group: str | None = None,
    storage: Storage = Storage(),
) -> Manifest:
    """The VDC's pod (or its `group`'s): the agent, privileged (it makes bridges,
    namespaces and QEMUs). `spec` as `placed` returns it."""
    meta = vdc["metadata"]
    auto = placed_assignment(spec)
    pod = group_pod_settings(spec, group)
    first = pod_groups(spec)[0]
    image = pod.image or settings.runtime_image
    limits: dict[str, str] = {}
    for resource in (settings.kvm_resource, settings.tun_resource):
        if resource:
            limits[resource] = "1"
    agent_requests, holder_requests = split_requests(requests(spec, settings, group), settings)
    # QEMU opens /dev/kvm and the taps' /dev/net/tun: the devices are the holder's.
    holder_resources: dict[str, Any] = {"requests": holder_requests}
    if limits:
        holder_resources["limits"] = limits
        holder_resources["requests"].update(limits)
    volumes: list[dict[str, Any]] = [
        {"name": "run", "emptyDir": {"medium": "Memory"}},
        {"name": "data", "emptyDir": {}},
        _cache_volume(pod),
    ]
    mounts = [
        {"name": "run", "mountPath": RUN_DIR},
        {"name": "data", "mountPath": DATA_DIR},
        {"name": "image-cache", "mountPath": CACHE_DIR},
    ]
    sources = _sources_volume(spec)
    if sources is not None:
        volumes.append(sources)
        mounts.append({"name": "sources", "mountPath": SOURCES_DIR, "readOnly": True})
    claim_volumes, claim_mounts, claim_env = _snapshot_mounts(storage, snapshots.part_name(group))
    volumes += claim_volumes
    mounts += claim_mounts
    bmc_volumes, bmc_mounts, bmc_env = _bmc_credentials(vdc, spec)
    volumes += bmc_volumes
    # Runners are the first group's (a job reaches every group's machines from there).
    runner_containers = _runner_containers(vdc, spec, settings) if group == first else []
    if runner_containers:
        volumes.append({"name": "runner-state", "emptyDir": {}})
        mounts.append({"name": "runner-state", "mountPath": RUNNER_STATE_DIR})

    def field_env(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    agent = {
        "name": AGENT_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["agent"] if group is None else ["agent", "--group", group],
        "env": [
            {"name": "VDC_NAME", "value": meta["name"]},
            field_env("VDC_NAMESPACE", "metadata.namespace"),
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
            {"name": "VDC_SOURCES_DIR", "value": SOURCES_DIR},
            {"name": "VDC_HOLDER_SOCKET", "value": HOLDER_SOCKET},
            {"name": "VDC_METRICS_PORT", "value": str(METRICS_PORT)},
            # The whole assignment, not the pod's part: the agent derives the stretched
            # networks and its peers from every group's members.
            *([{"name": ENV_ASSIGNMENT, "value": auto.to_json()}] if auto else []),
            *claim_env,
            *bmc_env,
        ],
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "resources": {"requests": agent_requests},
        "securityContext": {"privileged": True},
        "volumeMounts": mounts + bmc_mounts,
        # The agent serves /healthz once its machines start, which may follow long image
        # downloads: up to 30 minutes before liveness counts.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "failureThreshold": 180,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 20,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
    }
    # No probe: a holder restarted kills what it holds; it has nothing to fix that way.
    holder = {
        "name": HOLDER_CONTAINER,
        "image": image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["holder", "--socket", HOLDER_SOCKET],
        "resources": holder_resources,
        "securityContext": {"privileged": True},
        # The paths QEMU's arguments and the apps' commands name, as the agent sees them.
        "volumeMounts": [dict(m) for m in mounts if m["name"] != "runner-state"],
    }
    pod_spec: dict[str, Any] = {
        "serviceAccountName": agent_name(meta["name"]),
        "restartPolicy": "Always",
        "enableServiceLinks": False,
        # The agent watches, stops and adopts the holder's processes by pid.
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "containers": [agent, holder, *runner_containers],
        "volumes": volumes,
    }
    if pod.node_selector:
        pod_spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        pod_spec["tolerations"] = [
            t.model_dump(by_alias=False, exclude_none=True) for t in pod.tolerations
        ]
        for toleration in pod_spec["tolerations"]:
            if "toleration_seconds" in toleration:
                toleration["tolerationSeconds"] = toleration.pop("toleration_seconds")
    if pod.priority_class_name:
        pod_spec["priorityClassName"] = pod.priority_class_name
    metadata = _metadata(vdc, pod_name(meta["name"], group))
    if group is not None:
        metadata["labels"][LABEL_GROUP] = group
        # A data center's groups go to different nodes where they can: that is why it has
        # several; where they cannot, they still run.
        pod_spec["topologySpreadConstraints"] = [{
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {LABEL_NAME: meta["name"]}},
        }]  # fmt: skip
    metadata["annotations"] = {
        ANNOTATION_HASH: pod_hash(vdc, settings, auto),
        "kubectl.kubernetes.io/default-container": AGENT_CONTAINER,
    }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": pod_spec}


def runners_secret_name(vdc_name: str) -> str:
    """The Secret holding the runners' JIT configurations (see vdc_operator.runners)."""
    return f"vdc-{vdc_name}-runners"


def bmc_secret_name(vdc_name: str) -> str:
    """The Secret with the BMCs' generated account (keys `username`, `password`)."""
    return f"vdc-{vdc_name}-bmc"


def generates_bmc_account(spec: VirtualDataCenterSpec) -> bool:
    """A spec with machines but no BMC users gets a generated account, not Placemat's
    well-known one: published, the BMCs answer every pod of the cluster."""
    return bool(spec.nodes) and (spec.bmc is None or not spec.bmc.users)


def build_bmc_secret(vdc: Mapping[str, Any], password: str) -> Manifest:
    """`password`: random, made by the caller once (an existing Secret is kept)."""
    data = {"username": cr.GENERATED_BMC_USER, "password": password}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/basic-auth",
        "metadata": _metadata(vdc, bmc_secret_name(vdc["metadata"]["name"])),
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _bmc_credentials(
    vdc: Mapping[str, Any], spec: VirtualDataCenterSpec
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes, the agent's mounts and environment for the generated BMC account."""
    if not generates_bmc_account(spec):
        return [], [], []
    secret = bmc_secret_name(vdc["metadata"]["name"])
    volume = {"name": "bmc-credentials", "secret": {
        "secretName": secret, "items": [{"key": "password", "path": "password"}],
        "defaultMode": 0o400}}  # fmt: skip
    mount = {"name": "bmc-credentials", "mountPath": BMC_CREDENTIALS_DIR, "readOnly": True}
    env = [
        {"name": "VDC_BMC_PASSWORD_FILE", "value": f"{BMC_CREDENTIALS_DIR}/password"},
        {"name": "VDC_BMC_SECRET", "value": secret},
    ]
    return [volume], [mount], env


def _runner_bmc_env(vdc: Mapping[str, Any], spec: VirtualDataCenterSpec) -> list[dict[str, Any]]:
    """A job's way to the BMCs: the generated account, or none when the spec names users."""
    if not generates_bmc_account(spec):
        return []
    secret = bmc_secret_name(vdc["metadata"]["name"])
    return [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, key in (("VDC_BMC_USER", "username"), ("VDC_BMC_PASSWORD", "password"))
    ]


def build_runners_secret(vdc: Mapping[str, Any]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(vdc, runners_secret_name(vdc["metadata"]["name"])),
        "data": {},
    }


def _runner_containers(
    vdc: Mapping[str, Any], spec: VirtualDataCenterSpec, settings: Settings
) -> list[dict[str, Any]]:
    """One container per runner: `vdc runner` records its life for the agent and keeps the
    container alive after its single job, so the pod does not restart a used JIT runner."""
    runners = spec.runners
    if runners is None:
        return []
    secret = runners_secret_name(vdc["metadata"]["name"])
    containers = []
    for index in range(runners.count):
        name = f"runner-{index}"
        jit = "ACTIONS_RUNNER_INPUT_JITCONFIG"
        containers.append({
            "name": name,
            "image": runners.image or settings.runner_image,
            "imagePullPolicy": settings.image_pull_policy,
            "command": ["vdc", "runner", "--name", name, "--state-dir", RUNNER_STATE_DIR, "--",
                        *runners.command, "--jitconfig", f"$({jit})"],
            "env": [
                {"name": jit, "valueFrom": {"secretKeyRef": {"name": secret, "key": name}}},
                {"name": "VDC_NAME", "value": vdc["metadata"]["name"]},
                *_runner_bmc_env(vdc, spec),
            ],
            "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}},
            "volumeMounts": [{"name": "runner-state", "mountPath": RUNNER_STATE_DIR}],
        })  # fmt: skip
    return containers


# -- the status the operator writes ---------------------------------------------------------

_WAITING_FAILURES = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


def with_condition(
    vdc: Mapping[str, Any],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str = "",
    now: float | None = None,
) -> list[dict[str, Any]]:
    """The VDC's conditions with one set (its transition time kept if its status is)."""
    current = (vdc.get("status") or {}).get("conditions", [])
    generation = vdc["metadata"].get("generation")
    desired = [condition(type_, status, reason, message)]
    (updated,) = conditions_update(desired, current, generation, now)
    merged = {c["type"]: c for c in current}
    merged[type_] = updated.model_dump(exclude_none=True)
    return list(merged.values())


def status_patch(
    vdc: Mapping[str, Any], phase: Phase, reason: str, message: str, now: float | None = None
) -> dict[str, Any]:
    """The status the operator writes: a phase, its message, and the Ready condition (only
    the fields it sets: the body of a merge patch must not clear the agent's)."""
    status = VirtualDataCenterStatus(
        phase=phase,
        message=message,
        observed_generation=vdc["metadata"].get("generation"),
        conditions=with_condition(vdc, READY, "False", reason, message, now),  # type: ignore[arg-type]
    )
    return status.model_dump(exclude_unset=True, exclude_none=True)


PodVerdict = tuple[Phase, str, str]
"""(phase, reason, message) that a pod alone tells."""


def _agent_container(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    """The agent container's entry of the pod's containerStatuses (None before the kubelet
    has made one)."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((c for c in statuses if c.get("name") == AGENT_CONTAINER), None)


def _exit(terminated: Mapping[str, Any], at: bool = False) -> str:
    """A container's exit as people read it: `OOMKilled, exit code 137, signal 9`."""
    parts = [terminated["reason"]] if terminated.get("reason") else []
    parts.append(f"exit code {terminated.get('exitCode', '?')}")
    if terminated.get("signal"):
        parts.append(f"signal {terminated['signal']}")
    if at and terminated.get("finishedAt"):
        parts.append(f"at {terminated['finishedAt']}")
    return ", ".join(parts)


def _agent_gone(agent: Mapping[str, Any]) -> str:
    state = agent.get("state") or {}
    # The exit that stopped it: the current state until the kubelet starts it again, then
    # the last one.
    ended = state.get("terminated") or (agent.get("lastState") or {}).get("terminated")
    detail = [f"last exit: {_exit(ended)}"] if ended else []
    waiting = state.get("waiting") or {}
    if waiting.get("reason") in _WAITING_FAILURES:
        message = waiting.get("message")
        detail.append(f"{waiting['reason']}: {message}" if message else waiting["reason"])
    return "the agent is restarting" + (f" ({'; '.join(detail)})" if detail else "")


def pod_verdict(pod: Mapping[str, Any] | None, reported_phase: str | None) -> PodVerdict | None:
    """What the pod shows, or None while its agent reports (`reported_phase` is what the
    status says now).

    The agent owns the status once its container runs; before that (scheduling, image
    pulls), when it cannot run (crash loop, pod failed) and while it restarts after it
    reported a running data center, only the pod can say why.
    """
    if pod is None:
        return Phase.PENDING, "PodCreating", "creating the pod"
    if pod["metadata"].get("deletionTimestamp"):
        return Phase.PENDING, "PodReplacing", "the pod is being replaced"
    pod_status_ = pod.get("status") or {}
    phase = pod_status_.get("phase")
    if phase in ("Failed", "Succeeded"):
        why = pod_status_.get("message") or pod_status_.get("reason") or f"the pod {phase.lower()}"
        return Phase.FAILED, "PodFailed", why
    agent = _agent_container(pod)
    if phase == "Pending" or agent is None:
        for cond in pod_status_.get("conditions", []):
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                return Phase.PENDING, cond.get("reason") or "Unschedulable", cond.get("message", "")
        waiting = (agent or {}).get("state", {}).get("waiting") or {}
        if waiting.get("reason") in _WAITING_FAILURES:
            return Phase.PENDING, waiting["reason"], waiting.get("message", "")
        if reported_phase in (None, Phase.PENDING):
            return Phase.PENDING, "PodStarting", "the pod is starting"
        if agent is None:
            return None
    state = agent.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") == "CrashLoopBackOff":
        last = agent.get("lastState", {}).get("terminated") or {}
        detail = last.get("message") or f"exit code {last.get('exitCode', '?')}"
        return Phase.FAILED, "CrashLoopBackOff", f"the agent keeps exiting: {detail}"
    # Its container's state, not its readiness: a new agent runs (and may have reported
    # Running already) before its probes pass, and a late event of that pod must not undo
    # its report. Only a data center that ran is degraded: one still being built is
    # Provisioning either way, and its new agent says so.
    if reported_phase in (Phase.RUNNING, Phase.DEGRADED) and (
        "waiting" in state or "terminated" in state
    ):
        return Phase.DEGRADED, "AgentRestarting", _agent_gone(agent)
    return None


@dataclass(frozen=True)
class VdcEvent:
    """An event the operator posts on the VDC."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class PodChange:
    """What a pod's event makes the operator do: write `status` (None: nothing to write),
    then post `events`, which that write records (so a retried or repeated event, or an
    operator restart, finds them recorded and posts nothing)."""

    status: dict[str, Any] | None
    events: tuple[VdcEvent, ...] = ()


def agent_restarts(
    pod: Mapping[str, Any] | None, announced: int | None
) -> tuple[int | None, tuple[VdcEvent, ...]]:
    """The agent container's restart count to record in the status, where `announced` is
    the one recorded now, and an AgentRestarted event when it grew.

    The count belongs to one pod, and a replacement has the same name (names follow from
    the VDC's), so the name cannot tell them apart; rather than keep the pod's uid too, the
    count is cleared when the pod is seen going, and a count lower than the recorded one is
    a new pod whose predecessor's end the operator did not see (it was down): the new
    pod's count is recorded as it is, announcing nothing. So is the first count seen (a
    VDC from before the count was recorded): its restarts are not news.
    """
    if pod is None or pod["metadata"].get("deletionTimestamp"):
        return None, ()
    agent = _agent_container(pod)
    if agent is None:
        return announced, ()
    count = int(agent.get("restartCount") or 0)
    if announced is None or count <= announced:
        return count, ()
    message = f"agent of pod {pod['metadata']['name']} restarted (restart {count})"
    last = (agent.get("lastState") or {}).get("terminated")
    if last:
        message += f"; it had exited: {_exit(last, at=True)}"
    return count, (VdcEvent("Warning", "AgentRestarted", message),)


def pod_status(
    vdc: Mapping[str, Any], pod: Mapping[str, Any] | None, now: float | None = None
) -> dict[str, Any] | None:
    """The status to write for what the VDC's one pod shows, or None while the agent
    reports."""
    status = vdc.get("status") or {}
    if vdc["metadata"].get("deletionTimestamp"):
        return status_patch(vdc, Phase.TERMINATING, "Deleting", "removing the pod", now)
    verdict = pod_verdict(pod, status.get("phase"))
    return None if verdict is None else status_patch(vdc, *verdict, now)


def pod_change(
    vdc: Mapping[str, Any], pod: Mapping[str, Any] | None, now: float | None = None
) -> PodChange:
    """An event of the VDC's one pod: `pod_status`, and the agent's restarts recorded in
    the same write as their event."""
    status = pod_status(vdc, pod, now) or {}
    announced = (vdc.get("status") or {}).get("agentRestarts")
    count, events = agent_restarts(pod, announced)
    if count != announced:
        status["agentRestarts"] = count  # None clears it (a merge patch)
    return PodChange(status or None, events)


def group_pod_status(
    vdc: Mapping[str, Any], group: str, pod: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """For a VDC of several groups: the group's pod and address (where the other groups'
    agents tunnel to) and, while its agent does not report, what the pod shows; written
    under the group's own key, so it never touches another group's."""
    current = ((vdc.get("status") or {}).get("groups") or {}).get(group) or {}
    entry: dict[str, Any] = {
        "pod": pod["metadata"]["name"] if pod is not None else None,
        "podIP": ((pod or {}).get("status") or {}).get("podIP"),
    }
    if pod is not None and pod["metadata"].get("deletionTimestamp"):
        entry["podIP"] = None  # going: its address is no peer's any more
    count, _ = agent_restarts(pod, current.get("agentRestarts"))
    if count != current.get("agentRestarts"):
        entry["agentRestarts"] = count
    verdict = pod_verdict(pod, current.get("phase"))
    if verdict is not None:
        entry["phase"], _, entry["message"] = verdict
    if all(current.get(k) == v for k, v in entry.items()):
        return None
    return {"groups": {group: entry}}


def group_pod_and_merged_status(
    vdc: Mapping[str, Any],
    spec: VirtualDataCenterSpec,
    group: str,
    pod: Mapping[str, Any] | None,
    now: float | None = None,
) -> dict[str, Any] | None:
    """A group's pod changed: its part (`group_pod_status`) and the whole status it makes
    (`merged_status`) in one write, where two would each wake every watcher of the VDC;
    None when the group's part is as it was (the whole then follows other writers)."""
    own = group_pod_status(vdc, group, pod)
    if own is None:
        return None
    status = dict(vdc.get("status") or {})
    parts = dict(status.get("groups") or {})
    parts[group] = {**(parts.get(group) or {}), **own["groups"][group]}
    after = {**vdc, "status": {**status, "groups": parts}}
    return {**(merged_status(after, spec, now) or {}), **own}


def group_pod_change(
    vdc: Mapping[str, Any],
    spec: VirtualDataCenterSpec,
    group: str,
    pod: Mapping[str, Any] | None,
    now: float | None = None,
) -> PodChange:
    """An event of a group's pod: `group_pod_and_merged_status`, whose part of the group
    records the agent's restarts (`agent_restarts`), and their event."""
    current = ((vdc.get("status") or {}).get("groups") or {}).get(group) or {}
    _, events = agent_restarts(pod, current.get("agentRestarts"))
    return PodChange(group_pod_and_merged_status(vdc, spec, group, pod, now), events)


BEFORE_PODS = ("PodCreating", "PodReplacing", "MissingSource", "Waiting")
"""The reasons of the Ready condition the operator gives before the VDC's pods exist."""


def created_status(
    vdc: Mapping[str, Any],
    spec: VirtualDataCenterSpec,
    pods: Mapping[str | None, Mapping[str, Any]],
    now: float | None = None,
) -> dict[str, Any] | None:
    """The status for the pods just created (by group; None: the VDC's one pod), written
    with their creation: their first events then find it said and write nothing.

    Only where no pod's event has spoken yet, which may come first: a group whose entry
    names no pod, a single pod's VDC whose status is still the operator's own of before
    its pod (it would undo, say, an Unschedulable the pod's event wrote)."""
    if vdc["metadata"].get("deletionTimestamp") or not pods:
        return None
    status = vdc.get("status") or {}
    if None in pods:
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == READY), {})
        if status.get("phase") is not None and ready.get("reason") not in BEFORE_PODS:
            return None
        return pod_status(vdc, pods[None], now)
    parts = status.get("groups") or {}
    written: dict[str, Any] = {}
    for group, pod in pods.items():
        if group is None or (parts.get(group) or {}).get("pod"):
            continue
        change = group_pod_and_merged_status(vdc, spec, group, pod, now)
        if change is None:
            continue
        groups = {**written.get("groups", {}), **change["groups"]}
        written = {**change, "groups": groups}
        current = dict(vdc.get("status") or {})
        merged_parts = dict(current.get("groups") or {})
        merged_parts[group] = {**(merged_parts.get(group) or {}), **change["groups"][group]}
        vdc = {**vdc, "status": {**current, **change, "groups": merged_parts}}
    return written or None


def merged_status(
    vdc: Mapping[str, Any], spec: VirtualDataCenterSpec, now: float | None = None
) -> dict[str, Any] | None:
    """For a VDC of several groups: its status as a whole, from each group's.

    Ready when every group runs; Degraded when a group that ran is not running any more
    (its pod was lost and is coming back), so users see that part of the lab is missing.
    """
    names = [g for g in pod_groups(spec) if g is not None]
    if not names or vdc["metadata"].get("deletionTimestamp"):
        return None
    status = vdc.get("status") or {}
    parts = status.get("groups") or {}
    nodes: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    ready = running = 0
    failed: list[str] = []
    waiting: list[str] = []
    accel = set()
    for name in names:
        part = parts.get(name) or {}
        nodes += [{**n, "group": name} for n in part.get("nodes") or []]
        faults += [{**f, "group": name} for f in part.get("faults") or []]
        ready += part.get("readyNodes") or 0
        if part.get("accel"):
            accel.add(part["accel"])
        phase = part.get("phase")
        message = part.get("message") or phase or "no pod yet"
        if phase == Phase.RUNNING:
            running += 1
        elif phase == Phase.FAILED:
            failed.append(f"group {name}: {message}")
        else:
            waiting.append(f"group {name}: {message}")
    total = len(spec.nodes)
    if failed:
        verdict: PodVerdict = (Phase.FAILED, "GroupFailed", "; ".join(failed))
    elif not waiting:
        verdict = (Phase.RUNNING, "Running", f"{ready} nodes ready in {len(names)} groups")
    elif status.get("phase") in (Phase.RUNNING, Phase.DEGRADED):
        verdict = (Phase.DEGRADED, "GroupNotRunning", "; ".join(waiting))
    else:
        verdict = (
            Phase.PROVISIONING if running or ready else Phase.PENDING,
            "GroupsStarting",
            "; ".join(waiting),
        )
    phase, reason, message = verdict
    merged = VirtualDataCenterStatus(
        phase=phase,
        message=message,
        observed_generation=vdc["metadata"].get("generation"),
        ready=f"{ready}/{total}",
        ready_nodes=ready,
        total_nodes=total,
        ready_groups=f"{running}/{len(names)}",
        accel=("TCG" if "TCG" in accel else "KVM") if accel else None,
        nodes=nodes,  # type: ignore[arg-type]
        faults=faults,  # type: ignore[arg-type]
        conditions=with_condition(  # type: ignore[arg-type]
            vdc, READY, "True" if phase == Phase.RUNNING else "False", reason, message, now
        ),
    )
    return merged.model_dump(exclude_unset=True, exclude_none=True)


__all__ = [
    "ANNOTATION_HASH",
    "ENV_ASSIGNMENT",
    "LABEL_NAME",
    "PodChange",
    "Restore",
    "Settings",
    "Storage",
    "VdcEvent",
    "agent_name",
    "agent_restarts",
    "assignment",
    "bmc_secret_name",
    "build_bmc_secret",
    "build_pod",
    "build_pods",
    "build_role",
    "build_role_binding",
    "build_runners_secret",
    "build_service_account",
    "created_status",
    "generates_bmc_account",
    "group_pod_and_merged_status",
    "group_pod_change",
    "group_pod_status",
    "labels",
    "merged_status",
    "overheads",
    "owner_reference",
    "placed",
    "placed_assignment",
    "pod_change",
    "pod_groups",
    "pod_hash",
    "pod_limit",
    "pod_name",
    "pod_status",
    "pod_verdict",
    "referenced_keys",
    "requests",
    "runners_secret_name",
    "source_path",
    "status_patch",
    "with_condition",
]
