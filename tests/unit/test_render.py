"""render: plan -> Kubernetes objects, checked on the returned dicts."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
import yaml
from cryptography import x509

from fedkube.cli import build_parser
from fedkube.he.keys import load_context
from fedkube.plan import make_plan
from fedkube.secure.tls import make_transport_material, partition_of
from fedkube.spec import parse_manifest
from fedkube_operator.manifest import admission_errors
from fedkube_operator.names import AGGREGATOR, Slot
from fedkube_operator.render import (
    MANIFEST_KEY,
    Owner,
    RenderConfig,
    aggregator_address,
    checkpoint_storage,
    render_aggregator_pod,
    render_client_pod,
    render_job_objects,
    render_manifest_configmap,
    render_pod,
    render_transport_secrets,
)

OWNER = Owner("digits", "team-a", "uid-1234")
CONFIG = RenderConfig(image="ghcr.io/fedkube/trainer:test")


def manifest(**spec: Any) -> dict[str, Any]:
    doc = {
        "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob",
        "metadata": {"name": "digits", "namespace": "team-a"},
        "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 3},
                 "rounds": 5, "clients": {"minAvailable": 2}},
    }
    doc["spec"].update(copy.deepcopy(spec))
    return doc


def plan_of(**spec: Any) -> Any:
    return make_plan(parse_manifest(manifest(**spec), check_entrypoint=False))


GPU_TEMPLATE = {
    "aggregator": {"image": "registry/agg:1", "resources": {"limits": {"cpu": "2", "memory": "4Gi"}}},
    "client": {"resources": {"limits": {"nvidia.com/gpu": 1}}, "nodeSelector": {"pool": "gpu"},
               "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
               "priorityClassName": "fl-high", "env": [{"name": "HOME", "value": "/scratch"},
                                                       {"name": "EXTRA", "value": "1"}]},
    "overrides": [{"partitions": [1], "image": "registry/client-special:2", "nodeSelector": {"pool": "edge"},
                   "resources": {"limits": {"nvidia.com/gpu": 2}},
                   "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                       "nodeSelectorTerms": [{"matchExpressions": [
                           {"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}],
}


def all_pods(plan: Any) -> list[dict[str, Any]]:
    return [render_aggregator_pod(plan, OWNER, CONFIG)] + [
        render_client_pod(plan, p, OWNER, CONFIG) for p in range(len(plan.clients))]


def test_every_object_is_owned_by_the_job_as_controller() -> None:
    plan = plan_of()
    for obj in render_job_objects(plan, OWNER, CONFIG) + all_pods(plan):
        assert obj["metadata"]["namespace"] == "team-a"
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "name": "digits", "uid": "uid-1234",
            "controller": True, "blockOwnerDeletion": True}]
        assert obj["metadata"]["labels"]["fedkube.io/job"] == "digits"


@pytest.mark.parametrize("name, render, expected", [
    ("aggregator", lambda p: render_aggregator_pod(p, OWNER, CONFIG),
     {"name": "digits-aggregator", "labels": {"fedkube.io/role": "aggregator", "fedkube.io/attempt": "0"}}),
    ("client 2", lambda p: render_client_pod(p, 2, OWNER, CONFIG),
     {"name": "digits-client-2",
      "labels": {"fedkube.io/role": "client", "fedkube.io/partition": "2", "fedkube.io/attempt": "0"}}),
    ("client 0, attempt 3", lambda p: render_client_pod(p, 0, OWNER, CONFIG, attempt=3),
     {"name": "digits-client-0-retry-3", "labels": {"fedkube.io/partition": "0", "fedkube.io/attempt": "3"}}),
    ("aggregator, attempt 1", lambda p: render_pod(p, AGGREGATOR, OWNER, CONFIG, 1),
     {"name": "digits-aggregator-retry-1", "labels": {"fedkube.io/attempt": "1"}}),
])
def test_pod_names_and_labels_are_deterministic(name: str, render: Any, expected: dict[str, Any]) -> None:
    pod = render(plan_of())
    assert pod["metadata"]["name"] == expected["name"], name
    assert expected["labels"].items() <= pod["metadata"]["labels"].items(), name


def test_pods_run_restricted() -> None:
    for pod in all_pods(plan_of()):
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["restartPolicy"] == "Never"
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        (container,) = spec["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert "/tmp" in writable


@pytest.mark.parametrize("partition, image, gpus, node_selector, has_affinity", [
    (0, "ghcr.io/fedkube/trainer:test", 1, {"pool": "gpu"}, False),
    (1, "registry/client-special:2", 2, {"pool": "edge"}, True),
    (2, "ghcr.io/fedkube/trainer:test", 1, {"pool": "gpu"}, False),
])
def test_client_pods_take_template_and_overrides(partition: int, image: str, gpus: int,
                                                 node_selector: dict[str, str], has_affinity: bool) -> None:
    pod = render_client_pod(plan_of(template=GPU_TEMPLATE), partition, OWNER, CONFIG)
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    assert container["image"] == image
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert spec["nodeSelector"] == node_selector
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["priorityClassName"] == "fl-high"
    assert ("affinity" in spec) == has_affinity


def test_template_env_replaces_ours_by_name_and_adds_the_rest() -> None:
    pod = render_client_pod(plan_of(template=GPU_TEMPLATE), 0, OWNER, CONFIG)
    env = pod["spec"]["containers"][0]["env"]
    names = [e["name"] for e in env]
    assert names.count("HOME") == 1 and {"name": "HOME", "value": "/scratch"} in env
    assert {"name": "EXTRA", "value": "1"} in env
    assert {"name": "FEDKUBE_JOB", "value": "digits"} in env
    assert {"name": "OMP_NUM_THREADS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu",
                                                                          "divisor": "1"}}} in env


def test_aggregator_pod_takes_its_own_template() -> None:
    pod = render_aggregator_pod(plan_of(template=GPU_TEMPLATE), OWNER, CONFIG)
    (container,) = pod["spec"]["containers"]
    assert container["image"] == "registry/agg:1"
    assert container["resources"] == {"limits": {"cpu": "2", "memory": "4Gi"}}
    assert "nodeSelector" not in pod["spec"]


def test_commands_match_the_runtime_contract() -> None:
    plan = plan_of()
    aggregator = render_aggregator_pod(plan, OWNER, CONFIG)["spec"]["containers"][0]["command"]
    assert aggregator == ["fedkube", "aggregator", "--manifest", "/etc/fedkube/job/manifest.yaml", "--port", "7070",
                          "--status-port", "8080", "--metrics-port", "9090", "--output-dir", "/var/lib/fedkube",
                          "--termination-log", "/dev/termination-log",
                          "--checkpoint-uri", "file:///var/lib/fedkube/checkpoints"]
    assert build_parser().parse_args(aggregator[1:]).termination_log == "/dev/termination-log"
    client = render_client_pod(plan, 1, OWNER, CONFIG)["spec"]["containers"][0]["command"]
    assert client == ["fedkube", "client", "--manifest", "/etc/fedkube/job/manifest.yaml", "--partition", "1",
                      "--aggregator", "digits-aggregator.team-a.svc:7070"]
    assert build_parser().parse_args(client[1:]).partition == 1
    assert aggregator_address(plan) == "digits-aggregator.team-a.svc:7070"


@pytest.mark.parametrize("checkpoint, uri, mount, argument, claim", [
    ({}, "file:///var/lib/fedkube/checkpoints", "/var/lib/fedkube/checkpoints",
     "file:///var/lib/fedkube/checkpoints", True),
    ({"uri": "file:///ckpt/digits"}, "file:///ckpt/digits", "/ckpt/digits", None, True),
])
def test_file_checkpoints_live_on_the_job_claim(checkpoint: dict[str, Any], uri: str, mount: str,
                                                argument: str | None, claim: bool) -> None:
    plan = plan_of(checkpoint=checkpoint)
    storage = checkpoint_storage(plan)
    assert (storage.uri, storage.mount_path, storage.uri_argument) == (uri, mount, argument)
    pod = render_aggregator_pod(plan, OWNER, CONFIG)
    mounts = {m["name"]: m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert mounts["checkpoints"] == mount
    assert volumes["checkpoints"]["persistentVolumeClaim"] == {"claimName": "digits-checkpoints"}
    kinds = [o["kind"] for o in render_job_objects(plan, OWNER, CONFIG)]
    assert ("PersistentVolumeClaim" in kinds) is claim


def test_claim_size_and_class_come_from_the_operator() -> None:
    config = RenderConfig(image="x", checkpoint_volume_size="5Gi", checkpoint_storage_class="fast")
    (claim,) = [o for o in render_job_objects(plan_of(), OWNER, config) if o["kind"] == "PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["storageClassName"] == "fast"


def _secrets(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}


def test_one_tls_secret_per_identity_and_each_pod_mounts_only_its_own() -> None:
    plan = plan_of()
    secrets = _secrets(render_job_objects(plan, OWNER, CONFIG))
    identities = ["aggregator", "client-0", "client-1", "client-2"]
    assert sorted(secrets) == [f"digits-tls-{i}" for i in identities]
    ca = x509.load_pem_x509_certificate(base64.b64decode(secrets["digits-tls-aggregator"]["data"]["ca.crt"]))
    for secret in secrets.values():
        assert secret["type"] == "kubernetes.io/tls"
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        assert sorted(data) == ["ca.crt", "tls.crt", "tls.key"]  # never the CA's private key
        x509.load_pem_x509_certificate(data["tls.crt"]).verify_directly_issued_by(ca)
    for pod, identity in zip(all_pods(plan), identities, strict=True):
        secret_volumes = [v for v in pod["spec"]["volumes"] if "secret" in v]
        assert secret_volumes == [{"name": "transport",
                                   "secret": {"secretName": f"digits-tls-{identity}", "defaultMode": 0o440}}]
        (mount,) = [m for m in pod["spec"]["containers"][0]["volumeMounts"] if m["name"] == "transport"]
        assert mount == {"name": "transport", "mountPath": "/etc/fedkube/tls", "readOnly": True}
        if identity != "aggregator":
            cert = base64.b64decode(secrets[f"digits-tls-{identity}"]["data"]["tls.crt"])
            assert partition_of(cert, "digits") == int(identity.removeprefix("client-"))


def test_aggregator_certificate_covers_every_service_name() -> None:
    secret = _secrets(render_job_objects(plan_of(), OWNER, CONFIG))["digits-tls-aggregator"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)
    assert names == ["digits-aggregator", "digits-aggregator.team-a", "digits-aggregator.team-a.svc",
                     "digits-aggregator.team-a.svc.cluster.local", "localhost"]
    assert aggregator_address(plan_of()).split(":")[0] in names


def test_material_renders_the_same_secrets_every_time() -> None:
    plan = plan_of()
    material = make_transport_material("digits", 3)
    assert render_transport_secrets(plan, OWNER, material) == render_transport_secrets(plan, OWNER, material)


def test_tls_false_renders_no_secrets_and_mounts_none() -> None:
    plan = plan_of(transport={"tls": False})
    assert _secrets(render_job_objects(plan, OWNER, CONFIG)) == {}
    for pod in all_pods(plan):
        assert not [v for v in pod["spec"]["volumes"] if "secret" in v]


def test_configmap_holds_the_validated_defaulted_manifest_and_is_immutable() -> None:
    plan = plan_of()
    configmap = render_manifest_configmap(plan, OWNER)
    assert configmap["immutable"] is True
    stored = yaml.safe_load(configmap["data"][MANIFEST_KEY])
    assert stored["spec"]["backoffLimit"] == 3  # a default filled in
    assert parse_manifest(stored, check_entrypoint=False).spec == parse_manifest(manifest(), False).spec


def test_service_selects_the_aggregator_on_every_port() -> None:
    (service,) = [o for o in render_job_objects(plan_of(), OWNER, CONFIG) if o["kind"] == "Service"]
    assert service["metadata"]["name"] == "digits-aggregator"
    assert service["spec"]["selector"] == {"fedkube.io/job": "digits", "fedkube.io/role": "aggregator"}
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 7070, "status": 8080, "metrics": 9090}


def test_named_metrics_port_for_a_service_monitor() -> None:
    """A ServiceMonitor selects the Service's `metrics` port, which must name a container port serving it."""
    (service,) = [o for o in render_job_objects(plan_of(), OWNER, CONFIG) if o["kind"] == "Service"]
    (container,) = render_aggregator_pod(plan_of(), OWNER, CONFIG)["spec"]["containers"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == "metrics"]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    command = container["command"]
    assert str(target["containerPort"]) == command[command.index("--metrics-port") + 1]


