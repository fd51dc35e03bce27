"""The VirtualDataCenter custom resource's spec, read with the same models as Placemat YAML.

A CR's keys are camelCase, Kubernetes' convention, where Placemat's files are kebab-case:
both are spellings of the same models' fields (`keys.rename` maps one onto the other), so
the same rules check both and errors name the key as the user wrote it
(`spec.nodes[2].smp.maxcpus`). Where a file spec names a file on the host, a CR gives a
`FileSource`: the content inline, a key of a ConfigMap or Secret (which the operator
mounts into the VDC pod), or an Image of the spec (downloaded in the pod like disk images).

`parse` checks one CR spec on its own; `load` turns it into the `DataCenter` the runtime
builds, with every file resolved by the caller (the operator resolves them to placeholders
to validate, the agent in the pod to real files).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from vdc_runtime.resource.base import ApiSpecModel, camel
from vdc_runtime.resource.github_url import URL_HELP, parse_github_url
from vdc_runtime.spec import cel, strings
from vdc_runtime.spec.checks import Document, check
from vdc_runtime.spec.errors import SpecError, SpecErrors, did_you_mean, format_path
from vdc_runtime.spec.faults import FaultKind
from vdc_runtime.spec.fields import GroupName, Name, Text, ruled_str
from vdc_runtime.spec.keys import locate, rename
from vdc_runtime.spec.loader import assemble, pydantic_problem
from vdc_runtime.spec.models import (
    BMC,
    BMCTLS,
    KINDS,
    MAX_QUEUES,
    BMCPublish,
    BMCRole,
    BMCUser,
    DataCenter,
    DeviceClass,
    Group,
    HostPathVolume,
    Image,
    ImageVolume,
    LocaldsVolume,
    Network,
    NetworkNamespace,
    Node,
    NodeInterface,
    RawVolume,
    SpecModel,
)

GROUP = "vdc.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "VirtualDataCenter"
PLURAL = "virtualdatacenters"
SINGULAR = "virtualdatacenter"
SHORT_NAMES = ("vdc",)

VDC_NAME_MAX = 52
"""A VDC's name is part of its pod's and Role's names (`vdc-<name>-...`) and of label
values, which Kubernetes caps at 63 characters."""
INLINE_MAX = 262144
"""An inline file's size cap: a whole CR must stay well under etcd's 1.5 MiB object limit."""


def _error(kind: str, template: str, **context: object) -> PydanticCustomError:
    return PydanticCustomError(kind, template, context)


ObjectName = ruled_str(
    strings.OBJECT_NAME,
    "'{value}' is not a Kubernetes object name (lower-case letters, digits, '-' and"
    " '.', starting and ending with a letter or digit, at most 253 characters)",
)
"""The name of a ConfigMap or Secret in the VDC's namespace."""

DataKey = ruled_str(
    strings.DATA_KEY,
    "'{value}' is not a ConfigMap or Secret key (letters, digits, '-', '_' and '.';"
    " not '.', not starting with '..')",
)


class KeyRef(ApiSpecModel):
    """One key of a ConfigMap or Secret in the VDC's namespace."""

    name: ObjectName
    key: DataKey


_SOURCE = cel.exactly_one("inline", "configMapKeyRef", "secretKeyRef", "image")


