"""Prometheus metrics of a running data center, read from its state at each scrape.

A collector reads the machines' and BMCs' own counters when Prometheus asks, instead of
updating metric objects on every event: the hot paths (QMP events, BMC packets) stay free
of metrics code, and the standalone runtime never imports prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from vdc_runtime.datacenter import DataCenterRun

PHASES = ("pending", "building", "running", "stopping", "stopped", "failed")


class RunCollector(Collector):
    def __init__(self, run: Callable[[], DataCenterRun | None]) -> None:
        self.run = run

    def collect(self) -> Iterator[Metric]:
        run = self.run()
        phase = GaugeMetricFamily(
            "vdc_datacenter_phase", "1 for the data center's current phase", labels=["phase"]
        )
        current = run.phase if run is not None else "pending"
        for name in PHASES:
            phase.add_metric([name], 1.0 if name == current else 0.0)
        yield phase
        if run is None:
            return
        boots = CounterMetricFamily(
            "vdc_node_boots", "Boots of each node: QEMU starts, resets and reboots", labels=["node"]
        )
        restarts = CounterMetricFamily(
            "vdc_node_restarts", "Restarts of each node's QEMU after it died", labels=["node"]
        )
        ready = GaugeMetricFamily("vdc_node_ready", "1 when the node is ready", labels=["node"])
        for machine in run.machines.values():
            boots.add_metric([machine.name], machine.boots)
            restarts.add_metric([machine.name], machine.restarts)
            ready.add_metric([machine.name], 1.0 if machine.ready else 0.0)
        yield from (boots, restarts, ready)
        requests = CounterMetricFamily(
            "vdc_bmc_requests",
            "Requests each node's BMC answered, by protocol and outcome",
            labels=["node", "protocol", "outcome"],
        )
        if run.bmc is not None:
            for (node, protocol, outcome), count in sorted(run.bmc.stats.requests.items()):
                requests.add_metric([node, protocol, outcome], count)
        yield requests


def registry(run: Callable[[], DataCenterRun | None]) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(RunCollector(run))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
