"""Operator metrics: jobs by phase follow watch events; only retries count as recreations."""

from __future__ import annotations

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fedkube_operator.main import _parser
from fedkube_operator.metrics import OperatorMetrics
from fedkube_operator.names import AGGREGATOR, Slot


def samples(metrics: OperatorMetrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def test_jobs_by_phase_follow_events() -> None:
    metrics = OperatorMetrics()
    metrics.job_seen("a", "one", None)  # just created: no status yet
    metrics.job_seen("a", "two", "Running")
    metrics.job_seen("b", "two", "Running")
    metrics.job_seen("a", "two", "Succeeded")
    s = samples(metrics)
    assert (s["fedkube_operator_jobs{phase=Pending}"], s["fedkube_operator_jobs{phase=Running}"],
            s["fedkube_operator_jobs{phase=Succeeded}"], s["fedkube_operator_jobs{phase=Suspended}"]) == (1, 1, 1, 0)
    metrics.job_seen("b", "two", "Running", deleted=True)
    assert samples(metrics)["fedkube_operator_jobs{phase=Running}"] == 0


def test_only_retries_count_as_recreations() -> None:
    metrics = OperatorMetrics()
    metrics.pods_created([(AGGREGATOR, 0), (Slot(0), 0), (Slot(1), 0)])
    metrics.pods_created([(AGGREGATOR, 1), (Slot(1), 2), (Slot(3), 1)])
    s = samples(metrics)
    assert s["fedkube_operator_pod_recreations_total{role=aggregator}"] == 1
    assert s["fedkube_operator_pod_recreations_total{role=client}"] == 2


def test_reconcile_durations_and_refusals_are_exposed() -> None:
    metrics = OperatorMetrics()
    with metrics.reconcile_seconds.time():
        pass
    metrics.admission_refusals.labels("UPDATE").inc()
    s = samples(metrics)
    assert s["fedkube_operator_reconcile_duration_seconds_count"] == 1
    assert s["fedkube_operator_admission_refusals_total{operation=UPDATE}"] == 1


def test_operator_flags() -> None:
    args = _parser().parse_args(["-A", "--metrics-port", "9100", "--log-format", "json"])
    assert (args.metrics_port, args.metrics_addr, args.log_format) == (9100, "0.0.0.0", "json")
    assert _parser().parse_args(["-A"]).metrics_port is None
