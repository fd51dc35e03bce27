"""The VirtualDataCenter CRD, generated from the spec and status models.

`deploy/crds/` holds what `python -m vdc_operator.crd` prints (a test checks it is current),
so the schema the API server enforces and the models the runtime validates with cannot
drift apart. The models' JSON schema is rewritten into a structural one: $refs inlined,
optional values unwrapped, Python field names in a CR's camelCase, the discriminated
volume union merged into one object whose per-kind keys are CEL rules, lists of named
objects made list-maps (so duplicate names are refused), and CEL rules for what spans
fields of one object. Rules that span objects (a node naming an undefined network) need
the whole spec and are checked by the operator's admission webhook with the same code as
`vdc validate`.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from vdc_runtime import resource
from vdc_runtime.resource import snapshots
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.status import VirtualDataCenterStatus
from vdc_runtime.spec.cel import Rule

NAME = f"{cr.PLURAL}.{cr.GROUP}"
CATEGORIES = ["all", "vdc-all"]


# What the schema of a few field types means, as CEL (the API server has IP functions).
FORMATS: dict[str, list[Rule]] = {
    "ip": [Rule("isIP(self)", "must be an IP address, e.g. 10.72.16.11 or fd00::11")],
    # The network-address and broadcast checks are the webhook's: CEL's cost estimate of
    # them over every address of every namespace exceeds the API server's budget.
    "ip-interface": [
        Rule("isCIDR(self)", "must be an address with a prefix length, e.g. 10.0.0.1/24"),
    ],
}

# Lists whose entries are told apart by another key than `name`.
LIST_KEYS: dict[tuple[str, str], list[str]] = {
    ("CRNetworkNamespace", "interfaces"): ["network"],
    ("VirtualDataCenterSpec", "files"): ["path"],
}
# Lists that may hold the same value twice (node NICs on one network, app arguments).
PLAIN_LISTS = {("CRNode", "interfaces"), ("App", "command")}


class _Converter:
    """JSON schema (pydantic's) -> a structural OpenAPI v3 schema for a CRD."""

    def __init__(self, defs: dict[str, Any], camelize: bool) -> None:
        self.defs = defs
        self.camelize = camelize

    def key(self, name: str) -> str:
        return cr.camel(name) if self.camelize else name

    def convert(self, schema: dict[str, Any], owner: str | None = None) -> dict[str, Any]:
        schema = dict(schema)
        model: str | None = None
        if "$ref" in schema:
            model = schema.pop("$ref").rsplit("/", 1)[-1]
            target = dict(self.defs[model])
            if "description" in schema:  # the field's description beats the class's
                target["description"] = schema["description"]
            schema = {**target, **{k: v for k, v in schema.items() if k != "description"}}
        if "anyOf" in schema:
            members = [m for m in schema.pop("anyOf") if m.get("type") != "null"]
            if len(members) != 1:
                raise ValueError(f"cannot make a structural schema of anyOf {members}")
            merged = dict(members[0])
            if "description" in schema:
                merged["description"] = schema.pop("description")
            return self.convert({**schema, **merged}, owner)
        if "oneOf" in schema:
            return self._union(schema)
        out: dict[str, Any] = {}
        if "description" in schema:
            out["description"] = schema["description"]
        kind = schema.get("type")
        if "const" in schema:
            out["type"], out["enum"] = kind or "string", [schema["const"]]
        elif kind is not None:
            out["type"] = kind
        for key in ("enum", "pattern", "minLength", "maxLength", "minimum", "maximum",
                    "minItems", "maxItems"):  # fmt: skip
            if key in schema:
                out[key] = schema[key]
        if "not" in schema:  # a StringRule's forbidden values
            out["not"] = {"pattern": schema["not"]["pattern"]}
        rules = [r.as_dict() for r in FORMATS.get(schema.get("format", ""), [])]
        if kind == "object":
            props = schema.get("properties", {})
            if props:
                out["properties"] = {
                    self.key(k): self._field(v, model, k) for k, v in props.items()
                }
            if schema.get("required"):
                out["required"] = [self.key(k) for k in schema["required"]]
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                out["additionalProperties"] = self.convert(extra)
        if kind == "array":
            out["items"] = self.convert(schema["items"])
        # A model's own (spec.cel), as new dicts in CEL's usual key order.
        rules += [
            Rule(r["rule"], r["message"], r.get("fieldPath")).as_dict()
            for r in schema.get("x-kubernetes-validations", [])
        ]
        if rules:
            out["x-kubernetes-validations"] = rules
        return out

    def _field(self, schema: dict[str, Any], model: str | None, name: str) -> dict[str, Any]:
        out = self.convert(schema)
        if out.get("type") != "array":
            return out
        items = out["items"]
        where = (model or "", name)
        if where in PLAIN_LISTS:
            return out
        if where in LIST_KEYS:
            keys = [self.key(k) for k in LIST_KEYS[where]]
        elif items.get("type") == "object" and "name" in items.get("required", []):
            keys = ["name"]
        else:
            keys = []
        if keys:
            out["x-kubernetes-list-type"] = "map"
            out["x-kubernetes-list-map-keys"] = keys
        elif items.get("type") in ("string", "integer"):
            out["x-kubernetes-list-type"] = "set"  # a value twice is a mistake (boot-order)
        return out

    def _union(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A discriminated union as one object: `kind` says which keys it may have."""
        tag = schema["discriminator"]["propertyName"]
        members = {}
        for ref in schema["oneOf"]:
            name = ref["$ref"].rsplit("/", 1)[-1]
            member = self.convert(ref)
            members[member["properties"][tag]["enum"][0]] = (name, member)
        props: dict[str, Any] = {}
        owners: dict[str, list[str]] = {}
        for kind, (_, member) in members.items():
            for key, prop in member["properties"].items():
                props.setdefault(key, prop)
                owners.setdefault(key, []).append(kind)
        props[tag] = {"type": "string", "enum": list(members)}
        required_all = set.intersection(*(set(m["required"]) for _, m in members.values()))
        rules: list[dict[str, str]] = []
        for kind, (_, member) in members.items():
            for key in member["required"]:
                if key not in required_all:
                    rule = f"self.{tag} != '{kind}' || has(self.{key})"
                    rules.append(Rule(rule, f"required for kind {kind}", f".{key}").as_dict())
            rules += member.get("x-kubernetes-validations", [])
        for key, kinds in owners.items():
            if len(kinds) < len(members):
                allowed = " || ".join(f"self.{tag} == '{k}'" for k in kinds)
                rule = f"!has(self.{key}) || {allowed}"
                message = f"only for kind {' or '.join(kinds)}"
                rules.append(Rule(rule, message, f".{key}").as_dict())
        first = next(iter(members.values()))[1]
        out: dict[str, Any] = {
            "type": "object",
            "description": "One of: " + ", ".join(members) + f" (by '{tag}').",
            "properties": props,
            "required": [k for k in first["required"] if k in required_all],
        }
        if rules:
            out["x-kubernetes-validations"] = rules
        return out


def _schema(model: Any, camelize: bool) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=not camelize)
    defs = raw.pop("$defs", {})
    defs[model.__name__] = raw
    return _Converter(defs, camelize).convert({"$ref": f"#/$defs/{model.__name__}"})


def spec_schema() -> dict[str, Any]:
    return _schema(cr.VirtualDataCenterSpec, camelize=True)


def status_schema() -> dict[str, Any]:
    return _schema(VirtualDataCenterStatus, camelize=False)


def _definition(
    names: dict[str, Any], root: dict[str, Any], columns: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{names['plural']}.{cr.GROUP}"},
        "spec": {
            "group": cr.GROUP,
            "scope": "Namespaced",
            "names": names,
            "versions": [
                {
                    "name": cr.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": copy.deepcopy(root)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    root = {
        "type": "object",
        "description": "A virtual data center: networks, routers, machines and their BMCs,"
        " run in one pod.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(),
            "status": status_schema(),
        },
        "x-kubernetes-validations": [
            Rule(
                f"size(self.metadata.name) <= {cr.VDC_NAME_MAX}",
                f"metadata.name: at most {cr.VDC_NAME_MAX} characters (the name is part of"
                " its pod's name and of label values, which Kubernetes caps at 63)",
            ).as_dict()
        ],
    }
    names = {
        "kind": cr.KIND,
        "listKind": f"{cr.KIND}List",
        "plural": cr.PLURAL,
        "singular": cr.SINGULAR,
        "shortNames": list(cr.SHORT_NAMES),
        "categories": CATEGORIES,
    }
    return _definition(names, root, resource.PRINTER_COLUMNS)


def snapshot_crd() -> dict[str, Any]:
    spec = _schema(snapshots.VirtualDataCenterSnapshotSpec, camelize=True)
    # A snapshot is taken once: what it was taken of cannot change afterwards.
    spec["x-kubernetes-validations"] = [
        Rule("self == oldSelf", "a snapshot's spec cannot change: make a new one").as_dict()
    ]
    root = {
        "type": "object",
        "description": "A VirtualDataCenter's machines saved once (RAM, device state, disks,"
        " firmware variables, BMC boot overrides); VDCs start from it with spec.restoreFrom.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": _schema(snapshots.VirtualDataCenterSnapshotStatus, camelize=False),
        },
    }
    names = {
        "kind": snapshots.KIND,
        "listKind": f"{snapshots.KIND}List",
        "plural": snapshots.PLURAL,
        "singular": snapshots.SINGULAR,
        "shortNames": list(snapshots.SHORT_NAMES),
        "categories": CATEGORIES,
    }
    return _definition(names, root, snapshots.PRINTER_COLUMNS)


HEADER = (
    "# Generated by `python -m vdc_operator.crd --write` from the models in vdc_runtime;"
    " do not edit.\n"
)


def render(definition: dict[str, Any] | None = None) -> str:
    # Through JSON: a schema shared by two fields (an enum) would be a YAML alias otherwise.
    plain = json.loads(json.dumps(definition or crd()))
    return HEADER + yaml.safe_dump(plain, sort_keys=False, width=100)


ROOT = Path(__file__).resolve().parents[2]
FOLDERS = (ROOT / "deploy" / "crds", ROOT / "deploy" / "helm" / "vdc" / "crds")
"""Where the CRDs are written (Helm installs its chart's crds/)."""
SNAPSHOT_NAME = f"{snapshots.PLURAL}.{cr.GROUP}"
COPIES = tuple(folder / f"{NAME}.yaml" for folder in FOLDERS)
SNAPSHOT_COPIES = tuple(folder / f"{SNAPSHOT_NAME}.yaml" for folder in FOLDERS)


def rendered() -> dict[Path, str]:
    """Every CRD file and what it must hold."""
    texts = {path: render() for path in COPIES}
    snapshot = render(snapshot_crd())
    return texts | {path: snapshot for path in SNAPSHOT_COPIES}


def main() -> None:
    parser = argparse.ArgumentParser(description="Print (or --write) vdc's CRDs.")
    parser.add_argument(
        "--write", action="store_true", help="write deploy/crds and the Helm chart's crds/"
    )
    if parser.parse_args().write:
        for path, text in rendered().items():
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    else:
        sys.stdout.write(render() + "---\n" + render(snapshot_crd()).removeprefix(HEADER))


if __name__ == "__main__":
    main()
