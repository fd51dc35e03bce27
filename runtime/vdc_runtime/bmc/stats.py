"""Requests the BMCs answered, counted for metrics (read at scrape time)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

Protocol = Literal["ipmi", "redfish"]
Outcome = Literal["ok", "error"]


class BmcStats:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        """(node, protocol, outcome) -> requests."""

    def count(self, node: str, protocol: Protocol, ok: bool = True) -> None:
        self.requests[(node, protocol, "ok" if ok else "error")] += 1
