"""JobPlan -> Kubernetes objects, as plain dicts: pure functions, no API calls.

One FederatedJob becomes its CA's Secret (see authority.py), one mTLS Secret per identity
(aggregator, each client), a ConfigMap holding the validated manifest (the pods' only input, and
the operator's record of the spec it is running), a Service in front of the aggregator, a
PersistentVolumeClaim for `file://` checkpoints, one aggregator Pod and one client Pod per
partition. Every object carries an ownerReference to the job (controller, blockOwnerDeletion), so
deleting the job cascades to all of it.

Pods run restricted: non-root, read-only root filesystem, every capability dropped, seccomp
RuntimeDefault, no service-account token. What a container may write goes to emptyDir volumes
(`/tmp`, the aggregator's output directory) and to the checkpoint claim.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from fedkube.he.params import SECRET_FILE
from fedkube.plan import GRPC_PORT, METRICS_PORT, STATUS_PORT, JobPlan
from fedkube.secure import DEFAULT_TLS_DIR
from fedkube.secure.tls import AGGREGATOR as AGGREGATOR_IDENTITY
from fedkube.secure.tls import CA_FILE, CERT_FILE, KEY_FILE, Authority, Identity, client_identity, identities
from fedkube.spec.model import PodTemplateSpec
from fedkube_operator import API_VERSION, KIND
from fedkube_operator.data import data_access
from fedkube_operator.gang import POD_GROUP_KIND, Gang, gang_of
from fedkube_operator.names import (
    AGGREGATOR,
    CA_IDENTITY,
    Slot,
    checkpoint_claim_name,
    ckks_secret_name,
    configmap_name,
    job_labels,
    pod_labels,
    service_name,
    tls_secret_name,
)
from fedkube_operator.queueing import inherited_labels
from fedkube_operator.security import container_security_context, pod_security_context

MANIFEST_KEY = "manifest.yaml"
MANIFEST_DIR = "/etc/fedkube/job"
MANIFEST_PATH = f"{MANIFEST_DIR}/{MANIFEST_KEY}"
TRANSPORT_DIR = str(DEFAULT_TLS_DIR)
CKKS_DIR = "/etc/fedkube/ckks"
OUTPUT_DIR = "/var/lib/fedkube"
DEFAULT_CHECKPOINT_DIR = f"{OUTPUT_DIR}/checkpoints"
TMP_DIR = "/tmp"
TERMINATION_LOG = "/dev/termination-log"  # the aggregator leaves its final status document here


@dataclass(frozen=True)
class Owner:
    """The FederatedJob that owns the rendered objects, and the labels of its that its pods carry."""

    name: str
    namespace: str
    uid: str
    pod_labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> Owner:
        meta = body["metadata"]
        return cls(meta["name"], meta.get("namespace") or "default", meta["uid"], inherited_labels(meta))

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": KIND, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": True}


@dataclass(frozen=True)
class RenderConfig:
    """Operator-wide choices that the manifest leaves open."""

    image: str
    image_pull_policy: str | None = None
    checkpoint_volume_size: str = "1Gi"
    checkpoint_storage_class: str | None = None


@dataclass(frozen=True)
class CheckpointStorage:
    """Where the aggregator keeps checkpoints in a cluster, so a recreated aggregator resumes.

    `file://` checkpoints (the default, and any `file://` URI in the spec) live on the job's
    PersistentVolumeClaim mounted at the URI's path; other stores (s3://) need no volume.
    """

    uri: str
    mount_path: str | None
    uri_argument: str | None  # passed as --checkpoint-uri when the spec leaves it unset


def checkpoint_storage(plan: JobPlan) -> CheckpointStorage:
    uri = plan.aggregator.checkpoint.uri
    if uri is None:
        default = f"file://{DEFAULT_CHECKPOINT_DIR}"
        return CheckpointStorage(default, DEFAULT_CHECKPOINT_DIR, default)
    if uri.startswith("file://"):
        return CheckpointStorage(uri, uri.removeprefix("file://").rstrip("/") or "/", None)
    return CheckpointStorage(uri, None, None)


def _metadata(name: str, owner: Owner, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": owner.namespace, "labels": labels,
            "ownerReferences": [owner.reference()]}


def service_dns_names(plan: JobPlan, cluster_domain: str = "cluster.local") -> list[str]:
    """Every name a client may dial the aggregator's Service by; its certificate covers them all."""
    service = service_name(plan.name)
    return [service, f"{service}.{plan.namespace}", f"{service}.{plan.namespace}.svc",
            f"{service}.{plan.namespace}.svc.{cluster_domain}"]


