"""Crashes mid-job: a client, the aggregator, the operator itself. The job still completes."""

from __future__ import annotations

import signal

import pytest
from conftest import Cluster, small_job, wait_for
from kubelet_stand_in import Kubelet


def phase(job: dict) -> str | None:
    return job.get("status", {}).get("phase")


def round_of(job: dict) -> int:
    return int(job.get("status", {}).get("round", 0))


def running(cluster: Cluster, name: str) -> bool:
    return any(p["metadata"]["name"] == name and p["status"].get("phase") == "Running" for p in cluster.pods())


def round_events(cluster: Cluster, job: str, rounds: int) -> dict[int, int]:
    """How many RoundCompleted Events the job has for each round."""
    messages = [e["message"] for e in cluster.events(job) if e["reason"] == "RoundCompleted"]
    return {r: sum(m.startswith(f"round {r}/{rounds} ") for m in messages) for r in range(1, rounds + 1)}


def object_uids(cluster: Cluster) -> dict[str, str]:
    """The job's objects other than pods (which the operator deletes once the job is done), by uid."""
    return {f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["uid"]
            for o in cluster.get("configmaps,secrets,services,persistentvolumeclaims")["items"]}


def resilient_job(name: str, rounds: int) -> dict:
    """Four clients, a quorum of three, short rounds: one client may be missing from a round."""
    job = small_job(name, partitions=4, rounds=rounds)
    job["spec"]["clients"].update(minAvailable=3, roundTimeoutSeconds=20)
    return job


@pytest.mark.slow
def test_killed_client_and_aggregator_are_recreated_and_training_resumes_from_the_checkpoint(
        cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.start_operator()
    cluster.apply(resilient_job("chaos", rounds=6))
    cluster.wait_job("chaos", lambda j: round_of(j) >= 1, 120, "round 1")

    kubelet.kill("chaos-client-1")
    wait_for(lambda: running(cluster, "chaos-client-1-retry-1"), 30, "client 1 to be recreated",
             diagnose=cluster.diagnose)
    before = cluster.wait_job("chaos", lambda j: round_of(j) >= 2 and j["status"].get("checkpoint"), 120,
                              "round 2 and a checkpoint")
    checkpointed = before["status"]["checkpoint"]["round"]

    kubelet.kill("chaos-aggregator")
    wait_for(lambda: running(cluster, "chaos-aggregator-retry-1"), 30, "the aggregator to be recreated",
             diagnose=cluster.diagnose)
    done = cluster.wait_job("chaos", lambda j: phase(j) in ("Succeeded", "Failed"), 240, "finished")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "6/6" and status["checkpoint"]["round"] == 6
    assert status["restarts"] == {"chaos-aggregator": 1, "chaos-client-1": 1}

    resumed_log = kubelet.log("chaos-aggregator-retry-1")
    resumed_after = int(resumed_log.split("resuming after round ")[1].split()[0])
    assert resumed_after >= checkpointed, resumed_log
    failures = [e["message"] for e in cluster.events("chaos") if e["reason"] == "PodFailed"]
    assert any(m.startswith("pod chaos-client-1 failed (exit code 137") for m in failures), failures
    assert any(m.startswith("pod chaos-aggregator failed (exit code 137") for m in failures), failures
    assert all(n >= 1 for n in round_events(cluster, "chaos", 6).values())


@pytest.mark.slow
def test_operator_killed_and_restarted_mid_job_duplicates_nothing_and_finishes(
        cluster: Cluster, kubelet: Kubelet) -> None:
    cluster.start_operator()
    cluster.apply(resilient_job("steady", rounds=5))
    first = cluster.wait_job("steady", lambda j: round_of(j) >= 1, 120, "round 1")
    uids = object_uids(cluster)

    cluster.stop_operator(signal.SIGKILL)
    # Training goes on without the operator; the restarted one catches up from what it finds.
    wait_for(lambda: "round 2/5 " in kubelet.log("steady-aggregator"), 120, "round 2 without the operator",
             diagnose=cluster.diagnose)  # completed, or abandoned when a starved client misses it
    cluster.start_operator()
    done = cluster.wait_job("steady", lambda j: phase(j) in ("Succeeded", "Failed"), 240, "finished")
    status = done["status"]
    assert status["phase"] == "Succeeded", status
    assert status["progress"] == "5/5"
    assert status["startTime"] == first["status"]["startTime"]

    created = cluster.emulator.creations("pods")
    assert len(created) == len(set(created))  # no pod created twice
    assert {"steady-aggregator", *(f"steady-client-{i}" for i in range(4))} <= set(created)
    assert all("-retry-" in name for name in created[5:])  # only recreations of failed pods, if any
    assert object_uids(cluster) == uids  # the same Secret, ConfigMap, Service and claim: none replaced
    assert round_events(cluster, "steady", 5) == {r: 1 for r in range(1, 6)}
    reasons = [e["reason"] for e in cluster.events("steady")]
    assert reasons.count("PodsCreated") == reasons.count("JobRunning") == reasons.count("JobSucceeded") == 1
