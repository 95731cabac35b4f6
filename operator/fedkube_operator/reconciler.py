"""One reconcile pass of one FederatedJob: observe, decide (pure, in `status`), act.

Observe: the job's pods (from Kopf's in-memory index, no API call), the running spec (the
job's ConfigMap, read once per operator lifetime and kept in the job's memo), and the
aggregator's report (one HTTP GET). Act, in an order that survives a crash at any point:
create pods (in batches, see `rollout`) or delete them, post Events, then write the status
that records them. A pass repeated after a crash re-creates nothing and re-posts nothing (names
are deterministic) and recomputes status from what exists.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import yaml

from fedkube.plan import JobPlan, make_plan
from fedkube.spec import FederatedJob, SpecError, parse_manifest
from fedkube_operator import API_VERSION, KIND
from fedkube_operator.authority import create_signed, job_authority
from fedkube_operator.config import OperatorConfig
from fedkube_operator.events import event_count, render_events
from fedkube_operator.gang import gang_of
from fedkube_operator.kube import ForeignObjectError, Kube, KubeError, owned_by
from fedkube_operator.manifest import parse, refusal_message, refused_changes
from fedkube_operator.metrics import OperatorMetrics
from fedkube_operator.names import AGGREGATOR, configmap_name
from fedkube_operator.observe import PodView
from fedkube_operator.probe import AggregatorProbe
from fedkube_operator.render import MANIFEST_KEY, Owner, render_job_objects, render_pod, render_pod_group
from fedkube_operator.rollout import PodRate, batch_sizes, progress
from fedkube_operator.status import (
    TERMINAL,
    Decision,
    JobFacts,
    Observation,
    decide,
    invalid_spec_decision,
    merge_patch,
)


@dataclass
class Runtime:
    """What every handler shares, kept in Kopf's operator-wide memo."""

    config: OperatorConfig
    kube: Kube
    probe: AggregatorProbe
    metrics: OperatorMetrics = field(default_factory=OperatorMetrics)
    pod_rate: PodRate = field(init=False)

    def __post_init__(self) -> None:
        self.pod_rate = PodRate(self.config.pod_creation_rate)

    async def close(self) -> None:
        await self.kube.close()
        await self.probe.close()


async def _create_job_objects(kube: Kube, plan: JobPlan, owner: Owner, runtime: Runtime) -> None:
    """The CA first, then Secrets signed by it, Service and claim, the ConfigMap last: its existence means
    the rest exists."""
    authority = await job_authority(kube, plan, owner)
    objects = render_job_objects(plan, owner, runtime.config.render, authority)
    objects.sort(key=lambda o: o["kind"] == "ConfigMap")
    for obj in objects:
        if authority is not None and obj["kind"] == "Secret" and obj["type"] == "kubernetes.io/tls":
            await create_signed(kube, obj, authority)
        else:
            await kube.create(obj)


async def running_job(body: Mapping[str, Any], memo: Any, runtime: Runtime, owner: Owner) -> FederatedJob:
    """The spec this job runs: from its ConfigMap, or validated from `body` and rendered on first sight.

    Raises SpecError when a new job's spec is invalid, ForeignObjectError when a ConfigMap of an
    earlier job with this name is still in the way.
    """
    cached = getattr(memo, "running", None)
    if cached is not None and cached[0] == owner.uid:
        return cached[1]
    kube = runtime.kube
    configmap = await kube.get("v1", "ConfigMap", owner.namespace, configmap_name(owner.name))
    if configmap is None:
        job = parse(body)
    elif not owned_by(configmap, owner.uid):
        raise ForeignObjectError(f"ConfigMap {configmap_name(owner.name)} belongs to an earlier FederatedJob "
                                 f"named {owner.name}; waiting for it to be garbage-collected")
    else:
        job = parse_manifest(yaml.safe_load(configmap["data"][MANIFEST_KEY]), check_entrypoint=False)
    # Ensure every job object exists, also after a restart: creating what exists is a no-op.
    await _create_job_objects(kube, make_plan(job), owner, runtime)
    memo.running = (owner.uid, job)
    return job


