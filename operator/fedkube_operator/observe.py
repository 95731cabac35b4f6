"""What the operator sees, parsed into small frozen views: its pods, and the aggregator's report.

Parsing is tolerant: a field the kubelet or the aggregator has not filled yet reads as None,
never as an exception, because a reconcile pass must always be able to run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fedkube.status_document import AggregatorReport, RoundRecord
from fedkube_operator.names import LABEL_ATTEMPT, Slot, slot_of

__all__ = ["AggregatorReport", "RoundRecord", "PodView", "pod_view", "parse_time", "format_time"]

ACTIVE_POD_PHASES = frozenset({"Pending", "Running", "Unknown"})


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def format_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PodView:
    """One of a job's pods, as much as the operator needs to decide about it."""

    name: str
    slot: Slot
    attempt: int
    phase: str
    owner_uid: str | None = None
    created: datetime | None = None
    finished: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""  # the container's termination message (or last log lines on error)
    ip: str | None = None
    ready: bool = False
    deleting: bool = False
    waiting: str = ""  # why a Pending pod is not running: the scheduler's or the kubelet's words

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_POD_PHASES and not self.deleting

    def describe_exit(self) -> str:
        parts = [f"exit code {self.exit_code}" if self.exit_code is not None else "no exit code"]
        if self.reason:
            parts.append(f"({self.reason})")
        text = " ".join(parts)
        last_line = self.message.strip().splitlines()[-1] if self.message.strip() else ""
        return f"{text}: {last_line[:200]}" if last_line else text


def _waiting_message(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            return condition.get("message") or condition.get("reason") or "not scheduled"
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            reason, message = waiting.get("reason", ""), waiting.get("message", "")
            return f"{reason}: {message}" if reason and message else reason or message
    return ""


def pod_view(body: Mapping[str, Any]) -> PodView | None:
    """The view of a pod, or None if its labels do not make it one of a job's pods."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    slot = slot_of(labels)
    if slot is None:
        return None
    try:
        attempt = int(labels.get(LABEL_ATTEMPT, "0"))
    except ValueError:
        attempt = 0
    status = body.get("status") or {}
    owners = [ref.get("uid") for ref in meta.get("ownerReferences") or [] if ref.get("controller")]
    terminated: Mapping[str, Any] = {}
    ready = False
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or terminated
        ready = ready or bool(container.get("ready"))
    exit_code = terminated.get("exitCode")
    return PodView(
        name=meta.get("name", ""),
        slot=slot,
        attempt=attempt,
        phase=status.get("phase") or "Pending",
        owner_uid=owners[0] if owners else None,
        created=parse_time(meta.get("creationTimestamp")),
        finished=parse_time(terminated.get("finishedAt")),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=terminated.get("reason") or status.get("reason") or "",
        message=terminated.get("message") or status.get("message") or "",
        ip=status.get("podIP"),
        ready=ready,
        deleting=bool(meta.get("deletionTimestamp")),
        waiting=_waiting_message(status),
    )