class FileSource(ApiSpecModel):
    """Where a file's content comes from: exactly one of these."""

    cel_rules: ClassVar = (_SOURCE,)

    inline: Annotated[Text, Field(max_length=INLINE_MAX)] | None = Field(
        default=None, description="The content itself."
    )
    config_map_key_ref: KeyRef | None = None
    secret_key_ref: KeyRef | None = None
    image: Name | None = Field(
        default=None,
        description="An Image of spec.images, downloaded (and decompressed) in the pod;"
        " for kernels and other files too large for a ConfigMap.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> FileSource:
        given = [k for k in _SOURCE_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            names = ", ".join(camel(k) for k in _SOURCE_KEYS)
            raise _error("file_source", "give exactly one of: {names}", names=names)
        return self

    @property
    def describe(self) -> str:
        if self.config_map_key_ref is not None:
            return f"ConfigMap {self.config_map_key_ref.name} key {self.config_map_key_ref.key}"
        if self.secret_key_ref is not None:
            return f"Secret {self.secret_key_ref.name} key {self.secret_key_ref.key}"
        if self.image is not None:
            return f"image {self.image}"
        return "inline content"


_SOURCE_KEYS = ("inline", "config_map_key_ref", "secret_key_ref", "image")


class CRNetworkNamespace(NetworkNamespace):
    """A named network namespace acting as a router or host, wired to networks by veth pairs."""

    init_scripts: Annotated[list[FileSource], Field(max_length=32)] = Field(
        default=[], description="Run in order once the namespace is wired, before its apps."
    )


class CRLocaldsVolume(LocaldsVolume):
    """A cloud-init NoCloud seed disk."""

    user_data: FileSource
    network_config: FileSource | None = None


CRVolume = Annotated[
    ImageVolume | CRLocaldsVolume | RawVolume | HostPathVolume, Field(discriminator="kind")
]


_CPUS = "(has(self.cpu) ? self.cpu : (has(self.smp) ? self.smp.cpus : 1))"


class CRNode(Node):
    """A QEMU virtual machine."""

    cel_rules: ClassVar = (
        cel.Rule("has(self.cpu) || has(self.smp)", "one of 'cpu' or 'smp' is required"),
        cel.Rule(
            "!(has(self.cpu) && has(self.smp))",
            "'cpu' and 'smp' are exclusive; give only one",
            ".smp",
        ),
        cel.Rule(
            "!has(self.initrd) || has(self.kernel)",
            "'initrd' is only used with 'kernel' (direct boot)",
            ".initrd",
        ),
        cel.Rule(
            "!has(self.cmdline) || has(self.kernel)",
            "'cmdline' is only used with 'kernel' (direct boot)",
            ".cmdline",
        ),
        cel.Rule(
            f"!has(self.numa) || !has(self.numa.nodes) || self.numa.nodes == 0"
            f" || {_CPUS} % self.numa.nodes == 0",
            "the vCPUs cannot be split evenly over this many NUMA nodes",
            ".numa.nodes",
        ),
        cel.Rule(
            "!has(self.uefiSecureBoot) || !self.uefiSecureBoot || (has(self.uefi) && self.uefi)",
            "Secure Boot needs UEFI firmware (uefi: true)",
            ".uefiSecureBoot",
        ),
        cel.Rule(
            "!has(self.uefiSecureBoot) || !self.uefiSecureBoot"
            " || (has(self.machine) && self.machine == 'q35')",
            "Secure Boot needs machine: q35 (SMM)",
            ".uefiSecureBoot",
        ),
        cel.Rule(
            "!has(self.tpm) || !self.tpm || !self.name.contains(',')",
            "a node with tpm: true cannot have ',' in its name",
            ".name",
        ),
        cel.Rule(
            f"!has(self.networkDeviceQueue) || self.networkDeviceQueue <= {MAX_QUEUES}",
            f"a tap has at most {MAX_QUEUES} queues",
            ".networkDeviceQueue",
        ),
    )

    interfaces: Annotated[list[NodeInterface], Field(max_length=28)] = []
    volumes: Annotated[list[CRVolume], Field(max_length=32)] = []
    ignition: FileSource | None = None
    kernel: FileSource | None = Field(default=None, description="Boot this kernel directly.")
    initrd: FileSource | None = Field(default=None, description="Only with kernel.")


class CRBMCUser(ApiSpecModel):
    """An account on every BMC of the data center (IPMI and Redfish)."""

    cel_rules: ClassVar = (cel.exactly_one("password", "passwordSecretRef"),)

    name: Name
    password: Text | None = Field(
        default=None, description="Prefer passwordSecretRef: a CR is readable by many."
    )
    password_secret_ref: KeyRef | None = None
    role: BMCRole = "Administrator"

    @model_validator(mode="after")
    def _one_password(self) -> CRBMCUser:
        if (self.password is None) == (self.password_secret_ref is None):
            raise _error("password", "give exactly one of 'password' or 'passwordSecretRef'")
        return self


class CRBMCTLS(ApiSpecModel):
    """A kubernetes.io/tls Secret (keys tls.crt and tls.key) for every BMC's HTTPS."""

    secret_name: ObjectName


GENERATED_BMC_USER = "admin"
"""The account the operator makes a password for when a VDC's spec names no BMC users."""


class CRBMC(ApiSpecModel):
    """Settings shared by the BMCs of all nodes.

    Without users, Placemat's account (cybozu / cybozu) is kept so its scripts work.
    """

    users: Annotated[list[CRBMCUser], Field(max_length=16)] = []
    tls: CRBMCTLS | None = None
    publish: BMCPublish | None = None


RelativePath = ruled_str(
    strings.RELATIVE_PATH,
    "'{value}' must be a relative path inside the working directory (no leading '/',"
    " no '..'); its names are joined by single '/' and none is '.'",
)


class ExtraFile(FileSource):
    """A file written into the working directory where apps and init scripts run."""

    path: RelativePath
    executable: StrictBool = False


K8sText = Annotated[Text, Field(max_length=strings.DNS_SUBDOMAIN_MAX)]


class Toleration(ApiSpecModel):
    """As a pod's toleration."""

    key: K8sText | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: K8sText | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: StrictInt | None = None


Quantity = ruled_str(
    strings.QUANTITY, "'{value}' is not a resource quantity (e.g. 500m, 2, 1.5, 4Gi)"
)
"""A Kubernetes resource quantity (`500m`, `2Gi`)."""

_QUANTITY_PARTS = re.compile(r"([0-9.]+)([a-zA-Z]*)")
_QUANTITY_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1),
    "m": Fraction(1, 1000),
    **{s: Fraction(1000**i) for i, s in enumerate("kMGTPE", 1)},
    **{f"{s}i": Fraction(1024**i) for i, s in enumerate("KMGTPE", 1)},
}


