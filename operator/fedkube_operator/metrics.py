"""The operator's Prometheus metrics: how long a reconcile pass takes, how many jobs are in each
phase, how often pods are recreated after a failure, and how often admission refuses a manifest.

One registry per operator (not prometheus_client's global one), so tests can build operators side
by side and the exposition holds exactly these metrics plus the process collectors.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from fedkube_operator.names import Slot
from fedkube_operator.status import Phase

RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class JobPhases(Collector):
    """`fedkube_operator_jobs{phase}`: every phase, zeros included, so dashboards see them all."""

    def __init__(self) -> None:
        self.phases: dict[tuple[str, str], str] = {}

    def collect(self) -> Iterator[Metric]:
        tally = Tally(self.phases.values())
        family = GaugeMetricFamily("fedkube_operator_jobs", "FederatedJobs by phase.", labels=["phase"])
        for phase in Phase:
            family.add_metric([phase.value], tally.get(phase.value, 0))
        yield family


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconcile_seconds = Histogram(
            "fedkube_operator_reconcile_duration_seconds", "Time of one reconcile pass of one FederatedJob.",
            buckets=RECONCILE_BUCKETS, registry=self.registry)
        self.pod_recreations = Counter(
            "fedkube_operator_pod_recreations", "Pods created again after their previous attempt failed.",
            ["role"], registry=self.registry)
        self.admission_refusals = Counter(
            "fedkube_operator_admission_refusals", "FederatedJob manifests the admission webhook refused.",
            ["operation"], registry=self.registry)
        self.jobs = JobPhases()
        self.registry.register(self.jobs)

    def job_seen(self, namespace: str, name: str, phase: str | None, deleted: bool = False) -> None:
        if deleted:
            self.jobs.phases.pop((namespace, name), None)
        else:
            self.jobs.phases[(namespace, name)] = phase or Phase.PENDING.value

    def pods_created(self, created: list[tuple[Slot, int]]) -> None:
        for slot, attempt in created:
            if attempt > 0:
                self.pod_recreations.labels("aggregator" if slot.partition is None else "client").inc()

    def serve(self, port: int, addr: str) -> None:
        """GET /metrics on a thread of its own, beside Kopf's event loop."""
        start_http_server(port, addr, registry=self.registry)
