"""events: derived names make posting idempotent across a crash, yet a repeated Event is posted again."""

from __future__ import annotations

from datetime import UTC, datetime

from fedkube_operator.events import render_events
from fedkube_operator.render import Owner
from fedkube_operator.status import Event

OWNER = Owner("digits", "ns", "uid-1")
NOW = datetime(2030, 1, 1, tzinfo=UTC)
RUNNING = Event("Normal", "JobRunning", "the aggregator pod is running")


def names(events: list[Event], previous: dict, owner: Owner = OWNER) -> list[str]:
    return [e["metadata"]["name"] for e in render_events(events, owner, previous, NOW)]


def test_the_same_events_from_the_same_status_get_the_same_names() -> None:
    previous = {"eventCount": 3}
    round_2 = Event("Normal", "RoundCompleted", "round 2/5 completed, accuracy 0.91", key="round-2")
    first = names([RUNNING, round_2], previous)
    # After a crash the pass runs again, the round's wording changed (history trimmed): same names.
    again = names([Event("Normal", "RoundCompleted", "round 2/5 completed", key="round-2"), RUNNING], previous)
    assert sorted(first) == sorted(again)
    assert all(n.startswith("digits.") for n in first) and len(set(first)) == 2


def test_an_event_that_happens_again_later_or_to_another_job_gets_a_new_name() -> None:
    assert names([RUNNING], {"eventCount": 3}) != names([RUNNING], {"eventCount": 7})
    assert names([RUNNING], {}) != names([RUNNING], {}, Owner("digits", "ns", "uid-2"))


def test_rendered_events_point_at_the_job_and_duplicates_in_one_pass_collapse() -> None:
    (event,) = render_events([RUNNING, RUNNING], OWNER, {}, NOW)
    assert event["involvedObject"] == {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob",
                                       "name": "digits", "namespace": "ns", "uid": "uid-1"}
    assert (event["type"], event["reason"], event["count"]) == ("Normal", "JobRunning", 1)
    assert event["metadata"]["namespace"] == "ns" and event["firstTimestamp"] == "2030-01-01T00:00:00Z"
