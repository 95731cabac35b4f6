"""A job's Events as API objects whose names are derived, never random: posting is idempotent.

A pass posts its Events before it writes the status that records them, so a crash in between
loses nothing: the next pass starts from the same status, derives the same Events with the same
names, and the API server answers 409 for those already posted instead of storing duplicates.
A name hashes the job's uid, `status.eventCount` before the pass (so an Event that happens again
later, say a second resume, gets a new name) and the Event's key: its reason and message, or its
round for round Events, whose wording can change as the aggregator's history is trimmed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from fedkube_operator import API_VERSION, KIND
from fedkube_operator.observe import format_time
from fedkube_operator.render import Owner
from fedkube_operator.status import Event

COMPONENT = "fedkube-operator"


def event_count(status: Mapping[str, Any]) -> int:
    return int(status.get("eventCount") or 0)


def event_name(owner: Owner, base: int, event: Event) -> str:
    key = event.key or f"{event.reason}/{event.message}"
    digest = hashlib.sha256(f"{owner.uid}/{base}/{key}".encode()).hexdigest()[:16]
    return f"{owner.name}.{digest}"


def render_events(events: Iterable[Event], owner: Owner, previous: Mapping[str, Any],
                  now: datetime) -> list[dict[str, Any]]:
    """core/v1 Events about the job, one per distinct Event of this pass."""
    base = event_count(previous)
    stamp = format_time(now)
    rendered: dict[str, dict[str, Any]] = {}
    for event in events:
        name = event_name(owner, base, event)
        rendered.setdefault(name, {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": owner.namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": owner.name,
                               "namespace": owner.namespace, "uid": owner.uid},
            "type": event.type, "reason": event.reason, "message": event.message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })
    return list(rendered.values())
