"""The operator's /metrics, scraped over HTTP and parsed with prometheus_client's parser while real
jobs run through kubectl (an aggregator pod's metrics port is scraped in test_e2e_training)."""

from __future__ import annotations

from conftest import Cluster, failing_job, free_port, small_job, wait_for
from prometheus_samples import scrape_metrics as scrape


def phase(job: dict) -> str | None:
    return job.get("status", {}).get("phase")


def test_operator_metrics_count_refusals_recreations_and_phases(cluster: Cluster, kubelet: object) -> None:
    port = free_port()
    cluster.start_operator("--metrics-port", str(port), "--metrics-addr", "127.0.0.1")
    before = scrape(port)
    assert before["fedkube_operator_jobs{phase=Running}"] == 0

    invalid = small_job("invalid", rounds=0)
    assert cluster.apply(invalid, check=False).returncode != 0  # the admission webhook refuses it
    cluster.apply(failing_job("broken", backoff_limit=1))
    cluster.wait_job("broken", lambda j: phase(j) == "Failed", 60, "Failed")

    samples = wait_for(lambda: (s := scrape(port))["fedkube_operator_jobs{phase=Failed}"] == 1 and s, 10,
                       "the Failed job to be counted")
    assert samples["fedkube_operator_admission_refusals_total{operation=CREATE}"] == 1
    assert samples["fedkube_operator_pod_recreations_total{role=aggregator}"] == 1  # broken-aggregator-retry-1
    assert samples["fedkube_operator_reconcile_duration_seconds_count"] >= 2
    assert sum(v for k, v in samples.items() if k.startswith("fedkube_operator_jobs{")) == 1

    cluster.kubectl("delete", "fj", "broken", "--timeout=30s")
    wait_for(lambda: scrape(port)["fedkube_operator_jobs{phase=Failed}"] == 0, 20, "the deleted job to be forgotten")
