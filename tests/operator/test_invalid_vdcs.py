"""Every invalid VDC of the corpus is refused by the models, at the path the API server
names too (tests/e2e/test_operator.py checks the API server's side)."""

from __future__ import annotations

import pytest

from tests.operator.invalid_vdcs import BASE, CASES, Case
from vdc_operator import crd
from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import SpecErrors


def test_base_is_valid() -> None:
    assert cr.load(BASE).summary().startswith("3 networks")


@pytest.mark.parametrize("case", [c for c in CASES if c.name == "bad"], ids=lambda c: c.id)
def test_models_refuse(case: Case) -> None:
    with pytest.raises(SpecErrors) as info:
        cr.load(case.spec())
    found = [str(e) for e in info.value.errors]
    assert any(e.startswith(case.path) for e in found), found


def test_name_length_rule_matches_the_models() -> None:
    rule = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert f"<= {cr.VDC_NAME_MAX}" in rule["x-kubernetes-validations"][0]["rule"]