def quantity(text: str) -> Fraction:
    """The value of a Quantity, exactly (`1.5Gi` -> 1610612736, `500m` -> 1/2); ValueError
    for anything else."""
    match = _QUANTITY_PARTS.fullmatch(text) if strings.QUANTITY.accepts(text) else None
    if match is None:
        raise ValueError(f"{text!r} is not a resource quantity (e.g. 500m, 2, 1.5, 4Gi)")
    number, suffix = match.groups()
    return Fraction(number) * _QUANTITY_SUFFIXES[suffix]


class EmptyDirCache(ApiSpecModel):
    size_limit: Quantity | None = None


class ClaimCache(ApiSpecModel):
    claim_name: ObjectName


HostDirectory = ruled_str(
    strings.HOST_DIRECTORY, "'{value}' is not an absolute path on the node (other than '/')"
)


class HostPathCache(ApiSpecModel):
    path: HostDirectory


class ImageCache(ApiSpecModel):
    """Where the pod keeps downloaded images: exactly one (default: an emptyDir)."""

    cel_rules: ClassVar = (cel.exactly_one("emptyDir", "persistentVolumeClaim", "hostPath"),)

    empty_dir: EmptyDirCache | None = None
    persistent_volume_claim: ClaimCache | None = None
    host_path: HostPathCache | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageCache:
        given = [
            k for k in ("empty_dir", "persistent_volume_claim", "host_path") if getattr(self, k)
        ]
        if len(given) != 1:
            raise _error(
                "image_cache", "give exactly one of: emptyDir, persistentVolumeClaim, hostPath"
            )
        return self


