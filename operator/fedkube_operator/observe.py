"""What the operator sees, parsed into small frozen views: its pods, and the aggregator's report.

Parsing is tolerant: a field the kubelet or the aggregator has not filled yet reads as None,
never as an exception, because a reconcile pass must always be able to run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fedkube_operator.names import LABEL_ATTEMPT, Slot, slot_of

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


@dataclass(frozen=True)
class RoundRecord:
    """One finished round, from the report's history."""

    round: int
    accuracy: float | None = None
    loss: float | None = None
    reported: int | None = None
    dropped: int | None = None
    seconds: float | None = None
    outcome: str = "completed"  # or "abandoned": too few clients reported

    def describe(self, rounds: int) -> str:
        parts = [f"round {self.round}/{rounds} {self.outcome}"]
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.4f}")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4f}")
        if self.reported is not None:
            parts.append(f"{self.reported} clients reported, {self.dropped or 0} dropped")
        if self.seconds is not None:
            parts.append(f"in {self.seconds:.1f}s")
        return ", ".join(parts)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class AggregatorReport:
    """The aggregator's `GET /status` document (also left as its pod's termination message)."""

    phase: str
    round: int
    rounds: int
    joined: int = 0
    reported: int = 0
    dropped: int = 0
    rejected: int = 0
    accuracy: float | None = None
    loss: float | None = None
    checkpoint: dict[str, Any] | None = None
    privacy: dict[str, Any] | None = None
    message: str = ""
    history: tuple[RoundRecord, ...] = ()
    reason: str = ""  # why the job ended early, e.g. PrivacyBudgetExhausted

    @property
    def completed_round(self) -> int:
        """The last finished round; `round` is the one in progress while the job runs."""
        if self.history:
            return self.history[-1].round
        return self.round if self.phase in ("Succeeded", "Failed") else max(0, self.round - 1)

    @classmethod
    def parse(cls, doc: Any) -> AggregatorReport | None:
        """The report in a decoded status document, or None if it is not one."""
        if not isinstance(doc, Mapping) or doc.get("phase") not in ("Pending", "Running", "Succeeded", "Failed"):
            return None
        clients = doc.get("clients") if isinstance(doc.get("clients"), Mapping) else {}
        metrics = doc.get("metrics") if isinstance(doc.get("metrics"), Mapping) else {}
        checkpoint = doc.get("checkpoint")
        privacy = doc.get("privacy")
        history = []
        for entry in doc.get("history") or []:
            if isinstance(entry, Mapping) and isinstance(entry.get("round"), int):
                history.append(RoundRecord(
                    entry["round"], _number(entry.get("accuracy")), _number(entry.get("loss")),
                    entry.get("clients_reported"), entry.get("clients_dropped"), _number(entry.get("seconds")),
                    str(entry.get("status") or "completed")))
        return cls(
            phase=doc["phase"], round=_count(doc.get("round")), rounds=_count(doc.get("rounds")),
            joined=_count(clients.get("joined")), reported=_count(clients.get("reported")),
            dropped=_count(clients.get("dropped")), rejected=_count(clients.get("rejected")),
            accuracy=_number(metrics.get("accuracy")), loss=_number(metrics.get("loss")),
            checkpoint=dict(checkpoint) if isinstance(checkpoint, Mapping) else None,
            privacy=dict(privacy) if isinstance(privacy, Mapping) else None,
            message=str(doc.get("message") or ""), history=tuple(history), reason=str(doc.get("reason") or ""))

    @classmethod
    def parse_text(cls, text: str) -> AggregatorReport | None:
        try:
            return cls.parse(json.loads(text))
        except ValueError:
            return None
