"""The agent's Prometheus exposition, read from state at scrape time."""

from __future__ import annotations

from pathlib import Path

from tests.spec.test_cr import quickstart
from vdc_runtime.agent import metrics
from vdc_runtime.agent.status import RunnerObservation
from vdc_runtime.datacenter import DataCenterRun, RunOptions
from vdc_runtime.faults import ActiveFault, FaultManager, Topology, parse_fault
from vdc_runtime.ledger import Ledger
from vdc_runtime.resource import spec as cr
from vdc_runtime.runner import RunnerPhase


def test_exposition_before_machines_and_with_runners(tmp_path: Path) -> None:
    run = DataCenterRun(cr.load(quickstart()["spec"]), RunOptions(run_dir=tmp_path))
    runners = (
        RunnerObservation("runner-0", RunnerPhase.FINISHED, job="j", result="failed", ended_at=1.0),
        RunnerObservation("runner-1", RunnerPhase.BUSY, job="k"),
    )
    text = metrics.exposition(metrics.registry(lambda: run, lambda: runners)).decode()
    assert 'vdc_datacenter_phase{phase="pending"} 1.0' in text
    assert 'vdc_runners{phase="Busy"} 1.0' in text
    assert 'vdc_runners{phase="Finished"} 1.0' in text
    assert 'vdc_runner_jobs_total{result="failed"} 1.0' in text
    assert "vdc_bmc_requests_total" in text
    empty = metrics.exposition(metrics.registry(lambda: None)).decode()
    assert 'vdc_datacenter_phase{phase="pending"} 1.0' in empty
    assert 'vdc_runners{phase="Busy"} 0.0' in empty


def test_active_faults_by_kind(tmp_path: Path) -> None:
    run = DataCenterRun(cr.load(quickstart()["spec"]), RunOptions(run_dir=tmp_path))
    text = metrics.exposition(metrics.registry(lambda: run)).decode()
    assert 'vdc_faults_active{kind="link"} 0.0' in text
    run.faults = FaultManager(lambda: Topology(table="t"), Ledger(tmp_path), {})
    fault = parse_fault({"kind": "partition", "between": ["a"], "and": ["b"]})
    run.faults.active[1] = ActiveFault(1, fault, 0.0, frozenset())
    run.faults.cleared = 2
    text = metrics.exposition(metrics.registry(lambda: run)).decode()
    assert 'vdc_faults_active{kind="partition"} 1.0' in text
    assert 'vdc_faults_active{kind="bmc"} 0.0' in text
    assert "vdc_faults_cleared_total 2.0" in text
