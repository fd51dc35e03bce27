"""Which copy of a VDC the operator computes a status write from."""

from __future__ import annotations

from typing import Any

from vdc_operator.kube import Api


def _vdc(version: str, phase: str) -> dict[str, Any]:
    return {"metadata": {"name": "lab", "resourceVersion": version}, "status": {"phase": phase}}


def test_a_write_is_computed_from_the_newest_copy_known() -> None:
    api = Api()
    key = ("ns", "lab")
    assert api._newest(key, _vdc("10", "Pending")) == _vdc("10", "Pending")  # nothing written
    api._written[key] = ("10", _vdc("12", "Provisioning"))
    # The copy the write applied to, or one older (the watch lags behind several writes):
    # what the write made of it.
    assert api._newest(key, _vdc("10", "Pending")) == _vdc("12", "Provisioning")
    assert api._newest(key, _vdc("7", "Pending")) == _vdc("12", "Provisioning")
    # Another writer's newer version: that one.
    assert api._newest(key, _vdc("15", "Running")) == _vdc("15", "Running")
    # Versions that are not revisions are not compared.
    assert api._newest(key, _vdc("x7", "Pending")) == _vdc("x7", "Pending")
