"""Creating many pods: batches with progress in the status, a refusal that fails the job, and Events
that a repeated pass does not post twice. No pod runs (no kubelet): what is checked is what the
operator asks of the API server.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import kopf
import pytest
from conftest import NAMESPACE, Cluster, small_job, wait_for

from fedkube_operator.config import OperatorConfig
from fedkube_operator.kube import Kube
from fedkube_operator.probe import AggregatorProbe
from fedkube_operator.reconciler import Runtime, _act
from fedkube_operator.render import Owner
from fedkube_operator.status import Decision, Event


def status_patches(log: list[Any], job: str) -> list[dict[str, Any]]:
    """The operator's status writes to `job`, in order."""
    return [r.data["status"] for r in list(log) if r.resource is not None and r.name == job
            and r.subresource == "status" and r.headers.get("User-Agent", "") == "fedkube-operator"]


def pod_posts(log: list[Any]) -> int:
    return sum(1 for r in list(log) if r.resource is not None and r.resource.plural == "pods"
               and str(getattr(r.method, "value", r.method)).upper() == "POST")


def test_a_large_job_creates_its_pods_in_batches_and_reports_progress(cluster: Cluster) -> None:
    assert cluster.emulator.emulator is not None
    log = cluster.emulator.emulator.access_log = []
    cluster.start_operator(webhook=False)
    job = small_job("wide", partitions=60)
    job["spec"]["scheduling"] = {"podCreationBatch": 10}
    cluster.apply(job)
    done = cluster.wait_job("wide", lambda j: j.get("status", {}).get("podsCreated") == 61, 60, "61 pods created")
    assert done["status"]["podsDesired"] == 61 and done["status"]["phase"] == "Pending"

    created = cluster.emulator.creations("pods")
    assert len(created) == len(set(created)) == 61
    steps = [p for p in status_patches(log, "wide") if "creating pods" in p.get("message", "")]
    counts = [p["podsCreated"] for p in steps]
    assert len(counts) >= 5 and counts == sorted(set(counts)) and counts[-1] < 61, counts
    assert steps[0]["message"] == f"creating pods: {counts[0]} of 61 created" and steps[0]["podsDesired"] == 61
    assert done["status"]["message"] == "waiting for the aggregator pod to run"  # progress replaced when done


class RefusingPolicy(BaseHTTPRequestHandler):
    """TEST-ONLY admission policy: refuses pods named in `refused`, the way an API server refuses an
    invalid object (422), so the operator meets a refusal no retry can change."""

    refused: frozenset[str] = frozenset()

    def do_POST(self) -> None:  # noqa: N802  (the http.server interface)
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = review["request"]
        name = request["object"]["metadata"]["name"]
        denied = name in self.refused
        response: dict[str, Any] = {"uid": request["uid"], "allowed": not denied}
        if denied:
            response["status"] = {"code": 422, "reason": "Invalid", "message": (
                f'Pod "{name}" is invalid: spec.containers[0].resources.limits[example.com/fpga]: '
                'Invalid value: "lots": quantities must match the regular expression')}
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                           "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def refusing_policy(cluster: Cluster) -> Iterator[type[RefusingPolicy]]:
    policy = type("Policy", (RefusingPolicy,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), policy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cluster.apply({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                   "metadata": {"name": "pod-policy"},
                   "webhooks": [{"name": "pods.policy.example.com",
                                 "clientConfig": {"url": f"http://127.0.0.1:{server.server_port}/"},
                                 "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                                            "operations": ["CREATE"]}],
                                 "sideEffects": "None", "admissionReviewVersions": ["v1"]}]})
    try:
        yield policy
    finally:
        server.shutdown()


def test_a_pod_the_api_server_refuses_fails_the_job_with_the_reason_instead_of_retrying(
        cluster: Cluster, refusing_policy: type[RefusingPolicy]) -> None:
    refusing_policy.refused = frozenset({"refused-client-2"})
    assert cluster.emulator.emulator is not None
    log = cluster.emulator.emulator.access_log = []
    cluster.start_operator(webhook=False)
    cluster.apply(small_job("refused", partitions=4))
    failed = cluster.wait_job("refused", lambda j: j.get("status", {}).get("phase") == "Failed", 30, "Failed")
    message = failed["status"]["message"]
    assert message.startswith("the API server refused to create pod refused-client-2: HTTP 422"), message
    assert "limits[example.com/fpga]" in message
    failure = next(c for c in failed["status"]["conditions"] if c["type"] == "Failed")
    assert failure["reason"] == "PodCreationRefused"
    warnings = [e for e in cluster.events("refused") if e["reason"] == "PodCreationRefused"]
    assert len(warnings) == 1 and warnings[0]["type"] == "Warning"
    # The pods created before the refusal are deleted, and no later pass tries again.
    wait_for(lambda: cluster.pods("refused") == [], 20, "the job's pods deleted", diagnose=cluster.diagnose)
    assert pod_posts(log) == 5  # slow start: 1, then 2, then the batch of 2 with the refused pod
    time.sleep(2)  # some passes at --poll-interval 0.3: none creates anything, the job stays Failed
    assert pod_posts(log) == 5 and cluster.job("refused")["status"]["phase"] == "Failed"


def test_a_pass_repeated_after_a_crash_posts_each_event_once(cluster: Cluster) -> None:
    """A crash between posting a pass's Events and writing its status: the next pass starts from the
    same status and derives the same Events. Run the real act step twice from that status."""
    cluster.apply(small_job("events", partitions=2))
    body = cluster.job("events")
    owner = Owner.of(body)
    previous = {"phase": "Running", "round": 2, "eventCount": 5}
    rounds = (Event("Normal", "RoundCompleted", "round 3/3 completed, accuracy 0.9100", key="round-3"),
              Event("Normal", "JobSucceeded", "completed 3/3 rounds, accuracy 0.9100"))
    decision = Decision(status={"phase": "Succeeded", "round": 3}, events=rounds)

    async def act_twice() -> None:
        kube = Kube()
        kube.use(kopf.ConnectionInfo(server=cluster.emulator.url, token="test-token"))
        runtime = Runtime(OperatorConfig(), kube, AggregatorProbe(1.0))
        try:
            for _ in range(2):  # the second time with a fresh memo, as a restarted operator has
                await _act(decision, kopf.Memo(runtime=runtime), runtime, owner, previous, datetime.now(UTC))
        finally:
            await runtime.close()

    asyncio.run(act_twice())
    events = cluster.events("events")
    assert sorted(e["reason"] for e in events) == ["JobSucceeded", "RoundCompleted"]
    assert all(e["involvedObject"]["uid"] == owner.uid and e["metadata"]["namespace"] == NAMESPACE
               for e in events)
    status = cluster.job("events")["status"]
    assert status["phase"] == "Succeeded" and status["eventCount"] == 7
