"""The operator's /metrics and an aggregator pod's named metrics port, scraped over HTTP and parsed
with prometheus_client's parser while real jobs run through kubectl."""

from __future__ import annotations

import urllib.request

from conftest import Cluster, failing_job, free_port, small_job, wait_for
from prometheus_client.parser import text_string_to_metric_families

from fedkube.plan import METRICS_PORT


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


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


def test_aggregator_pod_serves_metrics_on_its_named_port(cluster: Cluster, kubelet: object) -> None:
    cluster.start_operator(webhook=False)
    cluster.apply(small_job("scraped", partitions=2, rounds=3))

    def scraped() -> dict[str, float] | None:
        try:
            samples = scrape(METRICS_PORT)
        except OSError:
            return None
        return samples if samples.get("fedkube_job_info{federated_job=scraped}") == 1 else None

    samples = wait_for(scraped, 90, "the aggregator pod's /metrics", diagnose=cluster.diagnose)
    assert samples["fedkube_job_rounds"] == 3
    (pod,) = [p for p in cluster.pods("scraped") if p["metadata"]["name"] == "scraped-aggregator"]
    (container,) = pod["spec"]["containers"]
    assert {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"} in container["ports"]
    done = cluster.wait_job("scraped", lambda j: phase(j) in ("Succeeded", "Failed"), 180, "finished")
    assert phase(done) == "Succeeded"
