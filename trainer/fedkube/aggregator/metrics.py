"""The aggregator's Prometheus metrics, derived at scrape time from its status document.

Every number comes from the document that `/status` serves and metrics.json records (the history
of finished rounds plus the live client counts), so a scrape can never disagree with them, and
an aggregator that resumes from a checkpoint continues its counters from the checkpointed
history instead of restarting them at zero.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from fedkube.status_document import number, round_epsilon

PHASES = ("Pending", "Running", "Succeeded", "Failed")
ROUND_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
STEP_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def job_epsilon(doc: Mapping[str, Any]) -> float | None:
    privacy = doc.get("privacy")
    if isinstance(privacy, Mapping) and number(privacy.get("epsilon")) is not None:
        return number(privacy.get("epsilon"))
    spent = [e for e in map(round_epsilon, doc.get("history") or []) if e is not None]
    return spent[-1] if spent else None


def histogram(name: str, documentation: str, values: Sequence[float], buckets: Iterable[float]) -> Metric:
    """A histogram rebuilt from all observations: cumulative bucket counts, +Inf last."""
    bounds = sorted(float(le) for le in buckets)
    counts = [0] * (len(bounds) + 1)
    for v in values:
        counts[bisect_left(bounds, v)] += 1  # the first bucket whose bound is >= v
    cumulative = list(accumulate(counts))
    pairs = [(repr(le), float(n)) for le, n in zip(bounds, cumulative, strict=False)]
    pairs.append(("+Inf", float(len(values))))
    return HistogramMetricFamily(name, documentation, buckets=pairs, sum_value=float(sum(values)))


def _durations(history: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [v for v in (number(h.get(key)) for h in history) if v is not None]


def _total(history: Sequence[Mapping[str, Any]], key: str) -> float:
    return float(sum(number(h.get(key)) or 0 for h in history))


def metric_families(doc: Mapping[str, Any]) -> Iterator[Metric]:
    """Every aggregator metric, from one status document. Pure, so it is tested on plain dicts."""
    history = [h for h in doc.get("history") or [] if isinstance(h, Mapping)]
    clients = doc.get("clients") or {}

    info = GaugeMetricFamily("fedkube_job_info", "The FederatedJob this aggregator serves.", labels=["federated_job"])
    info.add_metric([str(doc.get("job", ""))], 1)
    yield info
    phase = GaugeMetricFamily("fedkube_job_phase", "1 for the job's current phase, 0 for the others.",
                              labels=["phase"])
    for name in PHASES:
        phase.add_metric([name], 1.0 if doc.get("phase") == name else 0.0)
    yield phase
    yield GaugeMetricFamily("fedkube_job_rounds", "Rounds the job runs in all.", value=number(doc.get("rounds")) or 0)
    yield GaugeMetricFamily("fedkube_round", "The round in progress, or the last one once the job has ended.",
                            value=number(doc.get("round")) or 0)

    outcomes = Counter(str(h.get("status", "completed")) for h in history)
    rounds = CounterMetricFamily("fedkube_rounds", "Finished rounds, by outcome (abandoned: quorum missed).",
                                 labels=["outcome"])
    for outcome in ("completed", "abandoned"):
        rounds.add_metric([outcome], outcomes.get(outcome, 0))
    yield rounds
    yield histogram("fedkube_round_duration_seconds", "Time from sampling clients to closing the round.",
                    _durations(history, "seconds"), ROUND_BUCKETS)
    yield histogram("fedkube_aggregation_duration_seconds", "Time the strategy took to step the global model.",
                    _durations(history, "aggregation_seconds"), STEP_BUCKETS)
    yield histogram("fedkube_evaluation_duration_seconds", "Time of the central evaluation after a round.",
                    _durations(history, "evaluation_seconds"), STEP_BUCKETS)
    yield histogram("fedkube_checkpoint_duration_seconds", "Time to write a round's checkpoint.",
                    _durations(history, "checkpoint_seconds"), STEP_BUCKETS)

    yield GaugeMetricFamily("fedkube_clients_joined", "Clients connected to the aggregator now.",
                            value=number(clients.get("joined")) or 0)
    current = GaugeMetricFamily("fedkube_round_clients", "Clients of the round in progress, by state.",
                                labels=["state"])
    for state in ("selected", "reported"):
        current.add_metric([state], number(clients.get(state)) or 0)
    yield current
    yield CounterMetricFamily("fedkube_client_updates_reported", "Client updates accepted in finished rounds.",
                              value=_total(history, "clients_reported"))
    yield CounterMetricFamily("fedkube_clients_dropped", "Selected clients that did not answer before the round "
                              "closed.", value=_total(history, "clients_dropped"))
    reasons: Counter[str] = Counter()
    for h in history:
        reasons.update({str(k): int(v) for k, v in (h.get("rejected") or {}).items()})
    rejected = CounterMetricFamily("fedkube_client_updates_rejected", "Client updates refused in finished rounds, "
                                   "by reason.", labels=["reason"])
    for reason, count in sorted(reasons.items()):
        rejected.add_metric([reason], count)
    yield rejected
    yield CounterMetricFamily("fedkube_training_examples", "Training examples behind the accepted updates.",
                              value=_total(history, "num_examples"))
    yield CounterMetricFamily("fedkube_received_bytes", "Update bytes received from clients in finished rounds.",
                              value=_total(history, "bytes_in"))
    yield CounterMetricFamily("fedkube_sent_bytes", "Model bytes sent to clients in finished rounds.",
                              value=_total(history, "bytes_out"))

    metrics = doc.get("metrics") or {}
    for key, name, documentation in (
            ("accuracy", "fedkube_evaluation_accuracy_ratio", "Accuracy of the last central evaluation."),
            ("loss", "fedkube_evaluation_loss", "Loss of the last central evaluation.")):
        value = number(metrics.get(key))
        if value is not None:
            yield GaugeMetricFamily(name, documentation, value=value)
    epsilon = job_epsilon(doc)
    if epsilon is not None:
        yield GaugeMetricFamily("fedkube_privacy_epsilon", "Differential-privacy ε spent so far.", value=epsilon)
    privacy = doc.get("privacy")
    for key, name, documentation in (("delta", "fedkube_privacy_delta", "The δ that ε is reported at."),
                                     ("targetEpsilon", "fedkube_privacy_target_epsilon", "The job's ε budget.")):
        value = number(privacy.get(key)) if isinstance(privacy, Mapping) else None
        if value is not None:
            yield GaugeMetricFamily(name, documentation, value=value)


class StatusCollector(Collector):
    """Adapts a status-document source to prometheus_client's collector protocol."""

    def __init__(self, document: Callable[[], Mapping[str, Any]]) -> None:
        self.document = document

    def collect(self) -> Iterator[Metric]:
        return metric_families(self.document())


def exposition(document: Callable[[], Mapping[str, Any]]) -> Callable[[], tuple[bytes, str]]:
    """A `/metrics` handler: the text exposition format, rendered on each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(document))
    return lambda: (generate_latest(registry), CONTENT_TYPE_LATEST)
