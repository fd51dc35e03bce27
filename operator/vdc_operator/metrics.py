"""The operator's Prometheus metrics: reconciles, errors, and VDCs by phase."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vdc_runtime.resource.status import Phase

REGISTRY = CollectorRegistry()
RECONCILES = Counter(
    "vdc_operator_reconciles",
    "Reconciliations of VirtualDataCenters, by handler and result",
    ["handler", "result"],
    registry=REGISTRY,
)
ERRORS = Counter(
    "vdc_operator_errors",
    "Errors while reconciling (API failures, invalid specs), by handler and kind",
    ["handler", "kind"],
    registry=REGISTRY,
)

GITHUB = Counter(
    "vdc_operator_github",
    "GitHub outcomes: runners registered, rate limits met, errors by kind",
    ["outcome"],
    registry=REGISTRY,
)


class _Phases(Collector):
    """VDCs by phase, from the phases the operator last saw (updated on every VDC event)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "vdc_operator_vdcs", "VirtualDataCenters by phase", labels=["phase"]
        )
        counts = dict.fromkeys((*Phase, "Unknown"), 0)
        for phase in self.seen.values():
            counts[phase if phase in counts else "Unknown"] += 1
        for phase, count in counts.items():
            gauge.add_metric([phase], count)
        yield gauge


PHASES_SEEN = _Phases()
REGISTRY.register(PHASES_SEEN)


@contextmanager
def reconcile(handler: str) -> Iterator[None]:
    """Count one run of a handler by how it ended."""
    try:
        yield
    except Exception as exc:
        result = "retry" if type(exc).__name__ == "TemporaryError" else "error"
        RECONCILES.labels(handler, result).inc()
        if result == "error":
            ERRORS.labels(handler, type(exc).__name__).inc()
        raise
    RECONCILES.labels(handler, "ok").inc()


def serve(port: int) -> None:
    start_http_server(port, registry=REGISTRY)
