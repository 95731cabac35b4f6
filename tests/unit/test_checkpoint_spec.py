"""spec.checkpoint: the combinations refused with their field, and the credentials the aggregator pod gets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fedkube.plan import make_plan
from fedkube.spec import SpecError, parse_manifest
from fedkube_operator.render import Owner, RenderConfig, render_aggregator_pod, render_client_pod

BASE = {
    "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "ckpt", "namespace": "ml"},
    "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 2}, "rounds": 3,
             "clients": {"minAvailable": 2}},
}


def job(checkpoint: dict[str, Any]) -> Any:
    doc = copy.deepcopy(BASE)
    doc["spec"]["checkpoint"] = checkpoint
    return parse_manifest(doc, check_entrypoint=False)


@pytest.mark.parametrize("checkpoint, path, message", [
    ({"uri": "file://relative/dir"}, "spec.checkpoint.uri", "is not file:///absolute/path"),
    ({"uri": "s3://Bad_Bucket/x"}, "spec.checkpoint.uri", "'Bad_Bucket' is not an S3 bucket name"),
    ({"uri": "s3://ab/x"}, "spec.checkpoint.uri", "'ab' is not an S3 bucket name"),
    ({"uri": "file:///ckpt", "secretRef": "creds"}, "spec.checkpoint.secretRef", "only used with an s3://"),
    ({"endpointUrl": "http://minio:9000"}, "spec.checkpoint.endpointUrl", "only used with an s3://"),
    ({"uri": "s3://bucket/x", "endpointUrl": "minio:9000"}, "spec.checkpoint.endpointUrl",
     "is not an http:// or https:// URL"),
])
def test_bad_checkpoint_settings_are_refused_with_their_field(checkpoint: dict, path: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        job(checkpoint)

    assert any(e.path == path and message in e.message for e in caught.value.errors), caught.value


@pytest.mark.parametrize("checkpoint", [
    {}, {"uri": "file:///var/ckpt"}, {"uri": "file://localhost/var/ckpt"},
    {"uri": "s3://team.models-1/jobs/ckpt", "endpointUrl": "https://minio.storage:9000", "secretRef": "s3-creds"},
])
def test_good_checkpoint_settings_pass(checkpoint: dict) -> None:
    assert job(checkpoint).spec.checkpoint.uri == checkpoint.get("uri")


def test_the_credentials_secret_reaches_the_aggregator_pod_only() -> None:
    plan = make_plan(job({"uri": "s3://models/ckpt", "secretRef": "s3-creds", "endpointUrl": "http://minio:9000"}))
    owner, config = Owner("ckpt", "ml", "uid-1"), RenderConfig(image="trainer:test")

    aggregator = render_aggregator_pod(plan, owner, config)["spec"]["containers"][0]
    clients = [render_client_pod(plan, p, owner, config)["spec"]["containers"][0] for p in range(2)]

    assert aggregator["envFrom"] == [{"secretRef": {"name": "s3-creds"}}]
    assert all("envFrom" not in c and "s3-creds" not in str(c) for c in clients)
    assert "--checkpoint-uri" not in aggregator["command"]  # the manifest carries it, with its endpoint
    assert plan.aggregator.checkpoint.endpoint_url == "http://minio:9000"
