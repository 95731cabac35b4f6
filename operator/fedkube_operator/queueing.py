"""Queueing: the job labels a queue controller reads, copied from the FederatedJob onto its pods.

A queue controller (Kueue) admits a queued job by setting `spec.scheduling.suspend` to false;
the `kueue.x-k8s.io/queue-name` label says which queue, and the pods carry it so that quota
accounting and pod-level admission see the same queue as the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
INHERITED_LABELS = (QUEUE_LABEL,)


def inherited_labels(metadata: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """The job's labels that its pods carry too, in a stable order."""
    labels = metadata.get("labels") or {}
    return tuple((key, str(labels[key])) for key in INHERITED_LABELS if key in labels)
