"""The aggregator's status document, as its two readers see it: the operator and the local launcher.

The aggregator serves this document at `GET /status` (and leaves it in status.json and in its
pod's termination message). The operator's status polling and `fedkube run`'s progress display
both read it through `AggregatorReport.parse`, so they can never disagree about what it says.
Parsing is tolerant: a field the aggregator has not filled yet reads as None or 0, never as an
exception.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STATUS_PATH = "/status"


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
    rejected: int | None = None
    epsilon: float | None = None  # privacy spent up to this round, for jobs with spec.privacy

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


def number(value: Any) -> float | None:
    """A JSON number as a float; anything else (null, strings, booleans) as None."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def round_epsilon(entry: Mapping[str, Any]) -> float | None:
    """ε spent up to and including a history entry's round, in either shape an entry may carry it."""
    privacy = entry.get("privacy")
    nested = privacy.get("epsilon") if isinstance(privacy, Mapping) else None
    return number(entry.get("epsilon", nested))


def _count(value: Any) -> int:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class AggregatorReport:
    """The aggregator's `GET /status` document (also left as its pod's termination message)."""

    phase: str
    round: int
    rounds: int
    joined: int = 0
    selected: int = 0
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
    bytes_in: int = 0      # update bytes on the wire so far, and in the last round
    bytes_out: int = 0
    round_bytes_in: int = 0
    compression_ratio: float | None = None

    @property
    def completed_round(self) -> int:
        """The last finished round; `round` is the one in progress while the job runs."""
        if self.history:
            return self.history[-1].round
        return self.round if self.phase in ("Succeeded", "Failed") else max(0, self.round - 1)

    @property
    def epsilon(self) -> float | None:
        """Privacy spent so far, when the job runs with differential privacy."""
        return number((self.privacy or {}).get("epsilon"))

    @property
    def target_epsilon(self) -> float | None:
        return number((self.privacy or {}).get("targetEpsilon"))

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
                    entry["round"], number(entry.get("accuracy")), number(entry.get("loss")),
                    entry.get("clients_reported"), entry.get("clients_dropped"), number(entry.get("seconds")),
                    str(entry.get("status") or "completed"), entry.get("clients_rejected"), round_epsilon(entry)))
        return cls(
            phase=doc["phase"], round=_count(doc.get("round")), rounds=_count(doc.get("rounds")),
            joined=_count(clients.get("joined")), selected=_count(clients.get("selected")),
            reported=_count(clients.get("reported")), dropped=_count(clients.get("dropped")),
            rejected=_count(clients.get("rejected")),
            accuracy=number(metrics.get("accuracy")), loss=number(metrics.get("loss")),
            checkpoint=dict(checkpoint) if isinstance(checkpoint, Mapping) else None,
            privacy=dict(privacy) if isinstance(privacy, Mapping) else None,
            message=str(doc.get("message") or ""), history=tuple(history), reason=str(doc.get("reason") or ""),
            bytes_in=_count(metrics.get("bytes_in")), bytes_out=_count(metrics.get("bytes_out")),
            round_bytes_in=_count(metrics.get("round_bytes_in")),
            compression_ratio=number(metrics.get("compression_ratio")))

    @classmethod
    def parse_text(cls, text: str) -> AggregatorReport | None:
        try:
            return cls.parse(json.loads(text))
        except ValueError:
            return None