def test_slot_names() -> None:
    assert Slot(4).pod_name("j", 0) == "j-client-4"
    assert Slot(4).pod_name("j", 2) == "j-client-4-retry-2"
    assert AGGREGATOR.base_name("j") == "j-aggregator"


def test_a_ckks_key_reaches_client_pods_only() -> None:
    plan = plan_of(secureAggregation={"mode": "ckks"}, transport={"tls": False})
    secrets = _secrets(render_job_objects(plan, OWNER, CONFIG))
    assert list(secrets) == ["digits-ckks"]
    context = load_context(base64.b64decode(secrets["digits-ckks"]["data"]["ckks-secret.ctx"]))
    assert context.is_private()
    aggregator, *clients = all_pods(plan)
    assert not [v for v in aggregator["spec"]["volumes"] if "secret" in v]
    assert "--ckks-context" not in aggregator["spec"]["containers"][0]["command"]
    for pod in clients:
        assert [v for v in pod["spec"]["volumes"] if "secret" in v] == [
            {"name": "ckks", "secret": {"secretName": "digits-ckks", "defaultMode": 0o440}}]
        container = pod["spec"]["containers"][0]
        assert {"name": "ckks", "mountPath": "/etc/fedkube/ckks", "readOnly": True} in container["volumeMounts"]
        args = build_parser().parse_args(container["command"][1:])
        assert args.ckks_context == "/etc/fedkube/ckks/ckks-secret.ctx"


def test_a_ckks_key_too_large_for_a_secret_is_refused_at_admission() -> None:
    big = manifest(secureAggregation={"mode": "ckks", "ckks": {"polyModulusDegree": 16384,
                                                               "coeffModBits": [60, 40, 40, 60]}})
    errors = admission_errors("CREATE", big, None)
    assert [e.path for e in errors] == ["spec.secureAggregation.ckks"] and "1 MiB" in errors[0].message
    assert admission_errors("CREATE", manifest(secureAggregation={"mode": "ckks"}), None) == []
