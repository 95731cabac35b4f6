"""Gang scheduling: one PodGroup per job, so its aggregator and a quorum of clients start together or not at all.

A job that holds some GPUs while waiting for the rest trains nothing and starves its neighbours.
With `spec.scheduling.gang` the pods name a gang scheduler and a PodGroup whose `minMember` is
the aggregator plus `spec.clients.minAvailable` clients: the scheduler binds none of them until
that many fit. Two APIs are supported: the scheduler-plugins coscheduling plugin and Volcano.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GangApi:
    """What one gang scheduler expects: its PodGroup API, its scheduler, and how a pod names its group."""

    api_version: str
    scheduler_name: str
    group_label: str | None  # pods name their group by this label (coscheduling)...
    group_annotation: str | None  # ...or by this annotation (Volcano)
    timeout_field: str | None  # the PodGroup's own schedule timeout, where its API has one
    install_hint: str


GANG_APIS = {
    "coscheduling": GangApi("scheduling.x-k8s.io/v1alpha1", "scheduler-plugins-scheduler",
                            "scheduling.x-k8s.io/pod-group", None, "scheduleTimeoutSeconds",
                            "install the scheduler-plugins coscheduling plugin and its PodGroup CRD"),
    "volcano": GangApi("scheduling.volcano.sh/v1beta1", "volcano", None, "scheduling.k8s.io/group-name", None,
                       "install Volcano"),
}
POD_GROUP_KIND = "PodGroup"


@dataclass(frozen=True)
class Gang:
    """A job's gang: its API, its PodGroup's name and the members that must be placed together."""

    api: GangApi
    name: str
    min_member: int

    def pod_labels(self) -> dict[str, str]:
        return {self.api.group_label: self.name} if self.api.group_label else {}

    def pod_annotations(self) -> dict[str, str]:
        return {self.api.group_annotation: self.name} if self.api.group_annotation else {}

    def missing_api_message(self) -> str:
        return (f"spec.scheduling.gang needs the PodGroup API {self.api.api_version}, which this cluster does "
                f"not serve: {self.api.install_hint}, or set spec.scheduling.gang to false; "
                f"no pods are created until PodGroup {self.name} can be")


def gang_of(name: str, spec: Mapping[str, Any]) -> Gang | None:
    """The gang of a job's validated, defaulted spec (as a plan keeps it), or None without
    `spec.scheduling.gang`; the group is named after the job."""
    scheduling = spec.get("scheduling") or {}
    if not scheduling.get("gang"):
        return None
    return Gang(GANG_APIS[scheduling.get("gangScheduler", "coscheduling")], name,
                int(spec["clients"]["minAvailable"]) + 1)