def _tls_secret(plan: JobPlan, owner: Owner, identity: str, data: Mapping[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": _metadata(tls_secret_name(plan.name, identity), owner, job_labels(plan.name)),
        "data": {name: base64.b64encode(value).decode() for name, value in data.items()},
    }


def render_transport_secrets(plan: JobPlan, owner: Owner, material: Mapping[str, Identity]) -> list[dict[str, Any]]:
    """One `kubernetes.io/tls` Secret per identity: the job CA, its certificate and its key, nothing else.

    Separate Secrets (not one Secret projected per pod) mean a node, through the node authorizer,
    can read only the keys of the pods it runs; the CA's private key is in none of them.
    """
    return [_tls_secret(plan, owner, identity, {CA_FILE: m.ca, CERT_FILE: m.cert, KEY_FILE: m.key})
            for identity, m in material.items()]


def render_ca_secret(plan: JobPlan, owner: Owner, authority: Authority) -> dict[str, Any]:
    """The job CA's certificate and private key, for the operator to sign with; no pod mounts it, so no
    node can read it."""
    return _tls_secret(plan, owner, CA_IDENTITY, {CERT_FILE: authority.cert, KEY_FILE: authority.key})


def render_ckks_secret(plan: JobPlan, owner: Owner) -> list[dict[str, Any]]:
    """A CKKS job's freshly made secret context, for client pods only; none for other jobs.

    The aggregator's context holds the parameters only and is made from the spec, so no key
    material of any kind reaches its pod.
    """
    secure = plan.aggregator.secure_aggregation
    if secure.mode != "ckks":
        return []
    from fedkube.he.keys import make_context, secret_bytes
    from fedkube.he.params import ckks_params

    return [{
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": _metadata(ckks_secret_name(plan.name), owner, job_labels(plan.name)),
        "data": {SECRET_FILE: base64.b64encode(secret_bytes(make_context(ckks_params(secure.ckks)))).decode()},
    }]


def transport_material(plan: JobPlan, authority: Authority | None) -> dict[str, Identity]:
    """The job's mTLS identities, newly signed by `authority` (by a fresh CA when None); none with TLS off."""
    if not plan.tls:
        return {}
    authority = authority or Authority.new(plan.name)
    return {identity: authority.issue(plan.name, identity, service_dns_names(plan))
            for identity in identities(len(plan.clients))}


def manifest_yaml(plan: JobPlan) -> str:
    return yaml.safe_dump(plan.manifest, sort_keys=False)


def render_manifest_configmap(plan: JobPlan, owner: Owner) -> dict[str, Any]:
    """The validated, defaulted manifest: what every pod reads and what the job keeps running.

    Immutable: the spec of a running job does not change, and kubelets need not watch it.
    """
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _metadata(configmap_name(plan.name), owner, job_labels(plan.name)),
        "immutable": True,
        "data": {MANIFEST_KEY: manifest_yaml(plan)},
    }