async def ensure_pod_group(kube: Kube, job: FederatedJob, memo: Any, owner: Owner) -> str:
    """Create a gang job's PodGroup before any of its pods: "" once it exists (or without gang
    scheduling), else why it cannot be, for a condition; a cluster without the API is no error.
    """
    gang = gang_of(job.name, job.manifest["spec"])
    if gang is None or getattr(memo, "pod_group", None) == owner.uid:
        return ""
    try:
        await kube.create(render_pod_group(make_plan(job), owner, gang))
    except KubeError as exc:
        if exc.status != 404:  # 404: the API server does not serve this group/version
            raise
        return gang.missing_api_message()
    memo.pod_group = owner.uid
    return ""


# How long a pod this operator created may stay out of the watch-fed index before it counts as lost.
UNSEEN_GRACE = timedelta(seconds=60)


def with_unseen(indexed: tuple[PodView, ...], unseen: dict[str, PodView], now: datetime) -> tuple[PodView, ...]:
    """The job's pods from the index plus those created here that the watch has not delivered yet.

    Without them, a pass that runs before the watch catches up would create the same pods again:
    harmless conflicts, but hundreds of wasted API calls when many jobs start at once. `unseen`
    forgets a pod once the index shows it, or after UNSEEN_GRACE.
    """
    seen = {p.name for p in indexed}
    for name in [n for n, p in unseen.items() if n in seen or p.created is None or now - p.created > UNSEEN_GRACE]:
        del unseen[name]
    return indexed + tuple(unseen.values())


def _live_aggregator(pods: Iterable[PodView]) -> PodView | None:
    running = [p for p in pods if p.slot == AGGREGATOR and p.active and p.phase == "Running" and p.ip]
    return max(running, key=lambda p: p.attempt) if running else None


def _unseen(memo: Any, uid: str) -> dict[str, PodView]:
    """The pods this job's passes created that the index has not shown yet (kept in the job's memo)."""
    if getattr(memo, "unseen", None) is None or memo.unseen[0] != uid:
        memo.unseen = (uid, {})
    pods: dict[str, PodView] = memo.unseen[1]
    return pods


# API answers that no retry can change: the pod as rendered is invalid (a bad quantity, label...).
PERMANENT_REFUSALS = frozenset({400, 422})


async def _create_pods(decision: Decision, memo: Any, runtime: Runtime, owner: Owner, job: FederatedJob,
                       written: dict[str, Any], now: datetime) -> str:
    """Create the decided pods batch by batch, writing progress between batches; `written` follows the
    status as patched. Returns why the API server refused a pod for good ("" if it did not); raises
    KubeError at the first other failure, after noting what was created, so the next pass goes on."""
    kube = runtime.kube
    unseen = _unseen(memo, owner.uid)
    plan = make_plan(job)
    todo = list(decision.create)
    desired = int(decision.status["podsDesired"])
    done = int(decision.status["podsCreated"]) - len(todo)
    for size in batch_sizes(len(todo), job.spec.scheduling.pod_creation_batch):
        batch, todo = todo[:size], todo[size:]
        await asyncio.sleep(runtime.pod_rate.delay(size))
        pods = [render_pod(plan, slot, owner, runtime.config.render, attempt) for slot, attempt in batch]
        results = await asyncio.gather(*(kube.create(pod) for pod in pods), return_exceptions=True)
        for (slot, attempt), result in zip(batch, results, strict=True):
            if not isinstance(result, BaseException):
                name = slot.pod_name(owner.name, attempt)
                unseen[name] = PodView(name, slot, attempt, "Pending", owner_uid=owner.uid, created=now)
        runtime.metrics.pods_created([s for s, r in zip(batch, results, strict=True) if r is True])
        errors = [r for r in results if isinstance(r, BaseException)]
        for error in errors:
            if isinstance(error, KubeError) and error.status in PERMANENT_REFUSALS:
                pod = pods[results.index(error)]["metadata"]["name"]
                return f"the API server refused to create pod {pod}: {error}"
        if errors:
            raise errors[0]
        done += size
        if todo and desired > job.spec.scheduling.pod_creation_batch:  # small jobs: one status write
            step = merge_patch(written, {**written, **progress(done, desired)})
            await kube.patch_job_status(owner.namespace, owner.name, step)
            written.update(progress(done, desired))
            memo.last_status = (owner.uid, dict(written))
    return ""


