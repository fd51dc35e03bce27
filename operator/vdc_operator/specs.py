"""VDC specs as the handlers use them (`builders.placed`), each parsed and checked once.

The admission webhook and `reconcile` check the same spec of every new VDC, and a pod's
every event and every status write of an agent (a VDC event) need the spec of its VDC: each
would otherwise parse the whole spec again, the checks of `vdc validate` included.
"""

from __future__ import annotations

import json
from typing import Any

from vdc_operator import builders
from vdc_operator.bounded import Bounded
from vdc_runtime.resource import spec as cr
from vdc_runtime.spec import SpecError, SpecErrors

Spec = cr.VirtualDataCenterSpec
Outcome = Spec | list[SpecError]
"""A spec, or the errors that refused it."""


def _spec_of(outcome: Outcome) -> Spec:
    if isinstance(outcome, list):
        raise SpecErrors(outcome)  # a new exception each time: tracebacks do not pile up
    return outcome


class PlacedSpecs:
    """Each spec as `builders.placed` makes it: parsed (`of`) or checked as `vdc validate`
    checks it (`checked`), once.

    Parsed specs are kept by VDC and generation (which changes with the spec, never with
    the status: no need to compare the spec itself on every event); checked ones by the
    spec's content, since the webhook sees a VDC before it has a uid. A spec that passed
    the checks for a VDC's generation is also that generation's parsed spec."""

    KEPT = 4096

    def __init__(self, settings: builders.Settings, kept: int = KEPT) -> None:
        self.settings = settings
        self._parsed: Bounded[tuple[str, int], Outcome] = Bounded(kept)
        self._checked: Bounded[str, Outcome] = Bounded(kept)

    def of(self, vdc: Any) -> Spec:
        """The VDC's spec, parsed: SpecErrors as `cr.parse` and `builders.placed`."""
        meta = vdc["metadata"]
        key = (meta.get("uid"), meta.get("generation"))
        known = None not in key
        outcome = self._parsed.get(key) if known else None  # type: ignore[arg-type]
        if outcome is None:
            outcome = self._place(cr.parse, dict(vdc.get("spec") or {}))
            if known:
                self._parsed.put(key, outcome)  # type: ignore[arg-type]
        return _spec_of(outcome)

    def checked(self, raw: Any, vdc: Any = None) -> Spec:
        """`raw`, a spec, checked: SpecErrors as `cr.validate` and `builders.placed`.
        `vdc`: the VDC whose spec it is, if it has one yet."""
        raw = dict(raw or {})  # kopf's view of it, or the dict
        key = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        outcome = self._checked.get(key)
        if outcome is None:
            outcome = self._place(cr.validate, raw)
            self._checked.put(key, outcome)
        meta = (vdc or {}).get("metadata") or {}
        uid, generation = meta.get("uid"), meta.get("generation")
        if not isinstance(outcome, list) and uid is not None and generation is not None:
            self._parsed.put((uid, generation), outcome)
        return _spec_of(outcome)

    def _place(self, check: Any, raw: dict[str, Any]) -> Outcome:
        try:
            return builders.placed(check(raw), self.settings)
        except SpecErrors as exc:
            return exc.errors
