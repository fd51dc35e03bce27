"""VirtualDataCenter manifests checked offline (`vdc validate lab.yaml`), before `kubectl apply`.

A VirtualDataCenter is checked as the API server and the operator's admission webhook
would check it together: its apiVersion, its name (a DNS subdomain, at most
`VDC_NAME_MAX` characters, the CRD's own rule) and its spec (every rule of the CRD's
schema and of the webhook, `spec.validate`), with errors at the paths `kubectl apply`
shows (`spec.nodes[0].smp.maxcpus`). Other Kubernetes objects in the same file (the
Secrets and ConfigMaps a VDC refers to) are skipped, not refused; a `List` is read item
by item, as kubectl does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import strings
from vdc_runtime.spec.errors import SpecError, SpecErrors


def is_kubernetes_object(doc: Any) -> bool:
    """Whether a YAML document is a Kubernetes object rather than a Placemat one: only
    Kubernetes objects carry an apiVersion."""
    return isinstance(doc, dict) and "apiVersion" in doc


@dataclass
class ManifestReport:
    valid: list[str] = field(default_factory=list)
    """`VirtualDataCenter "lab" (summary)` for each valid one."""
    skipped: list[str] = field(default_factory=list)
    """`Secret "creds"` for each object that is not a VirtualDataCenter."""
    errors: list[SpecError] = field(default_factory=list)


def _objects(docs: list[Any]) -> Iterator[tuple[int, Any]]:
    for number, doc in enumerate(docs, start=1):
        if doc is None:
            continue  # an empty document, as between two `---`
        if isinstance(doc, dict) and doc.get("kind") == "List" and doc.get("apiVersion") == "v1":
            for item in doc.get("items") or []:
                yield number, item
        else:
            yield number, doc


def check(file: str, docs: list[Any]) -> ManifestReport:
    """Check every VirtualDataCenter among a file's documents; skip other objects."""
    report = ManifestReport()
    for number, obj in _objects(docs):

        def error(message: str, path: str = "", *, kind: str | None = None,
                  name: str | None = None, number: int = number) -> None:  # fmt: skip
            report.errors.append(SpecError(file, number, kind, name, path, message))

        if not is_kubernetes_object(obj):
            error("not a Kubernetes object (no apiVersion), and Placemat documents cannot "
                  "be mixed with Kubernetes objects in one file")  # fmt: skip
            continue
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = metadata.get("name") if isinstance(metadata.get("name"), str) else None
        if kind != cr.KIND:
            report.skipped.append(f'{kind or "an object without kind"} "{name or "?"}"')
            continue
        if not isinstance(api_version, str) or api_version.split("/")[0] != cr.GROUP:
            error(f"apiVersion {api_version!r}: a {cr.KIND} is {cr.API_VERSION}", "apiVersion",
                  kind=kind, name=name)  # fmt: skip
            continue
        if api_version != cr.API_VERSION:
            error(f"version {api_version!r} is not served; this vdc serves {cr.API_VERSION}",
                  "apiVersion", kind=kind, name=name)  # fmt: skip
            continue
        problems = []
        if name is None:
            problems.append(("metadata.name", "required"))
        elif not strings.OBJECT_NAME.accepts(name):
            problems.append(("metadata.name", f"{name!r} is not a Kubernetes object name "
                             "(lower-case letters, digits, '-' and '.')"))  # fmt: skip
        elif len(name) > cr.VDC_NAME_MAX:
            problems.append(("metadata.name", f"at most {cr.VDC_NAME_MAX} characters (the name "
                             "is part of its pod's name and of label values)"))  # fmt: skip
        if "spec" not in obj:
            problems.append(("spec", "required"))
        for path, message in problems:
            error(message, path, kind=kind, name=name)
        if "spec" not in obj:
            continue
        try:
            dc = cr.load(obj["spec"])
        except SpecErrors as exc:
            for e in exc.errors:
                error(e.message, ": ".join(p for p in (e.file, e.path) if p), kind=kind, name=name)
            continue
        if not problems:
            report.valid.append(f'{kind} "{name}" ({dc.summary()})')
    return report


__all__ = ["ManifestReport", "check", "is_kubernetes_object"]
