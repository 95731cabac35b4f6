"""Names and labels of the objects the operator owns, in one place.

Every name is derived from the job's name and a pod's slot and attempt, never random, so a
restarted operator finds what an earlier one created, and creating twice is a harmless 409.
"""

from __future__ import annotations

from dataclasses import dataclass

LABEL_JOB = "fedkube.io/job"
LABEL_ROLE = "fedkube.io/role"
LABEL_PARTITION = "fedkube.io/partition"
LABEL_ATTEMPT = "fedkube.io/attempt"

ROLE_AGGREGATOR = "aggregator"
ROLE_CLIENT = "client"

MANAGED_BY = "fedkube-operator"


@dataclass(frozen=True)
class Slot:
    """A place in a job that one pod at a time fills: the aggregator, or the client of a partition."""

    partition: int | None = None  # None: the aggregator

    @property
    def order(self) -> int:
        """Aggregator first, then clients by partition."""
        return -1 if self.partition is None else self.partition

    @property
    def role(self) -> str:
        return ROLE_AGGREGATOR if self.partition is None else ROLE_CLIENT

    def base_name(self, job: str) -> str:
        """The first pod's name, also the key under `status.restarts`."""
        if self.partition is None:
            return f"{job}-aggregator"
        return f"{job}-client-{self.partition}"

    def pod_name(self, job: str, attempt: int) -> str:
        """Attempt 0 gets the base name; each recreation a new name, so a failed pod stays for its logs."""
        base = self.base_name(job)
        return base if attempt == 0 else f"{base}-retry-{attempt}"

    def __str__(self) -> str:
        return self.role if self.partition is None else f"client {self.partition}"


AGGREGATOR = Slot()


def slots(partitions: int) -> list[Slot]:
    """Every slot of a job with `partitions` clients, aggregator first."""
    return [AGGREGATOR, *(Slot(p) for p in range(partitions))]


CA_IDENTITY = "ca"  # the job CA's Secret: certificate and key, for the operator only; no pod mounts it


def tls_secret_name(job: str, identity: str) -> str:
    """One Secret per mTLS identity ("aggregator", "client-<partition>"), so a pod can mount only its own."""
    return f"{job}-tls-{identity}"


def ckks_secret_name(job: str) -> str:
    """The CKKS job key: mounted by client pods, never by the aggregator's."""
    return f"{job}-ckks"


def configmap_name(job: str) -> str:
    return f"{job}-manifest"


def service_name(job: str) -> str:
    return f"{job}-aggregator"


def checkpoint_claim_name(job: str) -> str:
    return f"{job}-checkpoints"


def job_labels(job: str) -> dict[str, str]:
    """Labels on every object of a job; `fedkube.io/job` is what the operator selects by."""
    return {
        "app.kubernetes.io/name": "fedkube",
        "app.kubernetes.io/instance": job,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        LABEL_JOB: job,
    }


def pod_labels(job: str, slot: Slot, attempt: int) -> dict[str, str]:
    labels = {**job_labels(job), "app.kubernetes.io/component": slot.role,
              LABEL_ROLE: slot.role, LABEL_ATTEMPT: str(attempt)}
    if slot.partition is not None:
        labels[LABEL_PARTITION] = str(slot.partition)
    return labels


def slot_of(labels: dict[str, str]) -> Slot | None:
    """The slot a pod fills, from its labels; None for a pod that is not one of ours."""
    role = labels.get(LABEL_ROLE)
    if role == ROLE_AGGREGATOR:
        return AGGREGATOR
    if role == ROLE_CLIENT:
        try:
            return Slot(int(labels[LABEL_PARTITION]))
        except (KeyError, ValueError):
            return None
    return None