def render_aggregator_service(plan: JobPlan, owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": _metadata(service_name(plan.name), owner, job_labels(plan.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": {k: v for k, v in pod_labels(plan.name, AGGREGATOR, 0).items()
                         if k in ("fedkube.io/job", "fedkube.io/role")},
            "ports": [
                {"name": "grpc", "port": GRPC_PORT, "targetPort": "grpc", "protocol": "TCP",
                 "appProtocol": "grpc"},
                {"name": "status", "port": STATUS_PORT, "targetPort": "status", "protocol": "TCP"},
                {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def render_checkpoint_claim(plan: JobPlan, owner: Owner, config: RenderConfig) -> dict[str, Any] | None:
    """The claim behind `file://` checkpoints, or None when checkpoints go to an object store."""
    if checkpoint_storage(plan).mount_path is None:
        return None
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": config.checkpoint_volume_size}}}
    if config.checkpoint_storage_class is not None:
        spec["storageClassName"] = config.checkpoint_storage_class
    return {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": _metadata(checkpoint_claim_name(plan.name), owner, job_labels(plan.name)),
        "spec": spec,
    }


def render_job_objects(plan: JobPlan, owner: Owner, config: RenderConfig,
                       authority: Authority | None = None) -> list[dict[str, Any]]:
    """Everything a job needs before its pods: TLS Secrets, ConfigMap, Service and checkpoint claim.

    The identities are signed afresh on every call, by the job's CA `authority` (see
    fedkube_operator.authority for how the operator keeps one CA per job).
    """
    objects = [*render_transport_secrets(plan, owner, transport_material(plan, authority)),
               *render_ckks_secret(plan, owner),
               render_manifest_configmap(plan, owner), render_aggregator_service(plan, owner)]
    claim = render_checkpoint_claim(plan, owner, config)
    return objects + ([claim] if claim is not None else [])


def _env(job: str, template: PodTemplateSpec) -> list[dict[str, Any]]:
    """The operator's variables, then the template's; a template entry replaces ours of the same name."""
    ours: list[dict[str, Any]] = [
        {"name": "FEDKUBE_JOB", "value": job},
        {"name": "FEDKUBE_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "FEDKUBE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "HOME", "value": TMP_DIR},  # the root filesystem is read-only
        # Torch sizes its thread pools by the host's cores, not the container's CPU limit; a pod
        # limited to 2 CPUs on a 64-core node would otherwise run 64 threads.
        {"name": "OMP_NUM_THREADS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}},
        {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    theirs = [dict(e) for e in template.env]
    replaced = {e["name"] for e in theirs}
    return [e for e in ours if e["name"] not in replaced] + theirs


def _common_volumes(plan: JobPlan, identity: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Manifest and /tmp for every pod, and with mTLS this pod's own TLS Secret (and no other)."""
    volumes = [
        {"name": "manifest", "configMap": {"name": configmap_name(plan.name),
                                           "items": [{"key": MANIFEST_KEY, "path": MANIFEST_KEY}]}},
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts = [
        {"name": "manifest", "mountPath": MANIFEST_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": TMP_DIR},
    ]
    if plan.tls:
        volumes.append({"name": "transport", "secret": {"secretName": tls_secret_name(plan.name, identity),
                                                        "defaultMode": 0o440}})
        mounts.append({"name": "transport", "mountPath": TRANSPORT_DIR, "readOnly": True})
    return volumes, mounts


def _pod(plan: JobPlan, owner: Owner, config: RenderConfig, slot: Slot, attempt: int,
         template: PodTemplateSpec, container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    container = {
        "image": template.image or config.image,
        **({"imagePullPolicy": policy} if (policy := template.image_pull_policy or config.image_pull_policy)
           else {}),
        **container,
        "env": _env(plan.name, template) + container.get("env", []),
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if template.resources:
        container["resources"] = dict(template.resources)
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes,
    }
    if template.node_selector:
        spec["nodeSelector"] = dict(template.node_selector)
    if template.tolerations:
        spec["tolerations"] = [dict(t) for t in template.tolerations]
    if template.affinity:
        spec["affinity"] = dict(template.affinity)
    if template.priority_class_name:
        spec["priorityClassName"] = template.priority_class_name
    metadata = _metadata(slot.pod_name(plan.name, attempt), owner,
                         {**dict(owner.pod_labels), **pod_labels(plan.name, slot, attempt)})
    gang = gang_of(plan.name, plan.manifest["spec"])
    if gang is not None:
        spec["schedulerName"] = gang.api.scheduler_name
        metadata["labels"].update(gang.pod_labels())
        if annotations := gang.pod_annotations():
            metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def render_pod_group(plan: JobPlan, owner: Owner, gang: Gang) -> dict[str, Any]:
    """The job's PodGroup: the aggregator plus a quorum of clients, placed together or not at all.

    Clients beyond the quorum may start later; the job trains as soon as the group's members run.
    """
    spec: dict[str, Any] = {"minMember": gang.min_member}
    if gang.api.timeout_field is not None:  # the scheduler gives up on the group when the operator would
        spec[gang.api.timeout_field] = plan.manifest["spec"]["scheduling"]["pendingTimeoutSeconds"]
    return {"apiVersion": gang.api.api_version, "kind": POD_GROUP_KIND,
            "metadata": _metadata(gang.name, owner, job_labels(plan.name)), "spec": spec}


def render_aggregator_pod(plan: JobPlan, owner: Owner, config: RenderConfig, attempt: int = 0) -> dict[str, Any]:
    storage = checkpoint_storage(plan)
    volumes, mounts = _common_volumes(plan, AGGREGATOR_IDENTITY)
    volumes.append({"name": "output", "emptyDir": {}})
    mounts.append({"name": "output", "mountPath": OUTPUT_DIR})
    if storage.mount_path is not None:
        volumes.append({"name": "checkpoints",
                        "persistentVolumeClaim": {"claimName": checkpoint_claim_name(plan.name)}})
        mounts.append({"name": "checkpoints", "mountPath": storage.mount_path})
    command = ["fedkube", "aggregator", "--manifest", MANIFEST_PATH, "--port", str(GRPC_PORT),
               "--status-port", str(STATUS_PORT), "--metrics-port", str(METRICS_PORT), "--output-dir", OUTPUT_DIR,
               "--termination-log", TERMINATION_LOG]
    if storage.uri_argument is not None:
        command += ["--checkpoint-uri", storage.uri_argument]
    container: dict[str, Any] = {
        "name": "aggregator",
        "command": command,
        "ports": [{"name": "grpc", "containerPort": GRPC_PORT, "protocol": "TCP"},
                  {"name": "status", "containerPort": STATUS_PORT, "protocol": "TCP"},
                  {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "status"}, "periodSeconds": 5},
        "volumeMounts": mounts,
    }
    secret_ref = plan.aggregator.checkpoint.secret_ref
    if secret_ref:
        container["envFrom"] = [{"secretRef": {"name": secret_ref}}]
    return _pod(plan, owner, config, AGGREGATOR, attempt, plan.aggregator.pod, container, volumes)


def aggregator_address(plan: JobPlan) -> str:
    """The Service's in-cluster name, resolvable from any namespace through the search path."""
    return f"{service_name(plan.name)}.{plan.namespace}.svc:{GRPC_PORT}"


def render_client_pod(plan: JobPlan, partition: int, owner: Owner, config: RenderConfig,
                      attempt: int = 0) -> dict[str, Any]:
    client = plan.clients[partition]
    volumes, mounts = _common_volumes(plan, client_identity(partition))
    command = ["fedkube", "client", "--manifest", MANIFEST_PATH, "--partition", str(partition),
               "--aggregator", aggregator_address(plan)]
    if client.secure_aggregation.mode == "ckks":
        volumes.append({"name": "ckks", "secret": {"secretName": ckks_secret_name(plan.name), "defaultMode": 0o440}})
        mounts.append({"name": "ckks", "mountPath": CKKS_DIR, "readOnly": True})
        command += ["--ckks-context", f"{CKKS_DIR}/{SECRET_FILE}"]
    data = data_access(client.source)
    volumes += data.volumes
    container = {"name": "client", "command": command, "volumeMounts": mounts + data.mounts, "env": data.env}
    return _pod(plan, owner, config, Slot(partition), attempt, client.pod, container, volumes)


def render_pod(plan: JobPlan, slot: Slot, owner: Owner, config: RenderConfig, attempt: int) -> dict[str, Any]:
    if slot.partition is None:
        return render_aggregator_pod(plan, owner, config, attempt)
    return render_client_pod(plan, slot.partition, owner, config, attempt)
