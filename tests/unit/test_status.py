"""status.decide: observations -> status, Events and pod actions, one table row per situation."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fedkube_operator.names import AGGREGATOR, Slot
from fedkube_operator.observe import AggregatorReport, PodView, RoundRecord
from fedkube_operator.status import (
    Decision,
    JobFacts,
    Observation,
    Timing,
    decide,
    invalid_spec_decision,
    merge_patch,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
JOB = JobFacts(name="j", partitions=3, rounds=5, min_available=2, backoff_limit=2, pending_timeout_seconds=60,
               ttl_seconds_after_finished=None)
TIMING = Timing(backoff_base_seconds=10, backoff_max_seconds=100, finished_pod_grace_seconds=30)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def pod(slot: Slot, phase: str = "Running", attempt: int = 0, **kw: Any) -> PodView:
    defaults: dict[str, Any] = {"created": ago(100), "ip": "10.0.0.1" if phase == "Running" else None,
                                "ready": phase == "Running"}
    if phase in ("Succeeded", "Failed"):
        defaults.update(finished=ago(50), exit_code=0 if phase == "Succeeded" else 137, reason="Error")
    defaults.update(kw)
    return PodView(name=slot.pod_name("j", attempt), slot=slot, attempt=attempt, phase=phase, owner_uid="u",
                   **defaults)


def running_pods(phase: str = "Running") -> tuple[PodView, ...]:
    return (pod(AGGREGATOR, phase), *(pod(Slot(p), phase) for p in range(3)))


def report(round_: int, phase: str = "Running", done: int | None = None, **kw: Any) -> AggregatorReport:
    done = round_ - 1 if done is None else done
    history = tuple(RoundRecord(r, accuracy=0.5 + r / 100, loss=1.0 / r, reported=3, dropped=0, seconds=1.0)
                    for r in range(1, done + 1))
    return AggregatorReport(phase=phase, round=round_, rounds=5, joined=3, reported=1, history=history,
                            accuracy=history[-1].accuracy if history else None,
                            loss=history[-1].loss if history else None, **kw)


def observe(pods: tuple[PodView, ...] = (), previous: dict[str, Any] | None = None, **kw: Any) -> Decision:
    return decide(Observation(job=kw.pop("job", JOB), pods=pods, report=kw.pop("report", None),
                              previous=previous or {}, now=kw.pop("now", NOW), timing=TIMING, **kw))


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def condition(decision: Decision, type_: str) -> dict[str, Any] | None:
    return next((c for c in decision.status["conditions"] if c["type"] == type_), None)


RUNNING_BEFORE = {"phase": "Running", "round": 1, "podsCreated": 4, "startTime": "2030-01-01T11:00:00Z"}


def test_a_new_job_creates_every_pod() -> None:
    decision = observe()
    assert decision.create == ((AGGREGATOR, 0), (Slot(0), 0), (Slot(1), 0), (Slot(2), 0))
    assert decision.status["phase"] == "Pending"
    assert decision.status["progress"] == "0/5"
    assert decision.status["startTime"] == "2030-01-01T12:00:00Z"
    assert reasons(decision) == ["PodsCreated"]


@pytest.mark.parametrize("name, pods, previous, rep, expected", [
    ("pods pending", tuple(replace(p, created=ago(5)) for p in running_pods("Pending")),
     {"phase": "Pending", "podsCreated": 4}, None,
     {"phase": "Pending", "create": (), "events": []}),
    ("aggregator starts", running_pods(), {"phase": "Pending", "podsCreated": 4}, report(1, "Pending", 0),
     {"phase": "Running", "create": (), "events": ["JobRunning"], "round": 0}),
    ("rounds complete", running_pods(), RUNNING_BEFORE, report(4),
     {"phase": "Running", "create": (), "events": ["RoundCompleted", "RoundCompleted"], "round": 3}),
    ("no report yet keeps the last round", running_pods(), RUNNING_BEFORE, None,
     {"phase": "Running", "create": (), "events": [], "round": 1}),
    ("a missing pod is created again", running_pods()[:3], RUNNING_BEFORE, report(2),
     {"phase": "Running", "create": ((Slot(2), 0),), "events": [], "round": 1}),
])
def test_progress(name: str, pods: tuple[PodView, ...], previous: dict[str, Any], rep: AggregatorReport | None,
                  expected: dict[str, Any]) -> None:
    decision = observe(pods, previous, report=rep)
    assert decision.status["phase"] == expected["phase"], name
    assert decision.create == expected["create"], name
    assert reasons(decision) == expected["events"], name
    if "round" in expected:
        assert decision.status["round"] == expected["round"], name
        assert decision.status["progress"] == f"{expected['round']}/5", name


def test_round_events_describe_each_finished_round() -> None:
    decision = observe(running_pods(), RUNNING_BEFORE, report=report(4))
    messages = [e.message for e in decision.events]
    assert messages == ["round 2/5 completed, accuracy 0.5200, loss 0.5000, 3 clients reported, 0 dropped, in 1.0s",
                        "round 3/5 completed, accuracy 0.5300, loss 0.3333, 3 clients reported, 0 dropped, in 1.0s"]
    assert decision.status["metrics"] == {"accuracy": 0.53, "loss": 0.3333}
    assert decision.status["clients"] == {"ready": 3, "joined": 3, "reported": 1, "dropped": 0, "rejected": 0}


def test_bytes_on_the_wire_and_compression_reach_the_job_status() -> None:
    doc = {"phase": "Running", "round": 3, "rounds": 5, "history": [{"round": 2, "accuracy": 0.9}],
           "metrics": {"accuracy": 0.9, "bytes_in": 4000, "bytes_out": 16000, "round_bytes_in": 2000,
                       "compression_ratio": 3.9876}}
    decision = observe(running_pods(), RUNNING_BEFORE, report=AggregatorReport.parse(doc))
    assert decision.status["metrics"] == {"accuracy": 0.9, "bytesIn": 4000, "bytesOut": 16000,
                                          "roundBytesIn": 2000, "compressionRatio": 3.988}


@pytest.mark.parametrize("name, failed_attempt, finished_ago, previous_restarts, create, events", [
    ("backoff not over", 0, 5, {}, (), []),
    ("backoff over", 0, 11, {}, ((Slot(1), 1),), ["PodFailed"]),
    ("second failure waits twice as long", 1, 15, {"j-client-1": 1}, (), []),
    ("second failure after 20s", 1, 21, {"j-client-1": 1}, ((Slot(1), 2),), ["PodFailed"]),
])
def test_failed_pods_are_recreated_after_exponential_backoff(
        name: str, failed_attempt: int, finished_ago: float, previous_restarts: dict[str, int],
        create: tuple[Any, ...], events: list[str]) -> None:
    pods = (*running_pods()[:2], pod(Slot(1), "Failed", failed_attempt, finished=ago(finished_ago)),
            running_pods()[3])
    decision = observe(pods, {**RUNNING_BEFORE, "restarts": previous_restarts})
    assert decision.create == create, name
    assert reasons(decision) == events, name
    assert decision.status["phase"] == "Running", name
    if create:
        assert decision.status["restarts"] == {"j-client-1": failed_attempt + 1}
        assert f"recreated as j-client-1-retry-{failed_attempt + 1}" in decision.events[0].message


def test_a_stale_view_of_a_recreated_pod_creates_it_again_without_a_second_event() -> None:
    pods = (*running_pods()[:2], pod(Slot(1), "Failed", 0), running_pods()[3])
    decision = observe(pods, {**RUNNING_BEFORE, "restarts": {"j-client-1": 1}})
    assert decision.create == ((Slot(1), 1),)
    assert reasons(decision) == []


def test_backoff_limit_exceeded_fails_the_job_naming_the_pod() -> None:
    failed = pod(Slot(2), "Failed", 2, message="Traceback...\nRuntimeError: boom")
    decision = observe((*running_pods()[:3], failed), {**RUNNING_BEFORE, "restarts": {"j-client-2": 2}})
    assert decision.status["phase"] == "Failed"
    assert condition(decision, "Failed")["reason"] == "BackoffLimitExceeded"
    assert "pod j-client-2-retry-2 failed (exit code 137 (Error): RuntimeError: boom)" in decision.status["message"]
    assert "more than spec.backoffLimit (2)" in decision.status["message"]
    assert decision.create == ()
    assert set(decision.delete) == {"j-aggregator", "j-client-0", "j-client-1"}
    assert decision.status["completionTime"] == "2030-01-01T12:00:00Z"
    assert reasons(decision) == ["BackoffLimitExceeded"]


def test_an_aggregator_that_reports_failure_fails_the_job_without_retry() -> None:
    aggregator = pod(AGGREGATOR, "Failed", message='{"phase": "Failed", "round": 2, "rounds": 5, '
                                                   '"message": "only 1 of 2 clients joined"}')
    decision = observe((aggregator, *running_pods()[1:]), RUNNING_BEFORE)
    assert decision.status["phase"] == "Failed"
    assert decision.create == ()
    assert condition(decision, "Failed")["reason"] == "AggregatorFailed"
    assert "only 1 of 2 clients joined" in decision.status["message"]


def test_a_crashed_aggregator_is_recreated_to_resume() -> None:
    aggregator = pod(AGGREGATOR, "Failed", finished=ago(30))
    decision = observe((aggregator, *running_pods()[1:]), RUNNING_BEFORE)
    assert decision.create == ((AGGREGATOR, 1),)
    assert decision.status["phase"] == "Pending"
    assert reasons(decision) == ["PodFailed"]


@pytest.mark.parametrize("name, message, rep, round_, accuracy", [
    ("no final report: every round was done", "", report(5, done=4), 5, 0.54),
    ("final report as termination message",
     '{"phase": "Succeeded", "round": 5, "rounds": 5, "metrics": {"accuracy": 0.97}, '
     '"history": [{"round": 5, "accuracy": 0.97}]}', None, 5, 0.97),
])
def test_an_aggregator_that_exits_zero_succeeds_the_job(name: str, message: str, rep: AggregatorReport | None,
                                                        round_: int, accuracy: float) -> None:
    previous = {**RUNNING_BEFORE, "round": 4, "metrics": {"accuracy": 0.54}}
    decision = observe((pod(AGGREGATOR, "Succeeded", message=message), *running_pods("Succeeded")[1:]), previous,
                       report=rep)
    assert decision.status["phase"] == "Succeeded", name
    assert decision.status["progress"] == f"{round_}/5", name
    assert decision.status["metrics"]["accuracy"] == accuracy, name
    assert condition(decision, "Succeeded")["status"] == "True", name
    assert "JobSucceeded" in reasons(decision), name
    assert [e.message for e in decision.events if e.reason == "RoundCompleted"][-1].startswith("round 5/5"), name


def test_an_exhausted_privacy_budget_succeeds_with_its_condition_and_epsilon() -> None:
    message = ("privacy budget exhausted: another round would reach epsilon 9.1 > targetEpsilon 8; stopped after 2 "
               "accounted rounds at epsilon 7.6 (delta 1e-05)")
    final = ('{"phase": "Succeeded", "round": 2, "rounds": 5, "reason": "PrivacyBudgetExhausted", "message": "'
             + message + '", "privacy": {"epsilon": 7.6, "delta": 1e-05, "targetEpsilon": 8}, '
             '"history": [{"round": 1, "epsilon": 5.0}, {"round": 2, "epsilon": 7.6}]}')
    decision = observe((pod(AGGREGATOR, "Succeeded", message=final), *running_pods("Succeeded")[1:]),
                       {**RUNNING_BEFORE, "round": 1})
    assert decision.status["phase"] == "Succeeded" and decision.status["progress"] == "2/5"
    assert decision.status["privacy"] == {"epsilon": 7.6, "delta": 1e-05}
    exhausted = condition(decision, "PrivacyBudgetExhausted")
    assert exhausted["status"] == "True" and exhausted["message"] == message
    assert condition(decision, "Succeeded")["reason"] == "PrivacyBudgetExhausted"
    assert decision.status["message"] == message


def test_suspend_deletes_active_pods_and_resume_recreates_them() -> None:
    pods = (*running_pods()[:3], pod(Slot(2), "Failed", 0))
    suspended = observe(pods, {**RUNNING_BEFORE, "restarts": {"j-client-2": 1}}, suspend=True)
    assert suspended.status["phase"] == "Suspended"
    assert set(suspended.delete) == {"j-aggregator", "j-client-0", "j-client-1"}
    assert suspended.create == ()
    assert condition(suspended, "Suspended")["status"] == "True"
    assert condition(suspended, "Running")["reason"] == "JobSuspended"
    assert reasons(suspended) == ["JobSuspended"]

    resumed = observe((pod(Slot(2), "Failed", 0),), suspended.status)
    assert resumed.status["phase"] == "Pending"
    assert resumed.create == ((AGGREGATOR, 0), (Slot(0), 0), (Slot(1), 0), (Slot(2), 1))
    assert condition(resumed, "Suspended")["status"] == "False"
    assert reasons(resumed) == ["JobResumed"]


@pytest.mark.parametrize("name, stuck, phase, failure", [
    ("one client stuck: quorum still reachable", [Slot(2)], "Running", None),
    ("two clients stuck: quorum unreachable", [Slot(1), Slot(2)], "Failed", "QuorumUnreachable"),
    ("aggregator stuck", [AGGREGATOR], "Failed", "QuorumUnreachable"),
])
def test_pods_pending_past_the_timeout_are_unschedulable(name: str, stuck: list[Slot], phase: str,
                                                         failure: str | None) -> None:
    pods = tuple(pod(p.slot, "Pending", created=ago(61), waiting="0/3 nodes are available: 3 Insufficient "
                                                                 "nvidia.com/gpu.") if p.slot in stuck else p
                 for p in running_pods())
    decision = observe(pods, RUNNING_BEFORE)
    assert decision.status["phase"] == phase, name
    unschedulable = condition(decision, "Unschedulable")
    assert unschedulable["status"] == "True" and "Insufficient nvidia.com/gpu" in unschedulable["message"], name
    assert "Unschedulable" in reasons(decision), name
    if failure:
        assert condition(decision, "Failed")["reason"] == failure, name
    again = observe(pods, decision.status)
    assert "Unschedulable" not in reasons(again), "the Event is posted once, on the transition"


def test_young_pending_pods_are_not_unschedulable_yet() -> None:
    pods = tuple(pod(p.slot, "Pending", created=ago(59)) for p in running_pods())
    decision = observe(pods, {"phase": "Pending", "podsCreated": 4})
    assert condition(decision, "Unschedulable") is None
    assert decision.status["phase"] == "Pending"


@pytest.mark.parametrize("name, phase, completed_ago, ttl, delete, delete_job", [
    ("succeeded, within grace", "Succeeded", 10, None, (), False),
    ("succeeded, after grace", "Succeeded", 31, None, ("j-client-2",), False),
    ("failed: at once", "Failed", 0, None, ("j-client-2",), False),
    ("ttl not yet", "Succeeded", 31, 100, ("j-client-2",), False),
    ("ttl passed", "Succeeded", 101, 100, ("j-client-2",), True),
])
def test_finished_jobs_clean_up_and_expire(name: str, phase: str, completed_ago: float, ttl: int | None,
                                           delete: tuple[str, ...], delete_job: bool) -> None:
    previous = {"phase": phase, "completionTime": (NOW - timedelta(seconds=completed_ago)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"), "round": 5}
    pods = (pod(AGGREGATOR, "Succeeded"), pod(Slot(0), "Succeeded"), pod(Slot(2), "Running"))
    decision = observe(pods, previous, job=replace(JOB, ttl_seconds_after_finished=ttl))
    assert decision.status == previous, name
    assert decision.delete == delete, name
    assert decision.delete_job is delete_job, name
    assert decision.create == () and decision.events == (), name


def test_refused_spec_changes_raise_a_condition_and_one_event() -> None:
    refused = observe(running_pods(), RUNNING_BEFORE, refused_changes=("spec.rounds",),
                      refusal_message="cannot change: spec.rounds")
    assert condition(refused, "SpecChangeRefused") == {
        "type": "SpecChangeRefused", "status": "True", "reason": "SpecChangeRefused",
        "message": "cannot change: spec.rounds", "lastTransitionTime": "2030-01-01T12:00:00Z"}
    assert reasons(refused) == ["SpecChangeRefused"]
    later = observe(running_pods(), refused.status, refused_changes=("spec.rounds",),
                    refusal_message="cannot change: spec.rounds", now=NOW + timedelta(seconds=5))
    assert reasons(later) == []
    assert condition(later, "SpecChangeRefused")["lastTransitionTime"] == "2030-01-01T12:00:00Z"
    restored = observe(running_pods(), later.status)
    assert condition(restored, "SpecChangeRefused")["status"] == "False"


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    first = observe(running_pods(), {"phase": "Pending", "podsCreated": 4}, report=report(2))
    second = observe(running_pods(), first.status, report=report(3), now=NOW + timedelta(minutes=1))
    assert condition(second, "Running")["lastTransitionTime"] == condition(first, "Running")["lastTransitionTime"]
    assert condition(second, "Running")["message"] == "round 2/5, accuracy 0.5200"


def test_invalid_spec_fails_once_and_expires_with_its_ttl() -> None:
    decision = invalid_spec_decision({}, ["spec.rounds: 0 is less than the minimum of 1"], NOW)
    assert decision.status["phase"] == "Failed"
    assert condition(decision, "Failed")["reason"] == "InvalidSpec"
    assert reasons(decision) == ["InvalidSpec"]
    again = invalid_spec_decision(decision.status, ["whatever"], NOW + timedelta(seconds=10), 5)
    assert again.events == () and again.delete_job is True


@pytest.mark.parametrize("old, new, patch", [
    ({}, {}, {}),
    ({"a": 1}, {"a": 1}, {}),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),
    ({"m": {"x": 1, "y": 2}}, {"m": {"x": 1}}, {"m": {"y": None}}),
    ({"m": {"x": 1}}, {"m": {"x": 1, "z": 3}}, {"m": {"z": 3}}),
    ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),
    ({}, {"m": {}}, {"m": {}}),
])
def test_merge_patch(old: dict[str, Any], new: dict[str, Any], patch: dict[str, Any]) -> None:
    assert merge_patch(old, new) == patch


def test_every_round_gets_an_event_even_when_the_history_was_cut_short() -> None:
    # A termination message keeps only the newest rounds; polls may have missed rounds 2..4.
    final = '{"phase": "Succeeded", "round": 5, "rounds": 5, "history": [{"round": 5, "accuracy": 0.97}]}'
    previous = {**RUNNING_BEFORE, "round": 1}
    decision = observe((pod(AGGREGATOR, "Succeeded", message=final), *running_pods("Succeeded")[1:]), previous)
    messages = [e.message for e in decision.events if e.reason == "RoundCompleted"]
    assert [m.split(" completed")[0] for m in messages] == [f"round {r}/5" for r in (2, 3, 4, 5)]
    assert messages[-1] == "round 5/5 completed, accuracy 0.9700"
