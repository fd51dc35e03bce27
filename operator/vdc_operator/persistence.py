"""Where kopf keeps its bookkeeping: in this process, unless it must outlive it.

kopf's stock storages write to the object after every handling: the last handled spec
(the base of its diffs) and a marker annotation, each a PATCH of the VDC that every
watcher of it then receives. Neither needs to survive a restart here: `reconcile` is the
handler of creation, resumption and spec changes alike, level-based (a pod built from an
older spec carries another hash and is replaced), so an operator that starts without
the last handled specs runs it once per object, as resuming would.

What must survive a restart stays in annotations: a handler's retries and delays
(`TemporaryError`), which only the paths off the usual one (missing sources, runners
waiting on GitHub, pods being replaced, deletion) leave.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import kopf

from vdc_operator.bounded import Bounded
from vdc_runtime.resource import spec as cr

FINALIZER = f"{cr.GROUP}/cleanup"
"""kopf's finalizer on every VDC (`settings.persistence.finalizer`)."""


def with_finalizer(finalizers: list[str] | None, finalizer: str) -> list[str] | None:
    """An object's finalizers with `finalizer` added, or None if it is there already."""
    current = list(finalizers or [])
    return None if finalizer in current else [*current, finalizer]


class RememberedDiffBase(kopf.DiffBaseStorage):
    """The essence kopf last handled of each object, by uid, in memory.

    Bounded: an object forgotten early (past `kept` objects, or by `forget`) is seen again
    as new, and `reconcile` runs for it once more, converging on what already exists."""

    def __init__(self, kept: int = 16384) -> None:
        super().__init__()
        self._essences: Bounded[str, Any] = Bounded(kept)

    def build(self, *, body: Any, extra_fields: Collection[Any] | None = None) -> Any:
        """kopf's essence of the object, as `kopf.DiffBaseStorage.build` makes it, but not
        by copying the whole object first: that copied the status and the managed fields
        of every event of every VDC only to throw them away (a tenth of the operator's
        CPU in a burst of new VDCs). Fields a handler follows outside what the essence
        holds anyway (the status's, the metadata's), or ignored fields, are left to kopf's
        own way (none here: `reconcile` follows `spec`, which the essence holds whole)."""
        skipped = ("apiVersion", "kind", "metadata", "status")
        if self.ignored_fields or any(_first(field) in skipped for field in extra_fields or ()):
            return super().build(body=body, extra_fields=extra_fields)
        essence = {k: copy.deepcopy(v) for k, v in body.items() if k not in skipped}
        meta = body.get("metadata") or {}
        kept = {f: copy.deepcopy(meta[f]) for f in ("labels", "annotations") if f in meta}
        if kept:
            essence["metadata"] = kept
        annotations = kept.get("annotations") or {}
        ignored = self._detect_marked_prefixes(annotations)
        for annotation in list(annotations):
            marked = any(annotation.startswith(f"{prefix}/") for prefix in ignored)
            if marked or annotation == "kubectl.kubernetes.io/last-applied-configuration":
                del annotations[annotation]
        self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: Any) -> Any:
        # Not copied: kopf only compares it with the new essence (through the progress
        # storage's `clear`, which changes nothing in place).
        return self._essences.get(body.get("metadata", {}).get("uid"))

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        uid = body.get("metadata", {}).get("uid")
        if uid is None:
            return
        self._essences.put(uid, copy.deepcopy(essence))

    def forget(self, uid: str | None) -> None:
        if uid is not None:
            self._essences.pop(uid)

    def __len__(self) -> int:
        return len(self._essences)


def _first(field: Any) -> str:
    """The top-level key of a kopf field (a dotted string or a tuple of keys)."""
    return field.split(".", 1)[0] if isinstance(field, str) else str(field[0])


class UnmarkedAnnotationsProgress(kopf.AnnotationsProgressStorage):
    """kopf's progress in annotations, without its "kopf-managed" marker annotation.

    The marker tells other kopf operators' diffs to ignore this prefix's annotations; the
    marker alone made a PATCH of every new VDC (a handler that succeeds at once leaves no
    progress to store). The annotations under the prefix are still left out of this
    operator's diffs (`clear`)."""

    def _store_marker(self, prefix: str | None, patch: Any, body: Any) -> None:
        return None

    def clear(self, *, essence: Any) -> Any:
        """The essence without this operator's annotations, as kopf's `clear` makes it, but
        copying only what it changes (the metadata) rather than the whole essence. kopf
        calls it twice for every event of every VDC (the last handled essence and the new
        one), only to compare the two and keep the new one, which `RememberedDiffBase`
        copies as it stores it."""
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        ours = {key for key in annotations if self.prefix and key.startswith(f"{self.prefix}/")}
        if not ours:
            return essence
        cleared = {**essence, "metadata": {**essence["metadata"]}}
        cleared["metadata"]["annotations"] = {
            key: value for key, value in annotations.items() if key not in ours
        }
        self.remove_empty_stanzas(cleared)
        return cleared
