"""Which snapshots an agent saves: its own part, once, of an admitted snapshot of its claim."""

from __future__ import annotations

from typing import Any

import pytest

from vdc_runtime.agent.snapshots import left_saving, store_name, wanted


def snap(phase: str = "Pending", claim: str = "snaps", parts: dict[str, Any] | None = None,
         expected: tuple[str, ...] = ("a", "b")) -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {"name": "s1", "uid": "2f6c-uid"},
        "status": {"phase": phase, "claimName": claim, "expectedParts": list(expected),
                   "parts": parts or {}},
    }  # fmt: skip


def test_an_admitted_snapshot_of_its_claim_is_saved_once() -> None:
    assert wanted(snap(), "a", "snaps")
    assert wanted(snap("Saving", parts={"b": {"phase": "Saving"}}), "a", "snaps")
    assert store_name(snap()) == "2f6c-uid"


@pytest.mark.parametrize(
    ("body", "part", "claim"),
    [
        (snap(), "c", "snaps"),  # not a part of it
        (snap(), "a", "other"),  # another claim than the pod mounts
        (snap(), "a", None),  # the pod mounts none
        (snap("Ready"), "a", "snaps"),
        (snap("Failed"), "a", "snaps"),
        (snap(parts={"a": {"phase": "Ready"}}), "a", "snaps"),  # saved already
        ({"metadata": {"name": "s1", "uid": "u"}}, "a", "snaps"),  # not admitted yet
    ],
)
def test_not_saved(body: dict[str, Any], part: str, claim: str | None) -> None:
    assert not wanted(body, part, claim)


def test_a_part_left_saving_by_an_earlier_agent() -> None:
    assert left_saving(snap(parts={"a": {"phase": "Saving"}}), "a")
    assert not left_saving(snap(parts={"a": {"phase": "Ready"}}), "a")
    assert not left_saving(snap(), "a")
