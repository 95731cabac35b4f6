"""Aggregator metrics: derived from the status document, rendered in the text format and parsed back."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_samples import parse_samples

from fedkube.aggregator.metrics import exposition, metric_families

HISTORY = [
    {"round": 1, "status": "completed", "accuracy": 0.5, "loss": 1.2, "clients_reported": 3, "clients_dropped": 0,
     "rejected": {}, "num_examples": 300, "seconds": 0.8, "bytes_in": 1000, "bytes_out": 1200,
     "aggregation_seconds": 0.002, "evaluation_seconds": 0.03, "checkpoint_seconds": 0.2},
    {"round": 2, "status": "abandoned", "accuracy": None, "loss": None, "clients_reported": 1, "clients_dropped": 2,
     "rejected": {"late": 1}, "num_examples": 100, "seconds": 12.0, "bytes_in": 400, "bytes_out": 1200},
    {"round": 3, "status": "completed", "accuracy": 0.75, "loss": 0.6, "clients_reported": 2, "clients_dropped": 0,
     "rejected": {"late": 1, "non_finite": 2}, "num_examples": 200, "seconds": 3.0, "bytes_in": 800,
     "bytes_out": 1300, "aggregation_seconds": 0.004, "evaluation_seconds": 0.02, "checkpoint_seconds": 0.3,
     "epsilon": 1.5},
]
DOC = {"job": "digits", "phase": "Running", "round": 4, "rounds": 10, "message": "",
       "clients": {"joined": 4, "selected": 3, "reported": 1, "dropped": 2, "rejected": 4},
       "metrics": {"accuracy": 0.75, "loss": 0.6}, "history": HISTORY}


def scrape(doc: dict[str, Any]) -> dict[str, float]:
    """Render as /metrics would and parse with prometheus_client's own parser: sample name+labels -> value."""
    body, content_type = exposition(lambda: doc)()
    assert content_type.startswith("text/plain")
    return parse_samples(body.decode())


@pytest.mark.parametrize("sample, expected", [
    ("fedkube_job_info{federated_job=digits}", 1),
    ("fedkube_job_phase{phase=Running}", 1),
    ("fedkube_job_phase{phase=Succeeded}", 0),
    ("fedkube_job_rounds", 10),
    ("fedkube_round", 4),
    ("fedkube_rounds_total{outcome=completed}", 2),
    ("fedkube_rounds_total{outcome=abandoned}", 1),
    ("fedkube_round_duration_seconds_count", 3),
    ("fedkube_round_duration_seconds_sum", 15.8),
    ("fedkube_round_duration_seconds_bucket{le=1.0}", 1),
    ("fedkube_round_duration_seconds_bucket{le=5.0}", 2),
    ("fedkube_round_duration_seconds_bucket{le=+Inf}", 3),
    ("fedkube_aggregation_duration_seconds_count", 2),
    ("fedkube_checkpoint_duration_seconds_sum", 0.5),
    ("fedkube_evaluation_duration_seconds_count", 2),
    ("fedkube_clients_joined", 4),
    ("fedkube_round_clients{state=selected}", 3),
    ("fedkube_round_clients{state=reported}", 1),
    ("fedkube_client_updates_reported_total", 6),
    ("fedkube_clients_dropped_total", 2),
    ("fedkube_client_updates_rejected_total{reason=late}", 2),
    ("fedkube_client_updates_rejected_total{reason=non_finite}", 2),
    ("fedkube_training_examples_total", 600),
    ("fedkube_received_bytes_total", 2200),
    ("fedkube_sent_bytes_total", 3700),
    ("fedkube_evaluation_accuracy_ratio", 0.75),
    ("fedkube_evaluation_loss", 0.6),
    ("fedkube_privacy_epsilon", 1.5),
])
def test_scrape_agrees_with_the_document(sample: str, expected: float) -> None:
    assert scrape(DOC)[sample] == pytest.approx(expected)


def test_names_follow_prometheus_conventions() -> None:
    for family in metric_families(DOC):
        assert family.name.startswith("fedkube_"), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total"), "the exposition appends _total itself"
        if "duration" in family.name:
            assert family.name.endswith("_seconds") and family.type == "histogram"
        if "bytes" in family.name:
            assert family.type == "counter"
        assert family.documentation


@pytest.mark.parametrize("name, doc, absent, present", [
    ("a fresh aggregator has no evaluation and no privacy yet",
     {"job": "j", "phase": "Pending", "round": 0, "rounds": 3, "clients": {}, "metrics": {}, "history": []},
     ["fedkube_evaluation_accuracy_ratio", "fedkube_privacy_epsilon"],
     {"fedkube_round_duration_seconds_count": 0, "fedkube_rounds_total{outcome=completed}": 0}),
    ("job-level privacy wins over the history's",
     {**DOC, "privacy": {"epsilon": 2.5, "delta": 1e-5}}, [],
     {"fedkube_privacy_epsilon": 2.5, "fedkube_privacy_delta": 1e-5}),
    ("epsilon nested in a history entry",
     {**DOC, "history": [{"round": 1, "privacy": {"epsilon": 0.7}}]}, [], {"fedkube_privacy_epsilon": 0.7}),
])
def test_optional_metrics(name: str, doc: dict[str, Any], absent: list[str], present: dict[str, float]) -> None:
    samples = scrape(doc)
    for key in absent:
        assert key not in samples, name
    for key, value in present.items():
        assert samples[key] == pytest.approx(value), name


def test_readme_sample_scrape_parses_and_names_real_metrics() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## Observability"):]
    sample = section[section.index("```\n# TYPE") + 4:]
    sample = sample[:sample.index("```")]
    emitted = set()
    for family in metric_families({**DOC, "privacy": {"epsilon": 1.0, "delta": 1e-5, "targetEpsilon": 8.0}}):
        emitted.update(s.name for s in family.samples)
    parsed = [s.name for family in text_string_to_metric_families(sample) for s in family.samples]
    assert len(parsed) >= 20 and set(parsed) <= emitted
    image = re.search(r"!\[[^\]]*\]\((docs/images/[^)]+\.png)\)", section)
    assert image and (Path(__file__).resolve().parents[2] / image[1]).read_bytes()[:4] == b"\x89PNG"
