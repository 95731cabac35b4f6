"""kubectl apply a FederatedJob -> the operator runs it to Succeeded -> kubectl delete cleans up."""

from __future__ import annotations

import pytest
from checks import assert_owned, assert_pods_shaped, job_objects
from conftest import REPO, Cluster, wait_for
from prometheus_samples import scrape_metrics


def scraped(cluster: Cluster, pod: str, port: int) -> dict[str, float] | None:
    """The pod's /metrics at its pod IP, once it is running and listening."""
    ip = next((p["status"].get("podIP") for p in cluster.pods() if p["metadata"]["name"] == pod), None)
    try:
        return scrape_metrics(port, ip) if ip else None
    except OSError:
        return None


@pytest.mark.slow
def test_digits_example_runs_to_success_and_deletes_cleanly(cluster: Cluster, kubelet: object,
                                                            garbage_collector: object) -> None:
    cluster.start_operator()
    example = REPO / "examples" / "digits-fedavg.yaml"
    cluster.kubectl("apply", "--validate=false", "-f", str(example))

    pods = wait_for(lambda: len(p := cluster.pods("digits")) == 9 and p, 30, "1 + 8 pods",
                    diagnose=cluster.diagnose)
    assert_pods_shaped(pods, "digits", 8)
    assert_owned(cluster, "digits")
    # The aggregator pod serves Prometheus metrics on its container port named `metrics`.
    (container,) = [p for p in pods if p["metadata"]["name"] == "digits-aggregator"][0]["spec"]["containers"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "metrics"]
    samples = wait_for(lambda: scraped(cluster, "digits-aggregator", port), 120, "the aggregator's /metrics",
                       diagnose=cluster.diagnose)
    assert samples["fedkube_job_info{federated_job=digits}"] == 1 and samples["fedkube_job_rounds"] == 30

    job = cluster.wait_job("digits", lambda j: j.get("status", {}).get("phase") in ("Succeeded", "Failed"),
                           240, "finished")
    status = job["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "30/30"
    assert status["metrics"]["accuracy"] >= 0.9
    assert status["checkpoint"]["round"] == 30
    assert status["clients"]["joined"] == 8

    table = cluster.kubectl("get", "fj", "digits").stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "ROUND", "ACCURACY", "EPSILON", "AGE"]
    name, phase, progress, accuracy, _age = table[1].split()
    assert (name, phase, progress) == ("digits", "Succeeded", "30/30") and float(accuracy) >= 0.9

    events = cluster.kubectl("get", "events").stdout
    for round_ in range(1, 31):
        assert f"round {round_}/30 completed" in events, events
    assert "JobSucceeded" in events

    cluster.kubectl("delete", "fj", "digits", "--timeout=30s")
    wait_for(lambda: not job_objects(cluster, "digits"), 60, "the job's objects to be garbage-collected",
             diagnose=cluster.diagnose)
    assert cluster.kubectl("get", "fj", "digits", check=False).returncode != 0
