"""Gang scheduling against the emulated API server: the PodGroup before the pods, and no PodGroup API.

No pod runs (no kubelet): what is checked is what the operator asks the API server for. The gang
schedulers themselves cannot run here; their PodGroup CRDs are minimal definitions, so the kinds exist.
"""

from __future__ import annotations

from typing import Any

from checks import third_party_crd
from conftest import Cluster, small_job, wait_for

COSCHEDULING = ("scheduling.x-k8s.io", "PodGroup", "podgroups", "v1alpha1")
VOLCANO = ("scheduling.volcano.sh", "PodGroup", "podgroups", "v1beta1")


def creations(log: list[Any]) -> list[str]:
    """The plural of every object the operator created, in order."""
    return [r.resource.plural for r in list(log) if r.resource is not None and r.resource.plural
            and str(getattr(r.method, "value", r.method)).upper() == "POST"
            and r.headers.get("User-Agent", "") == "fedkube-operator"]


def condition(job: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in job.get("status", {}).get("conditions") or [] if c["type"] == type_), None)


def test_a_gang_job_creates_its_pod_group_before_its_pods(cluster: Cluster) -> None:
    cluster.apply(third_party_crd(*COSCHEDULING))
    assert cluster.emulator.emulator is not None
    log = cluster.emulator.emulator.access_log = []
    cluster.start_operator()
    job = small_job("gang", partitions=4)
    job["spec"]["clients"]["minAvailable"] = 3
    job["spec"]["scheduling"] = {"gang": True, "pendingTimeoutSeconds": 120}
    cluster.apply(job)
    pods = wait_for(lambda: len(p := cluster.pods("gang")) == 5 and p, 30, "1 + 4 pods", diagnose=cluster.diagnose)

    group = cluster.get("podgroups.scheduling.x-k8s.io", "gang")
    assert group["spec"] == {"minMember": 4, "scheduleTimeoutSeconds": 120}
    assert group["metadata"]["ownerReferences"][0]["uid"] == cluster.job("gang")["metadata"]["uid"]
    made = creations(log)
    assert made.index("podgroups") < made.index("pods"), made
    for pod in pods:
        assert pod["spec"]["schedulerName"] == "scheduler-plugins-scheduler"
        assert pod["metadata"]["labels"]["scheduling.x-k8s.io/pod-group"] == "gang"


def test_without_the_pod_group_api_a_condition_explains_and_pods_wait_for_it(cluster: Cluster) -> None:
    cluster.start_operator()
    job = small_job("volcanic", partitions=2)
    job["spec"]["scheduling"] = {"gang": True, "gangScheduler": "volcano"}
    cluster.apply(job)
    stuck = cluster.wait_job("volcanic", lambda j: condition(j, "PodGroupMissing"), 30, "a PodGroupMissing condition")
    missing = condition(stuck, "PodGroupMissing")
    assert missing is not None and missing["status"] == "True" and missing["reason"] == "PodGroupAPIMissing"
    assert "scheduling.volcano.sh/v1beta1" in missing["message"] and "spec.scheduling.gang" in missing["message"]
    assert stuck["status"]["phase"] == "Pending" and stuck["status"]["message"] == missing["message"]
    assert cluster.pods("volcanic") == []
    assert "PodGroupAPIMissing" in {e["reason"] for e in cluster.events("volcanic")}

    cluster.apply(third_party_crd(*VOLCANO))  # the API appears: the group, then the pods follow
    pods = wait_for(lambda: len(p := cluster.pods("volcanic")) == 3 and p, 30, "1 + 2 pods", diagnose=cluster.diagnose)
    assert cluster.get("podgroups.scheduling.volcano.sh", "volcanic")["spec"] == {"minMember": 3}
    assert {p["metadata"]["annotations"]["scheduling.k8s.io/group-name"] for p in pods} == {"volcanic"}
    resolved = cluster.wait_job("volcanic", lambda j: (condition(j, "PodGroupMissing") or {}).get("status") == "False",
                                30, "the condition resolved")
    assert condition(resolved, "PodGroupMissing")["reason"] == "PodGroupCreated"  # type: ignore[index]
