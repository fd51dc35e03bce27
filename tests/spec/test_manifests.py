"""`vdc validate` on VirtualDataCenter manifests: the API server's and the webhook's checks
together, offline, at the paths `kubectl apply` shows."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.spec.test_cr import EXAMPLES
from vdc_runtime.resource import spec as cr
from vdc_runtime.resource.manifests import check
from vdc_runtime.spec import SpecErrors


def quickstart_docs() -> list[Any]:
    return list(yaml.safe_load_all((EXAMPLES / "vdc-quickstart.yaml").read_text()))


def vdc_doc(docs: list[Any]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == cr.KIND)


def test_the_quickstart_is_valid_and_its_secret_skipped() -> None:
    report = check("q.yaml", quickstart_docs())
    assert not report.errors
    assert report.valid == ['VirtualDataCenter "quickstart" (2 networks, 1 network namespace,'
                            ' 2 nodes, 2 images, 0 device classes)']  # fmt: skip
    assert report.skipped == ['Secret "quickstart-bmc"']


def test_spec_errors_are_the_webhooks_at_kubectl_paths() -> None:
    docs = quickstart_docs()
    bad = vdc_doc(docs)
    bad["spec"]["nodes"][0]["smp"] = {"cpus": 4, "maxcpus": 2}
    with pytest.raises(SpecErrors) as webhook:
        cr.validate(bad["spec"])  # what the admission webhook runs
    report = check("q.yaml", docs)
    assert [str(e) for e in report.errors] == [
        f'q.yaml: document 2 (VirtualDataCenter "quickstart"): {e}' for e in webhook.value.errors
    ]
    assert "spec.nodes[0].smp" in str(report.errors[0])
    assert not report.valid


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.update(apiVersion="vdc.dev/v1"),
         "apiVersion: version 'vdc.dev/v1' is not served; this vdc serves vdc.dev/v1alpha1"),
        (lambda d: d.update(apiVersion="example.com/v1alpha1"),
         "apiVersion: apiVersion 'example.com/v1alpha1': a VirtualDataCenter is vdc.dev/v1alpha1"),
        (lambda d: d["metadata"].update(name="x" * 53),
         "metadata.name: at most 52 characters"),
        (lambda d: d["metadata"].update(name="Lab_1"),
         "metadata.name: 'Lab_1' is not a Kubernetes object name"),
        (lambda d: d["metadata"].pop("name"), "metadata.name: required"),
        (lambda d: d.pop("spec"), "spec: required"),
    ],
)  # fmt: skip
def test_what_the_api_server_refuses(change: Any, expected: str) -> None:
    docs = quickstart_docs()
    change(vdc_doc(docs))
    report = check("q.yaml", docs)
    assert len(report.errors) == 1, report.errors
    assert expected in str(report.errors[0])
    assert str(report.errors[0]).startswith("q.yaml: document 2 (VirtualDataCenter")
    assert not report.valid


def test_a_list_is_read_item_by_item() -> None:
    docs = quickstart_docs()
    second = copy.deepcopy(vdc_doc(docs))
    second["metadata"]["name"] = "second"
    report = check("l.yaml", [{"apiVersion": "v1", "kind": "List", "items": [*docs, second]}])
    assert [v.split(" (")[0] for v in report.valid] == [
        'VirtualDataCenter "quickstart"',
        'VirtualDataCenter "second"',
    ]


def test_placemat_documents_do_not_mix_with_objects() -> None:
    docs = [*quickstart_docs(), {"kind": "Network", "name": "n0", "type": "internal"}]
    report = check("m.yaml", docs)
    assert [e.document for e in report.errors] == [3]
    assert "Placemat documents cannot be mixed" in str(report.errors[0])
