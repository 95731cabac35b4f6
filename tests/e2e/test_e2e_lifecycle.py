"""Suspend and resume, TTL after finishing, the pending timeout, refused spec changes."""

from __future__ import annotations

import json

import pytest
import yaml
from checks import job_objects
from conftest import Cluster, failing_job, small_job, wait_for


def phase(job: dict) -> str | None:
    return job.get("status", {}).get("phase")


def condition(job: dict, type_: str) -> dict | None:
    return next((c for c in job.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def test_pending_timeout_marks_the_job_unschedulable_and_fails_it_without_quorum(cluster: Cluster,
                                                                                  kubelet: object) -> None:
    cluster.start_operator()
    job = small_job("gpu", partitions=2, template={"client": {"resources": {"limits": {"nvidia.com/gpu": 1}}}})
    job["spec"]["scheduling"] = {"pendingTimeoutSeconds": 10}
    cluster.apply(job)
    failed = cluster.wait_job("gpu", lambda j: phase(j) == "Failed", 30, "Failed")
    unschedulable = condition(failed, "Unschedulable")
    assert unschedulable["status"] == "True"
    assert "Insufficient nvidia.com/gpu" in unschedulable["message"]
    assert condition(failed, "Failed")["reason"] == "QuorumUnreachable"
    assert "spec.clients.minAvailable (2)" in failed["status"]["message"]
    events = cluster.kubectl("get", "events").stdout
    assert "Unschedulable" in events and "Insufficient nvidia.com/gpu" in events
    wait_for(lambda: all(p["status"].get("phase") != "Running" for p in cluster.pods("gpu")), 10,
             "the aggregator pod to be deleted")


def test_backoff_limit_exceeded_fails_the_job_with_a_reason_naming_the_pod(cluster: Cluster,
                                                                            kubelet: object) -> None:
    cluster.start_operator()
    cluster.apply(failing_job("broken", backoff_limit=1))
    failed = cluster.wait_job("broken", lambda j: phase(j) == "Failed", 60, "Failed")
    assert condition(failed, "Failed")["reason"] == "BackoffLimitExceeded"
    message = failed["status"]["message"]
    assert message.startswith("pod broken-aggregator-retry-1 failed (exit code 1"), message
    assert "more than spec.backoffLimit (1) allows" in message
    assert failed["status"]["restarts"] == {"broken-aggregator": 1}
    names = {p["metadata"]["name"]: p["status"].get("phase") for p in cluster.pods("broken")}
    assert names["broken-aggregator"] == names["broken-aggregator-retry-1"] == "Failed"
    assert "broken-aggregator-retry-2" not in names
    events = cluster.kubectl("get", "events").stdout
    assert "PodFailed" in events and "BackoffLimitExceeded" in events


def test_ttl_deletes_a_finished_job(cluster: Cluster, kubelet: object, garbage_collector: object) -> None:
    cluster.start_operator()
    cluster.apply(failing_job("short-lived", backoff_limit=0, ttlSecondsAfterFinished=2))
    cluster.wait_job("short-lived", lambda j: phase(j) == "Failed", 60, "Failed")
    wait_for(lambda: cluster.kubectl("get", "fj", "short-lived", check=False).returncode != 0, 20,
             "the TTL to delete the job", diagnose=cluster.diagnose)
    wait_for(lambda: not job_objects(cluster, "short-lived"), 20, "garbage collection of the job's objects")


def test_spec_changes_other_than_suspend_are_refused_by_the_operator(cluster: Cluster) -> None:
    cluster.start_operator(webhook=False)  # no admission webhook: the operator itself must refuse
    cluster.apply(small_job("steady", rounds=3))
    cluster.wait_job("steady", lambda j: phase(j) == "Pending", 20, "Pending")

    cluster.kubectl("patch", "fj", "steady", "--type=merge", "-p", json.dumps({"spec": {"rounds": 7}}))
    refused = cluster.wait_job("steady", lambda j: (condition(j, "SpecChangeRefused") or {}).get("status") == "True",
                               20, "SpecChangeRefused")
    assert "changed: spec.rounds" in condition(refused, "SpecChangeRefused")["message"]
    assert refused["status"]["progress"] == "0/3"
    stored = yaml.safe_load(cluster.get("configmap", "steady-manifest")["data"]["manifest.yaml"])
    assert stored["spec"]["rounds"] == 3
    assert "SpecChangeRefused" in cluster.kubectl("get", "events").stdout

    cluster.kubectl("patch", "fj", "steady", "--type=merge", "-p", json.dumps({"spec": {"rounds": 3}}))
    cluster.wait_job("steady", lambda j: condition(j, "SpecChangeRefused")["status"] == "False", 20,
                     "the refusal to clear once the spec is restored")


@pytest.mark.slow
def test_suspend_deletes_pods_and_resume_continues_from_the_checkpoint(
        cluster: Cluster, kubelet: object, garbage_collector: object) -> None:
    cluster.start_operator()
    job = small_job("pausable", rounds=20, ttlSecondsAfterFinished=3)
    job["spec"]["clients"]["roundTimeoutSeconds"] = 20
    job["spec"]["clients"]["localEpochs"] = 20  # rounds long enough that the suspension lands mid-job
    cluster.apply(job)
    cluster.wait_job("pausable", lambda j: j.get("status", {}).get("round", 0) >= 2, 120, "round 2")

    cluster.kubectl("patch", "fj", "pausable", "--type=merge", "-p",
                    json.dumps({"spec": {"scheduling": {"suspend": True}}}))
    suspended = cluster.wait_job("pausable", lambda j: phase(j) == "Suspended", 20, "Suspended")
    assert condition(suspended, "Suspended")["status"] == "True"
    wait_for(lambda: not [p for p in cluster.pods("pausable") if p["status"].get("phase") in ("Pending", "Running")],
             20, "the pods to be deleted")
    done_before = cluster.job("pausable")["status"]["round"]
    assert done_before >= 2

    cluster.kubectl("patch", "fj", "pausable", "--type=merge", "-p",
                    json.dumps({"spec": {"scheduling": {"suspend": False}}}))
    succeeded = cluster.wait_job("pausable", lambda j: phase(j) in ("Succeeded", "Failed"), 180, "finished")
    assert phase(succeeded) == "Succeeded", succeeded["status"]
    assert succeeded["status"]["progress"] == "20/20"
    assert condition(succeeded, "Suspended")["status"] == "False"
    assert f"resuming after round {done_before}" in kubelet.log("pausable-aggregator")  # type: ignore[attr-defined]
    events = cluster.kubectl("get", "events").stdout
    assert "JobSuspended" in events and "JobResumed" in events

    wait_for(lambda: cluster.kubectl("get", "fj", "pausable", check=False).returncode != 0, 20,
             "ttlSecondsAfterFinished to delete the job")
