"""The validating admission handler, served by kopf's webhook server, refuses invalid FederatedJobs.

Two routes to the same handler: real AdmissionReview requests posted over HTTPS to the URL and
CA bundle the operator published in its ValidatingWebhookConfiguration (what an API server
does), and `kubectl apply`, which the emulator forwards to that webhook.
"""

from __future__ import annotations

import base64
import copy
import json
import ssl
import urllib.request
import uuid
from typing import Any

import yaml
from conftest import REPO, Cluster, small_job

EXAMPLE = yaml.safe_load((REPO / "examples" / "digits-fedavg.yaml").read_text())


def patched(patch: dict[str, Any], target: Any = None) -> Any:
    """The digits example with a JSON merge patch (RFC 7386) applied: None deletes a key."""
    result = copy.deepcopy(EXAMPLE if target is None else target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = patched(value, result[key])
        else:
            result[key] = value
    return result


def edit(path: str, value: Any) -> dict[str, Any]:
    """The example with the dotted `path` set to `value` (None deletes it)."""
    patch: Any = value
    for key in reversed(path.split(".")):
        patch = {key: patch}
    return patched(patch)


# (manifest, the field path the refusal must name, words the refusal must contain)
INVALID = [
    (edit("spec.rounds", 0), "spec.rounds", "less than the minimum of 1"),
    (edit("spec.data.partitions", "eight"), "spec.data.partitions", "not of type integer"),
    (edit("spec.clients.minAvailable", 9), "spec.clients.minAvailable", "exceeds spec.data.partitions (8)"),
    (edit("spec.strategy.name", "fedmagic"), "spec.strategy.name", "'fedmagic' is not one of"),
    (edit("spec.task.entrypoint", "fedkube.tasks.digits"), "spec.task.entrypoint", "does not match"),
    (edit("spec.clients", None), "spec.clients", "required field is missing"),
    (edit("spec.clients.learningRate", 0.1), "spec.clients.learningRate", "unknown field"),
    (edit("spec.clients.fraction", 0), "spec.clients.fraction", "minimum of 0"),
    (edit("spec.template", {"overrides": [{"partitions": [8]}]}), "spec.template.overrides[0].partitions[0]",
     "partition 8 does not exist"),
    (edit("metadata.name", "Digits_Job"), "metadata.name", "DNS-1123"),
    (edit("spec.checkpoint.uri", "gs://bucket/digits"), "spec.checkpoint.uri", "does not match"),
    (edit("spec.backoffLimit", -2), "spec.backoffLimit", "less than the minimum of 0"),
    (edit("spec.ttlSecondsAfterFinished", -1), "spec.ttlSecondsAfterFinished", "less than the minimum of 0"),
    (edit("spec.clients.optimizer.name", "rmsprop"), "spec.clients.optimizer.name", "not one of 'sgd', 'adam'"),
    (edit("spec.scheduling", {"pendingTimeoutSeconds": 0}), "spec.scheduling.pendingTimeoutSeconds",
     "less than the minimum of 1"),
    (edit("spec.template", {"client": {"resources": {"limits": {"nvidia.com/gpu": "lots"}}}}),
     "spec.template.client.resources.limits[nvidia.com/gpu]", "'lots' is not a quantity"),
    (edit("spec.template", {"aggregator": {"resources": {"requests": {"cpu": "-1"}}}}),
     "spec.template.aggregator.resources.requests[cpu]", "must be greater than or equal to 0"),
    (edit("spec.template", {"overrides": [{"partitions": [1], "resources": {"limits": {"memory": "12XB"}}}]}),
     "spec.template.overrides[0].resources.limits[memory]", "'12XB' is not a quantity"),
]


def published_webhook(cluster: Cluster) -> tuple[str, ssl.SSLContext]:
    """The webhook's URL and a TLS context trusting only its published CA bundle."""
    config = cluster.get("validatingwebhookconfiguration", "fedkube.io")
    (hook,) = [w for w in config["webhooks"] if "validate-federatedjob" in w["name"]]
    rule = hook["rules"][0]
    assert rule["apiGroups"] == ["fedkube.io"] and "federatedjobs" in rule["resources"]
    assert {"CREATE", "UPDATE"} <= set(rule["operations"])
    client = hook["clientConfig"]
    context = ssl.create_default_context(cadata=base64.b64decode(client["caBundle"]).decode())
    return client["url"], context


def review(url: str, context: ssl.SSLContext, operation: str, obj: dict[str, Any],
           old: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST one admission.k8s.io/v1 AdmissionReview and return its response."""
    uid = str(uuid.uuid4())
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "operation": operation,
        "kind": {"group": "fedkube.io", "version": "v1alpha1", "kind": "FederatedJob"},
        "resource": {"group": "fedkube.io", "version": "v1alpha1", "resource": "federatedjobs"},
        "name": obj["metadata"]["name"], "namespace": "default", "userInfo": {"username": "alice"},
        "object": obj, "oldObject": old, "dryRun": False}}
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, context=context, timeout=20) as response:
        answer = json.loads(response.read())
    assert answer["kind"] == "AdmissionReview" and answer["response"]["uid"] == uid
    return answer["response"]


def test_admission_reviews_are_answered_with_the_field_path(cluster: Cluster) -> None:
    cluster.start_operator()
    url, context = published_webhook(cluster)
    assert url.startswith("https://127.0.0.1:")

    for manifest, field, words in INVALID:
        response = review(url, context, "CREATE", manifest)
        message = response.get("status", {}).get("message", "")
        assert response["allowed"] is False, field
        assert f"{field}: " in message and words in message, message
        assert response["status"]["code"] == 422

    assert review(url, context, "CREATE", EXAMPLE)["allowed"] is True

    running = {**copy.deepcopy(EXAMPLE), "status": {"phase": "Running", "round": 4}}
    more_rounds = copy.deepcopy(running)
    more_rounds["spec"]["rounds"] = 50
    refused = review(url, context, "UPDATE", more_rounds, running)
    assert refused["allowed"] is False
    assert "spec.rounds: the spec of a FederatedJob cannot change once created" in refused["status"]["message"]
    suspended = copy.deepcopy(running)
    suspended["spec"]["scheduling"] = {"suspend": True}
    assert review(url, context, "UPDATE", suspended, running)["allowed"] is True


def test_kubectl_apply_of_an_invalid_manifest_is_refused_and_nothing_is_stored(cluster: Cluster) -> None:
    cluster.start_operator()
    for manifest, field, words in INVALID:
        result = cluster.apply(manifest, check=False)
        assert result.returncode != 0, field
        assert 'admission webhook "validate-federatedjob' in result.stderr, result.stderr
        assert f"{field}: " in result.stderr and words in result.stderr, result.stderr
    assert cluster.get("federatedjobs")["items"] == []

    cluster.apply(small_job("steady"))
    change = cluster.kubectl("patch", "fj", "steady", "--type=merge", "-p", json.dumps({"spec": {"rounds": 9}}),
                             check=False)
    assert change.returncode != 0
    assert "spec.rounds: the spec of a FederatedJob cannot change once created, except spec.scheduling.suspend" \
        in change.stderr
    cluster.kubectl("patch", "fj", "steady", "--type=merge", "-p",
                    json.dumps({"spec": {"scheduling": {"suspend": True}}}))
    assert cluster.job("steady")["spec"]["rounds"] == 3
