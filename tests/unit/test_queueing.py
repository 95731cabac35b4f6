"""Queueing: the queue-name label goes from the FederatedJob to its pods, and no other label does."""

from __future__ import annotations

from test_render import CONFIG, plan_of

from fedkube_operator.names import AGGREGATOR, Slot
from fedkube_operator.render import Owner, render_job_objects, render_pod


def body(labels: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": "digits", "namespace": "team-a", "uid": "uid-1", "labels": labels}}


def test_pods_carry_the_jobs_queue_name_and_nothing_else_of_its_labels() -> None:
    owner = Owner.of(body({"kueue.x-k8s.io/queue-name": "gpu-team-a", "team": "a", "fedkube.io/job": "forged"}))
    plan = plan_of()
    for slot in (AGGREGATOR, Slot(0), Slot(2)):
        labels = render_pod(plan, slot, owner, CONFIG, 0)["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/queue-name"] == "gpu-team-a"
        assert "team" not in labels and labels["fedkube.io/job"] == "digits"
    for obj in render_job_objects(plan, owner, CONFIG):  # only pods are queued
        assert "kueue.x-k8s.io/queue-name" not in obj["metadata"]["labels"], obj["kind"]


def test_an_unqueued_job_has_unqueued_pods() -> None:
    owner = Owner.of(body({"team": "a"}))
    assert owner.pod_labels == ()
    assert "kueue.x-k8s.io/queue-name" not in render_pod(plan_of(), Slot(0), owner, CONFIG, 0)["metadata"]["labels"]