_LIMIT_HELP = "give cpu, memory or both"
_LIMIT_ONLY_AUTO = "podLimit is only used with groups: auto"


class PodResources(ApiSpecModel):
    """Override the requests computed from the nodes (their vCPUs and memory plus overhead)."""

    cpu: Quantity | None = None
    memory: Quantity | None = None


class PodSettings(ApiSpecModel):
    """How the VDC's pod is scheduled and what it mounts."""

    image: Annotated[Text, Field(min_length=1, max_length=512)] | None = Field(
        default=None, description="The runtime image; default: the operator's."
    )
    node_selector: dict[str, K8sText] = {}
    tolerations: Annotated[list[Toleration], Field(max_length=32)] = []
    priority_class_name: ObjectName | None = None
    image_cache: ImageCache | None = None
    resources: PodResources | None = None
    snapshot_claim: ObjectName | None = Field(
        default=None,
        description="A PersistentVolumeClaim of this namespace the pod mounts to keep"
        " VirtualDataCenterSnapshots of this VDC in; default: the operator's"
        " (the Helm chart's snapshots.claimName), where this namespace has it.",
    )


class CRGroup(ApiSpecModel):
    """A part of the data center with a pod of its own; nodes and network namespaces join it
    with `group: NAME`, and networks used in several groups are stretched between them."""

    name: GroupName
    pod: PodSettings | None = Field(
        default=None,
        description="This group's pod: the keys given here replace those of spec.pod.",
    )


class PodLimit(ApiSpecModel):
    """The most one pod may request: more than a cluster node can give, and the pod is
    never scheduled."""

    cel_rules: ClassVar = (cel.Rule("has(self.cpu) || has(self.memory)", _LIMIT_HELP),)

    cpu: Quantity | None = None
    memory: Quantity | None = None

    @model_validator(mode="after")
    def _something(self) -> PodLimit:
        if self.cpu is None and self.memory is None:
            raise _error("pod_limit", _LIMIT_HELP)
        return self


class Placement(ApiSpecModel):
    """How the nodes and network namespaces are split over pods.

    `manual`: as their `group` keys and spec.groups say (one pod when they name none).
    `auto`: the operator packs the machines into as few pods as fit under podLimit, the
    groups `auto-1`, `auto-2`, ...; no node or namespace names a group then, and
    spec.groups stays empty. Automatic groups are this field rather than `groups: auto` in
    place of spec.groups' list because a CRD's structural schema gives each field one
    type: spec.groups cannot be a list and also the string `auto`.
    """

    cel_rules: ClassVar = (
        cel.Rule(
            "!has(self.podLimit) || (has(self.groups) && self.groups == 'auto')",
            _LIMIT_ONLY_AUTO,
            ".podLimit",
        ),
    )

    groups: Literal["manual", "auto"] = Field(
        default="manual",
        description="manual: the groups the nodes and namespaces name; auto: as few pods as"
        " fit under podLimit.",
    )
    pod_limit: PodLimit | None = Field(
        default=None,
        description="With groups: auto, the most one pod may request; each key given here"
        " replaces the operator's default (Helm value runtime.podLimit).",
    )