async def _act(decision: Decision, memo: Any, runtime: Runtime, owner: Owner,
               previous: Mapping[str, Any], now: datetime) -> None:
    """Delete pods, post Events, then write the status that records them (see `events`)."""
    kube = runtime.kube
    unseen = _unseen(memo, owner.uid)
    if decision.delete:
        await asyncio.gather(*(kube.delete("v1", "Pod", owner.namespace, name) for name in decision.delete))
        for name in decision.delete:
            unseen.pop(name, None)
    await asyncio.gather(*(kube.create(event) for event in render_events(decision.events, owner, previous, now)))
    status = {**decision.status, "eventCount": event_count(previous) + len(decision.events)}
    patch = merge_patch(previous, status)
    if patch:
        await kube.patch_job_status(owner.namespace, owner.name, patch)
    memo.last_status = (owner.uid, status)
    if decision.delete_job:
        await kube.delete(API_VERSION, KIND, owner.namespace, owner.name, uid=owner.uid)


def _refused_changes(memo: Any, uid: str, job: FederatedJob, spec: Mapping[str, Any]) -> tuple[str, ...]:
    """`refused_changes`, recomputed only when the spec on the object changes: filling in the defaults
    of both specs took half of a quiet pass, and every job passes every --poll-interval."""
    cached = getattr(memo, "spec_check", None)
    if cached is None or cached[0] != uid or cached[1] != spec:
        memo.spec_check = (uid, copy.deepcopy(spec), tuple(refused_changes(job.manifest["spec"], spec)))
    refused: tuple[str, ...] = memo.spec_check[2]
    return refused


def _previous_status(body: Mapping[str, Any], memo: Any, uid: str) -> Mapping[str, Any]:
    """The status this operator last wrote, else (after a restart) the one on the object."""
    last = getattr(memo, "last_status", None)
    if last is not None and last[0] == uid:
        return last[1]
    return body.get("status") or {}


async def reconcile(body: Mapping[str, Any], memo: Any, indexed_pods: Iterable[PodView],
                    logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    runtime: Runtime = memo.runtime
    owner = Owner.of(body)
    spec = body.get("spec") or {}
    previous = _previous_status(body, memo, owner.uid)
    now = datetime.now(UTC)
    try:
        job = await running_job(body, memo, runtime, owner)
    except SpecError as exc:
        ttl = spec.get("ttlSecondsAfterFinished")
        decision = invalid_spec_decision(previous, [str(e) for e in exc.errors], now,
                                         ttl if isinstance(ttl, int) else None)
        await _act(decision, memo, runtime, owner, previous, now)
        return
    except ForeignObjectError as exc:
        raise kopf.TemporaryError(str(exc), delay=runtime.config.poll_interval_seconds * 5) from exc

    pod_group_missing = "" if previous.get("phase") in TERMINAL else await ensure_pod_group(
        runtime.kube, job, memo, owner)
    pods = with_unseen(tuple(p for p in indexed_pods if p.owner_uid == owner.uid), _unseen(memo, owner.uid), now)
    aggregator = _live_aggregator(pods) if previous.get("phase") not in TERMINAL else None
    report = await runtime.probe.report(aggregator.ip) if aggregator is not None and aggregator.ip else None
    refused = _refused_changes(memo, owner.uid, job, spec)
    suspend = bool((spec.get("scheduling") or {}).get("suspend", False))
    observation = Observation(
        job=JobFacts.of(job), pods=pods, report=report, previous=previous, now=now, suspend=suspend,
        refused_changes=refused, refusal_message=refusal_message(list(refused)) if refused else "",
        generation=(body.get("metadata") or {}).get("generation"), timing=runtime.config.timing,
        pod_group_missing=pod_group_missing)
    decision = decide(observation)
    if decision.create:
        logger.info("creating %d pods: %s", len(decision.create),
                    _names(s.pod_name(owner.name, n) for s, n in decision.create))
        written = dict(previous)
        refused = await _create_pods(decision, memo, runtime, owner, job, written, now)
        previous = written
        if refused:
            logger.error("%s", refused)
            pods = with_unseen(pods, _unseen(memo, owner.uid), now)
            decision = decide(replace(observation, pods=pods, previous=previous, creation_refused=refused))
    if decision.delete:
        logger.info("deleting %d pods: %s", len(decision.delete), _names(decision.delete))
    await _act(decision, memo, runtime, owner, previous, now)


def _names(names: Iterable[str], shown: int = 10) -> str:
    """A list for the log, cut short: a 1,000-pod job should not log 1,000 names a pass."""
    names = list(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
