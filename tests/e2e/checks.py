"""Assertions shared by the end-to-end tests: what every object of a job must look like."""

from __future__ import annotations

from typing import Any

OWNED_KINDS = ["pods", "services", "configmaps", "secrets", "persistentvolumeclaims"]


def third_party_crd(group: str, kind: str, plural: str, version: str = "v1") -> dict[str, Any]:
    """A minimal CRD for another project's kind (schema-free), so that its API exists in the emulator."""
    return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
                     "versions": [{"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                         "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}


def job_objects(cluster: Any, job: str) -> list[dict[str, Any]]:
    """Every object labelled as the job's, across the kinds the operator creates."""
    items = cluster.get(",".join(OWNED_KINDS))["items"]
    return [o for o in items if (o["metadata"].get("labels") or {}).get("fedkube.io/job") == job]


def assert_owned(cluster: Any, job: str) -> None:
    """Each object has exactly one ownerReference: the job, as controller, blocking its deletion."""
    owner = cluster.job(job)
    expected = [{"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "name": job,
                 "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    objects = job_objects(cluster, job)
    assert {o["kind"] for o in objects} == {"Pod", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim"}
    for obj in objects:
        assert obj["metadata"]["ownerReferences"] == expected, f"{obj['kind']} {obj['metadata']['name']}"


def assert_pods_shaped(pods: list[dict[str, Any]], job: str, partitions: int) -> None:
    """One aggregator and one client per partition, labelled, restricted, without an API token."""
    by_role: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        by_role.setdefault(pod["metadata"]["labels"]["fedkube.io/role"], []).append(pod)
    assert [p["metadata"]["name"] for p in by_role["aggregator"]] == [f"{job}-aggregator"]
    clients = {p["metadata"]["labels"]["fedkube.io/partition"]: p for p in by_role["client"]}
    assert sorted(clients, key=int) == [str(i) for i in range(partitions)]
    for partition, pod in clients.items():
        assert pod["metadata"]["name"] == f"{job}-client-{partition}"
    for pod in pods:
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
