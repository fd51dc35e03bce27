"""The CRD is generated from the models and committed; it must be current and structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vdc_operator import crd

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "deploy" / "crds" / f"{crd.NAME}.yaml"


def test_committed_crds_are_current() -> None:
    files = crd.rendered()
    assert COMMITTED in files
    assert {p.name for p in files} == {
        "virtualdatacenters.vdc.dev.yaml",
        "virtualdatacentersnapshots.vdc.dev.yaml",
    }
    for path, text in files.items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run `python -m vdc_operator.crd --write`"
        )


def test_snapshot_crd_is_structural_and_immutable() -> None:
    root = crd.snapshot_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, schema in walk(root):
        assert "$ref" not in schema and "anyOf" not in schema, path
    spec = root["properties"]["spec"]
    assert spec["required"] == ["source"]
    assert spec["properties"]["source"]["properties"]["name"]["type"] == "string"
    assert [r["rule"] for r in spec["x-kubernetes-validations"]] == ["self == oldSelf"]


def walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        found += walk(sub, f"{path}.{key}")
    if "items" in schema:
        found += walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        found += walk(schema["additionalProperties"], f"{path}{{}}")
    return found


def test_schema_is_structural() -> None:
    root = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in walk(root):
        assert "type" in node, f"{path} has no type"
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "default", "title", "const"):
            assert banned not in node, f"{path} has {banned}"
        if node["type"] == "object" and path not in (".metadata",):
            assert node.get("properties") or node.get("additionalProperties"), path
        assert node.get("additionalProperties") is not False, path


def test_keys_are_camel_case_and_lists_of_named_entries_are_maps() -> None:
    spec = crd.spec_schema()
    node = spec["properties"]["nodes"]
    assert node["x-kubernetes-list-type"] == "map"
    assert node["x-kubernetes-list-map-keys"] == ["name"]
    props = node["items"]["properties"]
    assert {"networkDeviceQueue", "bootOrder", "readiness", "bmc"} <= set(props)
    assert props["bootOrder"]["x-kubernetes-list-type"] == "set"
    assert "x-kubernetes-list-type" not in props["interfaces"]  # two NICs on a network is fine
    netns = spec["properties"]["networkNamespaces"]["items"]["properties"]
    assert netns["interfaces"]["x-kubernetes-list-map-keys"] == ["network"]
    assert spec["properties"]["files"]["x-kubernetes-list-map-keys"] == ["path"]


def test_volume_union_is_one_object_with_rules_per_kind() -> None:
    volume = crd.spec_schema()["properties"]["nodes"]["items"]["properties"]["volumes"]["items"]
    assert volume["properties"]["kind"]["enum"] == ["image", "localds", "raw", "hostPath"]
    assert volume["required"] == ["name", "kind"]
    rules = {r["rule"]: r for r in volume["x-kubernetes-validations"]}
    assert rules["self.kind != 'raw' || has(self.size)"]["fieldPath"] == ".size"
    assert "!has(self.size) || self.kind == 'raw'" in rules
    assert "!has(self.userData) || self.kind == 'localds'" in rules


def test_status_printer_columns_and_names() -> None:
    whole = crd.crd()
    assert whole["metadata"]["name"] == "virtualdatacenters.vdc.dev"
    names = whole["spec"]["names"]
    assert names["shortNames"] == ["vdc"] and names["kind"] == "VirtualDataCenter"
    assert names["categories"]
    version = whole["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Phase", "Ready", "Accel", "Groups", "Age", "Message"]
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"phase", "conditions", "nodes", "observedGeneration", "ready", "accel"} <= set(status)
    assert yaml.safe_load(crd.render()) == whole