_DURATION_PART = re.compile(r"([0-9]+)(h|ms|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_DURATION_HELP = "'{value}' is not a duration; write e.g. 0s, 90s, 30m or 2h30m"


def duration_seconds(text: str) -> float:
    """`1h30m` -> 5400.0 (Go's duration syntax without fractions, as kubectl takes)."""
    return sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def parse_duration(text: str) -> float:
    """Seconds of a duration (`2h30m`); ValueError for anything else."""
    if not strings.DURATION.accepts(text):
        raise ValueError(_DURATION_HELP.format(value=text))
    return duration_seconds(text)


Duration = ruled_str(strings.DURATION, _DURATION_HELP)


def _explain_github_url(value: str) -> None:
    try:
        parse_github_url(value)
    except ValueError as exc:
        raise _error("github_url", "{why}", why=str(exc)) from None


GitHubURL = ruled_str(
    strings.GITHUB_URL,
    "'{value}': " + URL_HELP,
    _explain_github_url,
    lambda value: parse_github_url(value).html_url,
)
RunnerLabel = ruled_str(
    strings.RUNNER_LABEL,
    "'{value}' is not a runner label (letters, digits, '_', '.' and '-', starting with"
    " a letter or digit, at most 64 characters)",
)


class RunnerCredentials(ApiSpecModel):
    """A Secret of the VDC's namespace that only the operator reads: a token (key
    `token`) or a GitHub App (keys `app-id`, `installation-id`, `private-key`)."""

    secret_name: ObjectName


class AfterJob(ApiSpecModel):
    """What happens once every runner has run its job: the VDC is kept this long, then
    deleted. A job may keep it longer (`vdc keep 2h` in a step, e.g. on failure)."""

    keep_for: Duration = "0s"
    keep_failed_for: Duration | None = Field(
        default=None, description="Instead of keepFor when a job failed."
    )


class Runners(ApiSpecModel):
    """GitHub Actions self-hosted runners in the VDC's pod, registered just in time by the
    operator: one job each, then the VDC is deleted (see afterJob)."""

    url: GitHubURL = Field(description="A repository or organisation, on github.com or GHES.")
    credentials: RunnerCredentials
    labels: Annotated[list[RunnerLabel], Field(max_length=16)] = Field(
        default=[], description="Besides `self-hosted` and one label unique to this VDC."
    )
    count: Annotated[StrictInt, Field(ge=1, le=16)] = 1
    image: Annotated[Text, Field(min_length=1, max_length=512)] | None = Field(
        default=None, description="The runner image; default: the operator's. It needs `vdc`."
    )
    command: Annotated[list[Name], Field(min_length=1, max_length=16)] = Field(
        default=["/home/runner/run.sh"],
        description="What starts the runner in the image; `--jitconfig <config>` is added.",
    )
    group_id: Annotated[StrictInt, Field(ge=1)] = 1
    after_job: AfterJob = AfterJob()
    ca_bundle: Annotated[Text, Field(max_length=65536)] | None = Field(
        default=None, description="PEM CAs for a GitHub Enterprise Server with a private CA."
    )


Accel = Literal["auto", "kvm", "tcg"]


FaultText = Annotated[Text, Field(min_length=1, max_length=256)]


class CRFault(ApiSpecModel):
    """A fault the agent applies while it is listed (once: `for` ends it), as `vdc fault add`."""

    kind: FaultKind
    target: FaultText | None = Field(
        default=None, description="link: NODE:ethI or NAMESPACE:NETWORK; machine, bmc: NODE."
    )
    down: StrictBool | None = None
    loss: FaultText | None = Field(default=None, description="Percent dropped, e.g. 30%.")
    rate: FaultText | None = Field(default=None, description="tc's units, e.g. 10mbit.")
    delay: FaultText | None = Field(default=None, description="e.g. 100ms (needs sch_netem).")
    jitter: FaultText | None = None
    direction: Literal["both", "in", "out"] | None = None
    between: Annotated[list[FaultText], Field(max_length=64)] | None = None
    and_: Annotated[list[FaultText], Field(max_length=64)] | None = None
    effect: Literal["power-loss", "hang", "slow-disk", "unresponsive", "slow", "errors"] | None = (
        None
    )
    volume: FaultText | None = None
    iops: StrictInt | None = None
    bps: StrictInt | None = None
    for_: FaultText | None = Field(
        default=None, description="Undone after this long, e.g. 60s; then not applied again."
    )

    def body(self) -> dict[str, Any]:
        """As `POST /faults` takes it."""
        return self.model_dump(by_alias=True, exclude_none=True)

    @model_validator(mode="after")
    def _as_the_runtime_checks_it(self) -> CRFault:
        from vdc_runtime.spec.faults import FaultError, parse_fault

        try:
            parse_fault(self.body())
        except FaultError as exc:
            raise _error("fault", "{message}", message=str(exc)) from None
        return self


class RestoreFrom(ApiSpecModel):
    snapshot: ObjectName = Field(
        description="A Ready VirtualDataCenterSnapshot of this namespace: the machines resume"
        " from it instead of booting (the network, its namespaces and apps start afresh)."
    )


class VirtualDataCenterSpec(ApiSpecModel):
    """A whole data center: Placemat's kinds as lists, and how its pod runs."""

    networks: Annotated[list[Network], Field(max_length=128)] = []
    network_namespaces: Annotated[list[CRNetworkNamespace], Field(max_length=128)] = []
    nodes: Annotated[list[CRNode], Field(max_length=512)] = []
    images: Annotated[list[Image], Field(max_length=64)] = []
    device_classes: Annotated[list[DeviceClass], Field(max_length=16)] = []
    bmc: CRBMC | None = None
    files: Annotated[list[ExtraFile], Field(max_length=64)] = Field(
        default=[], description="Files for apps and init scripts, in their working directory."
    )
    accel: Accel = Field(
        default="auto", description="auto: KVM where stock guests can run, else TCG."
    )
    pod: PodSettings = PodSettings()
    groups: Annotated[list[CRGroup], Field(max_length=32)] = []
    placement: Placement = Placement()
    runners: Runners | None = None
    restore_from: RestoreFrom | None = None
    faults: Annotated[list[CRFault], Field(max_length=64)] = Field(
        default=[],
        description="Faults the agent applies in place, without a new pod (see `vdc fault`).",
    )


IN_PLACE = frozenset({"faults"})
"""Spec keys (as a CR spells them) a running pod's agent applies itself: changing them
does not replace the pod."""


def rebuilt_from(spec: Any) -> dict[str, Any]:
    """What of a CR's spec the pod is built from: a change of it replaces the pod."""
    return {k: v for k, v in dict(spec or {}).items() if k not in IN_PLACE}


# Each list of the spec and the Placemat kind of its entries.
LISTS: dict[str, str] = {
    "networks": "Network",
    "network_namespaces": "NetworkNamespace",
    "nodes": "Node",
    "images": "Image",
    "device_classes": "DeviceClass",
    "groups": "Group",
}

# -- checking ------------------------------------------------------------------------------


def _at(path: list[str | int] | tuple[str | int, ...], message: str) -> SpecError:
    return SpecError(format_path(("spec", *path)), None, None, None, "", message)


def parse(raw: Any) -> VirtualDataCenterSpec:
    """One CR spec (camelCase, as the API server stores it), checked field by field.

    Raises SpecErrors naming each bad key as `spec.<path>`.
    """
    if raw is None:
        raw = {}
    data = rename(raw, VirtualDataCenterSpec, camel)
    try:
        return VirtualDataCenterSpec.model_validate(data, by_alias=True, by_name=False)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            path, message = pydantic_problem(err, VirtualDataCenterSpec, raw, camel)
            errors.append(_at(path, message))
        raise SpecErrors(errors) from None


Resolve = Callable[[FileSource, str, bool], Path]
"""Makes a file's content available: (source, where it is used, executable) -> its path."""


def placeholder(source: FileSource, where: str, executable: bool) -> Path:
    """A stand-in path, for checking a spec whose files are not here."""
    return Path("/vdc-files") / where


def validate(raw: Any) -> VirtualDataCenterSpec:
    """A CR spec after every check `vdc validate` makes but those of files (which are in
    the pod, not here). Raises SpecErrors with `spec.<path>` locations."""
    spec = parse(raw)
    load(raw, spec=spec)
    return spec


def load(
    raw: Any,
    resolve: Resolve = placeholder,
    *,
    files: bool = False,
    spec: VirtualDataCenterSpec | None = None,
) -> DataCenter:
    """The data center a CR spec describes, after every check `vdc validate` makes.

    `resolve` gives each FileSource a path; with `files` those files are checked too.
    `spec` is `raw` already parsed, if it is. Raises SpecErrors with `spec.<path>` locations.
    """
    spec = parse(raw) if spec is None else spec
    errors = [*_references(spec), *_placement(spec)]
    if errors:
        raise SpecErrors(errors)
    raw = raw or {}
    documents: list[Document] = []
    for field, kind in LISTS.items():
        items = getattr(spec, field)
        raw_items = raw.get(camel(field)) or []
        for i, item in enumerate(items):
            label = format_path(("spec", camel(field), i))
            model = _runtime_model(kind, item, label, resolve)
            documents.append(
                Document("", 0, kind, item.name, raw_items[i], model, (0, len(documents)), label)
            )
    if spec.bmc is not None:
        model = _runtime_bmc(spec.bmc, resolve)
        documents.append(Document("", 0, "BMC", None, raw["bmc"], model, (0, 0), "spec.bmc"))
    problems = check(documents, files=files)
    if problems:
        errors = []
        for problem in problems:
            doc = problem.document
            assert doc.kind is not None and doc.label is not None
            where = locate(problem.loc, KINDS[doc.kind], doc.raw, tagged=False, style=camel)
            path = format_path(where.path)
            errors.append(SpecError(f"{doc.label}.{path}" if path else doc.label,
                                    None, None, None, "", problem.message))  # fmt: skip
        raise SpecErrors(errors)
    return assemble(doc.model for doc in documents)


def _references(spec: VirtualDataCenterSpec) -> Iterator[SpecError]:
    """What a CR adds to Placemat's rules: file sources naming images, unique file paths."""
    images = [image.name for image in spec.images]
    for where, source in _sources(spec):
        if source.image is not None and source.image not in images:
            hint = did_you_mean(source.image, images)
            yield _at([*where, "image"], f"no Image named '{source.image}' is defined{hint}")
    from vdc_runtime.spec.faults import named

    nodes = {node.name for node in spec.nodes}
    members = nodes | {ns.name for ns in spec.network_namespaces}
    for i, fault in enumerate(spec.faults):
        known = nodes if fault.kind in ("machine", "bmc") else members
        what = "node" if fault.kind in ("machine", "bmc") else "node or network namespace"
        for name in named(fault.body()):
            if name not in known:
                hint = did_you_mean(name, sorted(known))
                yield _at(["faults", i], f"no {what} named '{name}'{hint}")
    seen: dict[str, int] = {}
    for i, extra in enumerate(spec.files):
        if extra.path in seen:
            yield _at(
                ["files", i, "path"], f"duplicate path '{extra.path}' (files[{seen[extra.path]}])"
            )
        seen.setdefault(extra.path, i)


def _placement(spec: VirtualDataCenterSpec) -> Iterator[SpecError]:
    """With automatic groups the operator chooses every group: none may be given."""
    if spec.placement.groups != "auto":
        if spec.placement.pod_limit is not None:
            yield _at(["placement", "podLimit"], _LIMIT_ONLY_AUTO)
        return
    why = "placement.groups is auto: the operator chooses the groups"
    if spec.groups:
        yield _at(["groups"], f"must be empty, as {why}")
    for field, members in (("networkNamespaces", spec.network_namespaces),
                           ("nodes", spec.nodes)):  # fmt: skip
        for i, member in enumerate(members):
            if member.group is not None:
                yield _at([field, i, "group"], f"'{member.group}' given, but {why}; remove it")


def _sources(spec: VirtualDataCenterSpec) -> Iterator[tuple[list[str | int], FileSource]]:
    """Every FileSource of the spec with its path."""
    for i, ns in enumerate(spec.network_namespaces):
        for j, script in enumerate(ns.init_scripts):
            yield ["networkNamespaces", i, "initScripts", j], script
    for i, node in enumerate(spec.nodes):
        for key in ("ignition", "kernel", "initrd"):
            source = getattr(node, key)
            if source is not None:
                yield ["nodes", i, key], source
        for j, volume in enumerate(node.volumes):
            if isinstance(volume, CRLocaldsVolume):
                yield ["nodes", i, "volumes", j, "userData"], volume.user_data
                if volume.network_config is not None:
                    yield ["nodes", i, "volumes", j, "networkConfig"], volume.network_config
    for i, extra in enumerate(spec.files):
        yield ["files", i], extra


def sources(spec: VirtualDataCenterSpec) -> list[FileSource]:
    """Every FileSource of the spec, the BMC's secrets included (what the pod must mount)."""
    found = [source for _, source in _sources(spec)]
    if spec.bmc is not None:
        for user in spec.bmc.users:
            if user.password_secret_ref is not None:
                found.append(FileSource(secret_key_ref=user.password_secret_ref))
        if spec.bmc.tls is not None:
            found.extend(_tls_sources(spec.bmc.tls))
    return found


def _tls_sources(tls: CRBMCTLS) -> tuple[FileSource, FileSource]:
    return (
        FileSource(secret_key_ref=KeyRef(name=tls.secret_name, key="tls.crt")),
        FileSource(secret_key_ref=KeyRef(name=tls.secret_name, key="tls.key")),
    )


def _runtime_model(
    kind: str, item: SpecModel | ApiSpecModel, label: str, resolve: Resolve
) -> SpecModel:
    """The runtime's model of one CR entry, its file sources resolved to paths."""
    if isinstance(item, CRGroup):
        return Group(name=item.name)  # its pod settings are the operator's alone
    data = item.model_dump(by_alias=False, exclude_none=True)
    if isinstance(item, CRNetworkNamespace):
        data["init_scripts"] = [
            resolve(script, f"{label}.initScripts[{j}]", True)
            for j, script in enumerate(item.init_scripts)
        ]
    elif isinstance(item, CRNode):
        for key in ("ignition", "kernel", "initrd"):
            source = getattr(item, key)
            if source is not None:
                data[key] = resolve(source, f"{label}.{key}", False)
        for j, volume in enumerate(item.volumes):
            if isinstance(volume, CRLocaldsVolume):
                where = f"{label}.volumes[{j}]"
                data["volumes"][j]["user_data"] = resolve(
                    volume.user_data, f"{where}.userData", False
                )
                if volume.network_config is not None:
                    data["volumes"][j]["network_config"] = resolve(
                        volume.network_config, f"{where}.networkConfig", False
                    )
    return KINDS[kind].model_validate(data)


def _runtime_bmc(bmc: CRBMC, resolve: Resolve) -> BMC:
    users = []
    for i, user in enumerate(bmc.users):
        if user.password_secret_ref is not None:
            source = FileSource(secret_key_ref=user.password_secret_ref)
            password_file = resolve(source, f"spec.bmc.users[{i}].passwordSecretRef", False)
            users.append(BMCUser(name=user.name, password_file=password_file, role=user.role))
        else:
            users.append(BMCUser(name=user.name, password=user.password, role=user.role))
    tls = None
    if bmc.tls is not None:
        cert, key = _tls_sources(bmc.tls)
        tls = BMCTLS(
            cert=resolve(cert, "spec.bmc.tls.cert", False),
            key=resolve(key, "spec.bmc.tls.key", False),
        )
    return BMC(users=users, tls=tls, publish=bmc.publish)


__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "CRGroup",
    "CRNode",
    "ExtraFile",
    "FileSource",
    "KeyRef",
    "Placement",
    "PodLimit",
    "PodSettings",
    "Resolve",
    "Runners",
    "VirtualDataCenterSpec",
    "camel",
    "duration_seconds",
    "load",
    "parse",
    "parse_duration",
    "placeholder",
    "quantity",
    "sources",
    "validate",
]
