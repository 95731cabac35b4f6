"""Observations -> the job's status, the Events to post and the pods to create or delete: pure.

Everything is recomputed from what is observed (the job's pods, the aggregator's report, the
status last written) on every pass, never incremented, so a restarted operator, a lost watch
event or two passes that overlap all converge on the same answer. Restart counts come from
the pods themselves: attempt N of a slot is named `<base>-retry-N`, and failed pods stay (for
their logs) until the job is deleted; `status.restarts` keeps the count across a suspension,
when pods are gone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from fedkube.spec import FederatedJob
from fedkube_operator.names import AGGREGATOR, Slot, slots
from fedkube_operator.observe import AggregatorReport, PodView, RoundRecord, format_time, parse_time


class Phase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.FAILED})


class ConditionType(StrEnum):
    """`status.conditions[].type`: Running always; the others once they have been true."""

    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"
    UNSCHEDULABLE = "Unschedulable"
    SPEC_CHANGE_REFUSED = "SpecChangeRefused"
    PRIVACY_BUDGET_EXHAUSTED = "PrivacyBudgetExhausted"
    POD_GROUP_MISSING = "PodGroupMissing"


class Reason(StrEnum):
    """Reasons of conditions and Events."""

    PODS_PENDING = "PodsPending"
    WAITING_FOR_CLIENTS = "WaitingForClients"
    ROUND_COMPLETED = "RoundCompleted"
    JOB_RUNNING = "JobRunning"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_SUSPENDED = "JobSuspended"
    JOB_RESUMED = "JobResumed"
    PODS_CREATED = "PodsCreated"
    POD_FAILED = "PodFailed"
    BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
    AGGREGATOR_FAILED = "AggregatorFailed"
    QUORUM_UNREACHABLE = "QuorumUnreachable"
    INVALID_SPEC = "InvalidSpec"
    UNSCHEDULABLE = "Unschedulable"
    SCHEDULED = "Scheduled"
    SPEC_CHANGE_REFUSED = "SpecChangeRefused"
    SPEC_RESTORED = "SpecRestored"
    PRIVACY_BUDGET_EXHAUSTED = "PrivacyBudgetExhausted"
    POD_GROUP_API_MISSING = "PodGroupAPIMissing"
    POD_GROUP_CREATED = "PodGroupCreated"
    POD_CREATION_REFUSED = "PodCreationRefused"


@dataclass(frozen=True)
class Timing:
    """Operator-wide clocks: the per-pod backoff, and how long clients may outlive the job."""

    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 360.0
    finished_pod_grace_seconds: float = 30.0

    def backoff(self, failures_before: int) -> timedelta:
        """Delay before recreating a pod whose slot has already been recreated `failures_before` times."""
        return timedelta(seconds=min(self.backoff_max_seconds, self.backoff_base_seconds * 2 ** failures_before))


@dataclass(frozen=True)
class JobFacts:
    """The parts of the running spec that status and failure handling depend on."""

    name: str
    partitions: int
    rounds: int
    min_available: int
    backoff_limit: int
    pending_timeout_seconds: int
    ttl_seconds_after_finished: int | None

    @classmethod
    def of(cls, job: FederatedJob) -> JobFacts:
        spec = job.spec
        return cls(job.name, spec.data.partitions, spec.rounds, spec.clients.min_available,
                   spec.backoff_limit, spec.scheduling.pending_timeout_seconds, spec.ttl_seconds_after_finished)


@dataclass(frozen=True)
class Observation:
    job: JobFacts
    pods: tuple[PodView, ...]  # this job's pods only (owner uid checked)
    report: AggregatorReport | None  # polled just now; None when unreachable or not running
    previous: Mapping[str, Any]  # the status as last written
    now: datetime
    suspend: bool = False
    refused_changes: tuple[str, ...] = ()
    refusal_message: str = ""
    generation: int | None = None
    timing: Timing = Timing()
    pod_group_missing: str = ""  # why a gang job's PodGroup cannot be created; its pods wait for it
    creation_refused: str = ""  # the API server refused to create a pod for good (400/422): why


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str
    key: str = ""  # what makes it this Event, for its name; "" means reason and message


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    create: tuple[tuple[Slot, int], ...] = ()  # (slot, attempt)
    delete: tuple[str, ...] = ()  # pod names
    delete_job: bool = False


@dataclass
class _Verdict:
    """Working notes of one pass, before they are frozen into a Decision."""

    create: list[tuple[Slot, int]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    failure: tuple[Reason, str] | None = None
    stuck: list[PodView] = field(default_factory=list)
    succeeded: bool = False

    def fail(self, reason: Reason, message: str) -> None:
        if self.failure is None:
            self.failure = (reason, message)


def _restart_counts(obs: Observation) -> dict[Slot, int]:
    recorded = obs.previous.get("restarts") or {}
    counts = {slot: int(recorded.get(slot.base_name(obs.job.name), 0)) for slot in slots(obs.job.partitions)}
    for pod in obs.pods:
        if pod.slot in counts:
            counts[pod.slot] = max(counts[pod.slot], pod.attempt)
    return counts


def _pending_too_long(pod: PodView, obs: Observation) -> bool:
    limit = timedelta(seconds=obs.job.pending_timeout_seconds)
    return pod.phase == "Pending" and not pod.deleting and pod.created is not None and obs.now - pod.created > limit


def _judge_slots(obs: Observation, restarts: dict[Slot, int], current: dict[Slot, PodView]) -> _Verdict:
    """Per slot: create what is missing, recreate what failed (after its backoff), note what is stuck."""
    verdict = _Verdict()
    for slot in slots(obs.job.partitions):
        attempt = restarts[slot]
        pod = current.get(slot)
        if pod is None:
            verdict.create.append((slot, attempt))
        elif pod.deleting:
            continue
        elif pod.phase == "Succeeded":
            verdict.succeeded = verdict.succeeded or slot == AGGREGATOR
        elif pod.phase == "Failed":
            if attempt >= obs.job.backoff_limit:
                verdict.fail(Reason.BACKOFF_LIMIT_EXCEEDED,
                             f"pod {pod.name} failed ({pod.describe_exit()}); {slot} has failed {attempt + 1} "
                             f"times, more than spec.backoffLimit ({obs.job.backoff_limit}) allows")
            elif obs.now >= (pod.finished or pod.created or obs.now) + obs.timing.backoff(attempt):
                verdict.create.append((slot, attempt + 1))
                restarts[slot] = attempt + 1
                new_name = slot.pod_name(obs.job.name, attempt + 1)
                verdict.events.append(Event("Warning", Reason.POD_FAILED,
                                            f"pod {pod.name} failed ({pod.describe_exit()}); recreated as "
                                            f"{new_name} (restart {attempt + 1} of {obs.job.backoff_limit})"))
        elif _pending_too_long(pod, obs):
            verdict.stuck.append(pod)
    return verdict


def _check_quorum(obs: Observation, verdict: _Verdict, current: dict[Slot, PodView]) -> None:
    """After the pending timeout: fail if the aggregator, or too many clients, cannot be scheduled."""
    if not verdict.stuck:
        return
    timeout = obs.job.pending_timeout_seconds
    stuck = {pod.slot for pod in verdict.stuck}
    if AGGREGATOR in stuck:
        pod = current[AGGREGATOR]
        verdict.fail(Reason.QUORUM_UNREACHABLE,
                     f"aggregator pod {pod.name} has been Pending for more than {timeout}s: {pod.waiting}")
        return
    viable = obs.job.partitions - len(stuck)
    if viable < obs.job.min_available:
        verdict.fail(Reason.QUORUM_UNREACHABLE,
                     f"{len(stuck)} of {obs.job.partitions} client pods have been Pending for more than {timeout}s, "
                     f"so at most {viable} can join, fewer than spec.clients.minAvailable "
                     f"({obs.job.min_available}): {verdict.stuck[0].name}: {verdict.stuck[0].waiting}")


def _condition(previous: Mapping[str, Mapping[str, Any]], type_: str, status: bool, reason: str,
               message: str, now: datetime) -> dict[str, Any]:
    """A metav1.Condition; its lastTransitionTime moves only when its status does."""
    value = "True" if status else "False"
    before = previous.get(type_)
    since = before.get("lastTransitionTime") if before and before.get("status") == value else None
    return {"type": type_, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since or format_time(now)}


def _transitioned_to_true(previous: Mapping[str, Mapping[str, Any]], type_: str) -> bool:
    return (previous.get(type_) or {}).get("status") != "True"


def _round_events(obs: Observation, report: AggregatorReport | None, from_round: int, through: int) -> list[Event]:
    """One Event per round finished since the last pass, described by the report's history where it
    still holds the round (histories are cut short in termination messages; polls can miss rounds)."""
    history = {r.round: r for r in (report.history if report is not None else ())}
    if report is not None and report.completed_round not in history:
        history[report.completed_round] = RoundRecord(report.completed_round, report.accuracy, report.loss)
    return [Event("Normal", Reason.ROUND_COMPLETED, (history.get(n) or RoundRecord(n)).describe(obs.job.rounds),
                  key=f"round-{n}") for n in range(from_round + 1, through + 1)]


def _final_report(pod: PodView | None) -> AggregatorReport | None:
    """The report an exited aggregator left as its termination message, if it left one."""
    if pod is None or pod.active or not pod.message:
        return None
    return AggregatorReport.parse_text(pod.message)


def _merge_report(status: dict[str, Any], report: AggregatorReport | None, obs: Observation) -> None:
    """Fill round, clients, metrics, checkpoint and privacy from the report or, without one, keep the last."""
    prev = obs.previous
    clients = dict(prev.get("clients") or {})
    if report is None:
        status["round"] = int(prev.get("round") or 0)
        for key in ("metrics", "checkpoint", "privacy"):
            if prev.get(key):
                status[key] = prev[key]
    else:
        status["round"] = report.completed_round
        clients.update(joined=report.joined, reported=report.reported, dropped=report.dropped,
                       rejected=report.rejected)
        metrics = {k: round(v, 4) for k, v in (("accuracy", report.accuracy), ("loss", report.loss)) if v is not None}
        if report.bytes_in or report.bytes_out:
            metrics.update(bytesIn=report.bytes_in, bytesOut=report.bytes_out, roundBytesIn=report.round_bytes_in)
        if report.compression_ratio is not None:
            metrics["compressionRatio"] = round(report.compression_ratio, 3)
        if metrics:
            status["metrics"] = metrics
        elif prev.get("metrics"):
            status["metrics"] = prev["metrics"]
        if report.checkpoint:
            status["checkpoint"] = {k: report.checkpoint[k] for k in ("uri", "round") if k in report.checkpoint}
        elif prev.get("checkpoint"):
            status["checkpoint"] = prev["checkpoint"]
        if report.privacy:
            status["privacy"] = {k: report.privacy[k] for k in ("epsilon", "delta") if k in report.privacy}
    clients["ready"] = sum(1 for p in obs.pods if p.slot != AGGREGATOR and p.active and p.phase == "Running")
    status["clients"] = clients


def _terminal_pass(obs: Observation, phase: Phase) -> Decision:
    """A finished job: clean up pods left running, and delete the job once its TTL has passed."""
    status = dict(obs.previous)
    completed = parse_time(status.get("completionTime")) or obs.now
    waited = (obs.now - completed).total_seconds()
    grace = 0.0 if phase == Phase.FAILED else obs.timing.finished_pod_grace_seconds
    delete = tuple(p.name for p in obs.pods if p.active) if waited >= grace else ()
    ttl = obs.job.ttl_seconds_after_finished
    return Decision(status=status, delete=delete, delete_job=ttl is not None and waited >= ttl)


def decide(obs: Observation) -> Decision:
    """One reconcile pass: the status to write, the Events to post, the pods to create or delete."""
    prev = obs.previous
    prev_phase = prev.get("phase")
    if prev_phase in TERMINAL:
        return _terminal_pass(obs, Phase(prev_phase))

    restarts = _restart_counts(obs)
    by_name = {(p.slot, p.attempt): p for p in obs.pods}
    current = {slot: by_name[(slot, n)] for slot, n in restarts.items() if (slot, n) in by_name}
    verdict = _judge_slots(obs, restarts, current)
    _check_quorum(obs, verdict, current)
    if obs.creation_refused:
        verdict.fail(Reason.POD_CREATION_REFUSED, obs.creation_refused)

    aggregator = current.get(AGGREGATOR)
    final = _final_report(aggregator)
    report = final or obs.report
    if report is not None and report.phase == "Failed" and not verdict.succeeded:
        verdict.failure = (Reason.AGGREGATOR_FAILED, f"the aggregator reported failure: {report.message}")

    if verdict.succeeded:
        phase = Phase.SUCCEEDED
    elif verdict.failure is not None:
        phase = Phase.FAILED
    elif obs.suspend:
        phase = Phase.SUSPENDED
    elif aggregator is not None and aggregator.active and aggregator.phase == "Running":
        phase = Phase.RUNNING
    else:
        phase = Phase.PENDING

    status: dict[str, Any] = {"phase": str(phase)}
    _merge_report(status, report, obs)
    if phase == Phase.SUCCEEDED and final is None and not (report is not None and report.reason):
        # The aggregator exits 0 once every round is done (or early, saying why); it left no final report.
        status["round"] = obs.job.rounds
    status["rounds"] = obs.job.rounds
    status["progress"] = f"{status['round']}/{obs.job.rounds}"

    events: list[Event] = []
    create: list[tuple[Slot, int]] = []
    delete: list[str] = []
    if phase in (Phase.RUNNING, Phase.PENDING) and not obs.pod_group_missing:
        create = verdict.create
        events += verdict.events
        if create and not prev.get("podsCreated"):
            events.append(Event("Normal", Reason.PODS_CREATED,
                                f"creating {len(create)} pods: the aggregator and one client per partition"))
    elif phase in (Phase.SUSPENDED, Phase.FAILED):
        delete = [p.name for p in obs.pods if p.active]

    events += _round_events(obs, report, int(prev.get("round") or 0), status["round"])
    status["message"], reason = _summary(phase, status, verdict, report, obs)
    status["conditions"] = _conditions(obs, phase, reason, status["message"], verdict)
    if report is not None and report.reason == ConditionType.PRIVACY_BUDGET_EXHAUSTED:
        previous = {c.get("type"): c for c in prev.get("conditions") or [] if isinstance(c, Mapping)}
        status["conditions"].append(_condition(previous, ConditionType.PRIVACY_BUDGET_EXHAUSTED, True,
                                               Reason.PRIVACY_BUDGET_EXHAUSTED, report.message, obs.now))
    status["restarts"] = {slot.base_name(obs.job.name): n
                          for slot, n in sorted(restarts.items(), key=lambda i: i[0].order) if n} or None
    status["podsCreated"] = len({p.name for p in obs.pods} | {s.pod_name(obs.job.name, n) for s, n in create})
    status["podsDesired"] = 1 + obs.job.partitions
    if obs.generation is not None:
        status["observedGeneration"] = obs.generation
    status["startTime"] = prev.get("startTime") or format_time(obs.now)
    if phase in TERMINAL:
        status["completionTime"] = format_time(obs.now)
    events += _transition_events(obs, phase, status, verdict)
    return Decision(status={k: v for k, v in status.items() if v is not None}, events=tuple(events),
                    create=tuple(create), delete=tuple(delete))


def _summary(phase: Phase, status: Mapping[str, Any], verdict: _Verdict, report: AggregatorReport | None,
             obs: Observation) -> tuple[str, Reason]:
    """The one-line `status.message` and the reason behind it."""
    if phase == Phase.FAILED and verdict.failure is not None:
        return verdict.failure[1], verdict.failure[0]
    accuracy = (status.get("metrics") or {}).get("accuracy")
    result = f", accuracy {accuracy:.4f}" if accuracy is not None else ""
    if phase == Phase.SUCCEEDED and report is not None and report.reason == Reason.PRIVACY_BUDGET_EXHAUSTED:
        return report.message, Reason.PRIVACY_BUDGET_EXHAUSTED
    if phase == Phase.SUCCEEDED:
        return f"completed {status['round']}/{obs.job.rounds} rounds{result}", Reason.JOB_SUCCEEDED
    if phase == Phase.SUSPENDED:
        return ("suspended (spec.scheduling.suspend is true): pods deleted; training resumes from the last "
                "checkpoint when it is false"), Reason.JOB_SUSPENDED
    if phase == Phase.RUNNING:
        if report is not None and report.phase == "Pending":
            return (f"waiting for clients: {report.joined} joined, spec.clients.minAvailable is "
                    f"{obs.job.min_available}"), Reason.WAITING_FOR_CLIENTS
        return f"round {status['round']}/{obs.job.rounds}{result}", Reason.ROUND_COMPLETED
    if obs.pod_group_missing and not obs.pods:
        return obs.pod_group_missing, Reason.POD_GROUP_API_MISSING
    if verdict.stuck:
        return f"pod {verdict.stuck[0].name} is Pending: {verdict.stuck[0].waiting}", Reason.PODS_PENDING
    return "waiting for the aggregator pod to run", Reason.PODS_PENDING


def _conditions(obs: Observation, phase: Phase, reason: Reason, message: str,
                verdict: _Verdict) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in obs.previous.get("conditions") or [] if isinstance(c, Mapping)}
    now = obs.now
    running = phase == Phase.RUNNING
    conditions = [_condition(previous, ConditionType.RUNNING, running, reason if running else
                             {Phase.PENDING: Reason.PODS_PENDING, Phase.SUSPENDED: Reason.JOB_SUSPENDED,
                              Phase.SUCCEEDED: Reason.JOB_SUCCEEDED}.get(phase, reason), message, now)]
    if phase == Phase.SUCCEEDED:
        conditions.append(_condition(previous, ConditionType.SUCCEEDED, True, reason, message, now))
    if phase == Phase.FAILED:
        conditions.append(_condition(previous, ConditionType.FAILED, True, reason, message, now))
    if phase == Phase.SUSPENDED or ConditionType.SUSPENDED in previous:
        suspended = phase == Phase.SUSPENDED
        conditions.append(_condition(previous, ConditionType.SUSPENDED, suspended,
                                     Reason.JOB_SUSPENDED if suspended else Reason.JOB_RESUMED,
                                     message if suspended else "resumed: training continues from the last checkpoint",
                                     now))
    if verdict.stuck or ConditionType.UNSCHEDULABLE in previous:
        text = "; ".join(f"pod {p.name} Pending for more than {obs.job.pending_timeout_seconds}s: {p.waiting}"
                         for p in verdict.stuck[:3])
        conditions.append(_condition(previous, ConditionType.UNSCHEDULABLE, bool(verdict.stuck),
                                     Reason.UNSCHEDULABLE if verdict.stuck else Reason.SCHEDULED,
                                     text or "all pods are scheduled", now))
    if obs.refused_changes or ConditionType.SPEC_CHANGE_REFUSED in previous:
        refused = bool(obs.refused_changes)
        conditions.append(_condition(previous, ConditionType.SPEC_CHANGE_REFUSED, refused,
                                     Reason.SPEC_CHANGE_REFUSED if refused else Reason.SPEC_RESTORED,
                                     obs.refusal_message if refused else "the spec matches the running job", now))
    if obs.pod_group_missing or ConditionType.POD_GROUP_MISSING in previous:
        missing = bool(obs.pod_group_missing)
        conditions.append(_condition(previous, ConditionType.POD_GROUP_MISSING, missing,
                                     Reason.POD_GROUP_API_MISSING if missing else Reason.POD_GROUP_CREATED,
                                     obs.pod_group_missing or "the job's PodGroup exists", now))
    return conditions


def _transition_events(obs: Observation, phase: Phase, status: Mapping[str, Any],
                       verdict: _Verdict) -> list[Event]:
    """Events for what changed since the last pass: the phase, and conditions turning true."""
    events: list[Event] = []
    prev_phase = obs.previous.get("phase")
    previous = {c.get("type"): c for c in obs.previous.get("conditions") or [] if isinstance(c, Mapping)}
    if phase != prev_phase:
        if phase == Phase.FAILED and verdict.failure is not None:
            events.append(Event("Warning", verdict.failure[0], status["message"]))
        elif phase == Phase.SUCCEEDED:
            events.append(Event("Normal", Reason.JOB_SUCCEEDED, status["message"]))
        elif phase == Phase.SUSPENDED:
            events.append(Event("Normal", Reason.JOB_SUSPENDED, status["message"]))
        elif prev_phase == Phase.SUSPENDED:
            events.append(Event("Normal", Reason.JOB_RESUMED, "resumed: recreating pods; training continues "
                                                             "from the last checkpoint"))
        elif phase == Phase.RUNNING:
            events.append(Event("Normal", Reason.JOB_RUNNING, "the aggregator pod is running"))
    if verdict.stuck and _transitioned_to_true(previous, ConditionType.UNSCHEDULABLE):
        pod = verdict.stuck[0]
        events.append(Event("Warning", Reason.UNSCHEDULABLE,
                            f"pod {pod.name} has been Pending for more than {obs.job.pending_timeout_seconds}s: "
                            f"{pod.waiting}"))
    if obs.refused_changes and _transitioned_to_true(previous, ConditionType.SPEC_CHANGE_REFUSED):
        events.append(Event("Warning", Reason.SPEC_CHANGE_REFUSED, obs.refusal_message))
    if obs.pod_group_missing and _transitioned_to_true(previous, ConditionType.POD_GROUP_MISSING):
        events.append(Event("Warning", Reason.POD_GROUP_API_MISSING, obs.pod_group_missing))
    return events


def invalid_spec_decision(previous: Mapping[str, Any], errors: list[str], now: datetime,
                          ttl_seconds_after_finished: int | None = None) -> Decision:
    """A job whose spec does not validate (no admission webhook stopped it): Failed, nothing created."""
    if previous.get("phase") in TERMINAL:
        completed = parse_time(previous.get("completionTime")) or now
        expired = ttl_seconds_after_finished is not None and (
            (now - completed).total_seconds() >= ttl_seconds_after_finished)
        return Decision(status=dict(previous), delete_job=expired)
    message = "invalid spec: " + "; ".join(errors)
    conditions = [_condition({}, ConditionType.RUNNING, False, Reason.INVALID_SPEC, message, now),
                  _condition({}, ConditionType.FAILED, True, Reason.INVALID_SPEC, message, now)]
    status = {"phase": str(Phase.FAILED), "message": message, "conditions": conditions,
              "completionTime": format_time(now)}
    return Decision(status=status, events=(Event("Warning", Reason.INVALID_SPEC, message),))


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new`; empty when they are equal."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif value != before or key not in old:
            patch[key] = value
    return patch
