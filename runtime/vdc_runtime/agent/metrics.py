"""Prometheus metrics of a running data center, read from its state at each scrape.

A collector reads the machines' and BMCs' own counters when Prometheus asks, instead of
updating metric objects on every event: the hot paths (QMP events, BMC packets) stay free
of metrics code, and the standalone runtime never imports prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vdc_runtime.phases import RunPhase
from vdc_runtime.runner import RunnerPhase
from vdc_runtime.spec.faults import FAULT_KINDS

if TYPE_CHECKING:
    from vdc_runtime.agent.status import RunnerObservation
    from vdc_runtime.datacenter import DataCenterRun


class RunCollector(Collector):
    def __init__(self, run: Callable[[], DataCenterRun | None]) -> None:
        self.run = run

    def collect(self) -> Iterator[Metric]:
        run = self.run()
        phase = GaugeMetricFamily(
            "vdc_datacenter_phase", "1 for the data center's current phase", labels=["phase"]
        )
        current = run.phase if run is not None else RunPhase.PENDING
        for name in RunPhase:
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
        active = GaugeMetricFamily("vdc_faults_active", "Active faults, by kind", labels=["kind"])
        cleared = CounterMetricFamily(
            "vdc_faults_cleared", "Faults undone: cleared by hand, expired, or powered on"
        )
        manager = run.faults
        for kind in FAULT_KINDS:
            count = 0 if manager is None else manager.count(kind)
            active.add_metric([kind], count)
        cleared.add_metric([], manager.cleared if manager is not None else 0)
        yield from (active, cleared)


class RunnerCollector(Collector):
    """The pod's GitHub runners by phase, and their jobs by result (from `vdc runner`)."""

    def __init__(self, runners: Callable[[], Sequence[RunnerObservation]]) -> None:
        self.runners = runners

    def collect(self) -> Iterator[Metric]:
        runners = self.runners()
        phases = GaugeMetricFamily("vdc_runners", "The pod's runners by phase", labels=["phase"])
        for phase in RunnerPhase:
            phases.add_metric([phase], sum(1.0 for r in runners if r.phase == phase))
        jobs = CounterMetricFamily(
            "vdc_runner_jobs", "Jobs the pod's runners ran, by result", labels=["result"]
        )
        for result in ("succeeded", "failed", "cancelled"):
            jobs.add_metric([result], sum(1.0 for r in runners if r.result == result))
        yield from (phases, jobs)


def registry(
    run: Callable[[], DataCenterRun | None],
    runners: Callable[[], Sequence[RunnerObservation]] = tuple,
) -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(RunCollector(run))
    reg.register(RunnerCollector(runners))
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    return generate_latest(reg)
