"""Gang scheduling: the rendered PodGroup and pod fields, and a job whose PodGroup API is absent."""

from __future__ import annotations

from typing import Any

import pytest
from test_render import CONFIG, OWNER, plan_of
from test_status import JOB, condition, observe, reasons

from fedkube.spec import SpecError, parse_manifest
from fedkube_operator.gang import gang_of
from fedkube_operator.names import AGGREGATOR, Slot
from fedkube_operator.render import render_pod, render_pod_group


def gang_plan(**scheduling: Any) -> Any:
    return plan_of(scheduling={"gang": True, **scheduling}, clients={"minAvailable": 2}, data={"partitions": 5})


@pytest.mark.parametrize("min_available", [1, 2, 5])
def test_coscheduling_pod_group_holds_the_aggregator_and_a_quorum(min_available: int) -> None:
    plan = plan_of(scheduling={"gang": True, "pendingTimeoutSeconds": 90},
                   clients={"minAvailable": min_available}, data={"partitions": 5})
    gang = gang_of(plan.name, plan.manifest["spec"])
    assert gang is not None
    group = render_pod_group(plan, OWNER, gang)
    assert group["apiVersion"] == "scheduling.x-k8s.io/v1alpha1" and group["kind"] == "PodGroup"
    assert group["metadata"]["name"] == "digits" and group["metadata"]["namespace"] == "team-a"
    assert group["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
    assert group["spec"] == {"minMember": min_available + 1, "scheduleTimeoutSeconds": 90}


def test_volcano_pod_group_has_volcanos_api_and_no_coscheduling_fields() -> None:
    plan = gang_plan(gangScheduler="volcano")
    gang = gang_of(plan.name, plan.manifest["spec"])
    assert gang is not None
    group = render_pod_group(plan, OWNER, gang)
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1" and group["kind"] == "PodGroup"
    assert group["spec"] == {"minMember": 3}


@pytest.mark.parametrize("slot", [AGGREGATOR, Slot(0), Slot(4)])
def test_every_pod_names_the_gang_scheduler_and_its_group(slot: Slot) -> None:
    pod = render_pod(gang_plan(), slot, OWNER, CONFIG, 1)
    assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
    assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "digits"
    assert "annotations" not in pod["metadata"]
    volcano = render_pod(gang_plan(gangScheduler="volcano"), slot, OWNER, CONFIG, 1)
    assert volcano["spec"]["schedulerName"] == "volcano"
    assert volcano["metadata"]["annotations"] == {"scheduling.k8s.io/group-name": "digits"}
    assert "scheduling.x-k8s.io/pod-group" not in volcano["metadata"]["labels"]


def test_without_gang_there_is_no_group_and_the_default_scheduler() -> None:
    plan = plan_of(scheduling={"gangScheduler": "volcano"})
    assert gang_of(plan.name, plan.manifest["spec"]) is None
    pod = render_pod(plan, Slot(0), OWNER, CONFIG, 0)
    assert "schedulerName" not in pod["spec"] and "annotations" not in pod["metadata"]
    assert not any(k.startswith("scheduling.") for k in pod["metadata"]["labels"])


def test_gang_is_a_valid_spec_and_an_unknown_scheduler_names_the_field() -> None:
    plan = gang_plan()
    assert plan.manifest["spec"]["scheduling"]["gang"] is True
    bad = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "j"},
           "spec": {**plan.manifest["spec"], "scheduling": {"gang": True, "gangScheduler": "yunikorn"}}}
    with pytest.raises(SpecError, match=r"spec\.scheduling\.gangScheduler"):
        parse_manifest(bad, check_entrypoint=False)


MISSING = "spec.scheduling.gang needs the PodGroup API scheduling.x-k8s.io/v1alpha1, ..."


def test_without_the_pod_group_api_no_pod_is_created_and_a_condition_says_why() -> None:
    decision = observe(pod_group_missing=MISSING)
    assert decision.create == ()
    assert decision.status["phase"] == "Pending" and decision.status["message"] == MISSING
    missing = condition(decision, "PodGroupMissing")
    assert missing is not None
    assert (missing["status"], missing["reason"], missing["message"]) == ("True", "PodGroupAPIMissing", MISSING)
    assert reasons(decision) == ["PodGroupAPIMissing"]
    # The next pass says it again without a second Event; once the group exists, pods follow.
    again = observe(pod_group_missing=MISSING, previous=decision.status)
    assert reasons(again) == [] and again.create == ()
    fixed = observe(previous=decision.status)
    assert len(fixed.create) == JOB.partitions + 1
    created = condition(fixed, "PodGroupMissing")
    assert created is not None and (created["status"], created["reason"]) == ("False", "PodGroupCreated")
