"""Least privilege in the chart: RBAC without wildcards, scoped to the served namespaces; pods that
meet the restricted Pod Security profile (the operator's and the ones it renders for jobs); and
values that values.schema.json refuses, with the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from chart import CASES, CHART, RELEASE, RELEASE_NAMESPACE, REPO, of_kind, one, render_case, run_helm
from pod_security import violations
from rbac import Access, denied, grants, unused

from fedkube.plan import make_plan
from fedkube.spec import parse_manifest
from fedkube_operator.config import DEFAULT_IMAGE
from fedkube_operator.names import slots
from fedkube_operator.render import Owner, RenderConfig, render_job_objects, render_pod

RBAC_KINDS = ("ClusterRole", "Role")
CLUSTER_SCOPED = {("apiextensions.k8s.io", "customresourcedefinitions"), ("", "namespaces"),
                  ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
                  ("admissionregistration.k8s.io", "mutatingwebhookconfigurations")}


def rules_of(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [rule for role in of_kind(objects, kind) for rule in role["rules"]]


@pytest.mark.parametrize("case", sorted(CASES))
def test_rbac_has_no_wildcards(case: str) -> None:
    objects = render_case(case)
    for kind in RBAC_KINDS:
        for rule in rules_of(objects, kind):
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(field, [])), \
                    f"{case}: {kind} rule {rule} has a wildcard"


def test_cluster_mode_binds_one_cluster_role() -> None:
    objects = render_case("default")
    assert not of_kind(objects, "Role") and not of_kind(objects, "RoleBinding")
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == one(objects, "ClusterRole")["metadata"]["name"]
    account = one(objects, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"], "namespace": RELEASE_NAMESPACE}]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]


def test_namespaced_mode_grants_namespaced_resources_only_in_served_namespaces() -> None:
    objects = render_case("namespaced")
    served = CASES["namespaced"]["watch"]["namespaces"]
    roles = of_kind(objects, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == served
    bindings = of_kind(objects, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == served
    for binding in bindings:
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                      "name": roles[0]["metadata"]["name"]}
    # The ClusterRole holds only cluster-scoped resources.
    for rule in rules_of(objects, "ClusterRole"):
        for resource in rule["resources"]:
            assert (rule["apiGroups"][0], resource) in CLUSTER_SCOPED, f"{resource} is granted cluster-wide"
    args = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert [a for a in args if a.startswith("--namespace")] == [f"--namespace={ns}" for ns in served]


WEBHOOK_CONFIGURATIONS = {"validatingwebhookconfigurations", "mutatingwebhookconfigurations"}


def test_with_cert_manager_the_operator_cannot_touch_webhook_configurations() -> None:
    objects = render_case("cert-manager")
    assert all(not WEBHOOK_CONFIGURATIONS & set(r["resources"]) for r in rules_of(objects, "ClusterRole"))
    assert not of_kind(objects, "MutatingWebhookConfiguration")


def test_webhook_configuration_patches_are_limited_to_the_releases_own() -> None:
    objects = render_case("default")
    name = one(objects, "ValidatingWebhookConfiguration")["metadata"]["name"]
    # Kopf also keeps a mutating configuration of the same name: the chart owns it, empty.
    mutating = one(objects, "MutatingWebhookConfiguration")
    assert mutating["metadata"]["name"] == name and mutating["webhooks"] == []
    patch = [r for r in rules_of(objects, "ClusterRole") if WEBHOOK_CONFIGURATIONS & set(r["resources"])
             and "patch" in r["verbs"]]
    assert patch == [{"apiGroups": ["admissionregistration.k8s.io"], "resources": sorted(WEBHOOK_CONFIGURATIONS,
                                                                                       reverse=True),
                      "resourceNames": [name], "verbs": ["patch"]}]


def test_the_operator_deployment_meets_the_restricted_profile() -> None:
    for case in CASES:
        objects = render_case(case)
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        assert violations(pod) == [], case


@pytest.mark.parametrize("example", ["digits-fedavg", "medical-breast-cancer", "silos-breast-cancer"])
def test_pods_the_operator_renders_meet_the_restricted_profile(example: str) -> None:
    manifest = yaml.safe_load((REPO / "examples" / f"{example}.yaml").read_text())
    plan = make_plan(parse_manifest(manifest, check_entrypoint=False))
    owner = Owner(plan.name, "default", "uid-1")
    config = RenderConfig(image=DEFAULT_IMAGE, image_pull_policy="IfNotPresent")
    for slot in slots(len(plan.clients)):
        for attempt in (0, 3):
            pod = render_pod(plan, slot, owner, config, attempt)
            assert violations(pod["spec"]) == [], pod["metadata"]["name"]
    assert render_job_objects(plan, owner, config)


@pytest.mark.parametrize(("spec", "problem"), [
    ({"hostNetwork": True}, "spec.hostNetwork"),
    ({"volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, "spec.volumes[0]"),
    ({"securityContext": {"runAsUser": 0}}, "spec.securityContext.runAsUser"),
    ({"containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": False,
                                                       "capabilities": {"drop": ["ALL"]}}}]},
     "spec.containers[0].securityContext.runAsNonRoot"),
    ({"containers": [{"name": "c", "securityContext": {"runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                                                       "seccompProfile": {"type": "RuntimeDefault"}}}]},
     "spec.containers[0].securityContext.allowPrivilegeEscalation"),
    ({"containers": [{"name": "c", "securityContext": {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"},
        "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}}]},
     "spec.containers[0].securityContext.capabilities.add"),
    ({"containers": [{"name": "c", "securityContext": {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]},
     "spec.containers[0].securityContext.seccompProfile"),
])
def test_the_restricted_checker_names_what_breaks_the_profile(spec: dict[str, Any], problem: str) -> None:
    """The checker itself: each field that breaks the profile is reported by its path."""
    pod: dict[str, Any] = {"containers": [{"name": "c", "securityContext": {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"}}}]}
    assert violations(pod) == []
    pod.update(spec)
    found = violations(pod)
    assert any(v.startswith(problem) for v in found), found


@pytest.mark.parametrize(("access", "allowed"), [
    (Access("ml-team-a", "", "pods", "create"), True),
    (Access("ml-team-a", "fedkube.io", "federatedjobs/status", "patch", "job"), True),
    (Access("elsewhere", "", "pods", "create"), False),
    (Access("ml-team-a", "", "pods", "update"), False),
    (Access(None, "", "pods", "list"), False),
    (Access(None, "", "namespaces", "watch"), True),
    (Access(None, "admissionregistration.k8s.io", "validatingwebhookconfigurations", "patch", "other"), False),
])
def test_the_rbac_evaluation_allows_only_what_the_chart_grants(access: Access, allowed: bool) -> None:
    """The evaluation the end-to-end RBAC test relies on, on the namespaced mode's bindings."""
    objects = render_case("namespaced")
    granted = grants(objects, one(objects, "ServiceAccount")["metadata"]["name"], RELEASE_NAMESPACE)
    assert (denied(granted, [access]) == []) is allowed
    assert (len(unused(granted, [access])) < len(granted)) is allowed


# (values overlay, the key helm must name)
BAD_VALUES = [
    ({"webhook": {"port": "9443"}}, "/webhook/port"),
    ({"webhook": {"prot": 9443}}, "prot"),
    ({"watch": {"allNamespaces": "yes"}}, "/watch/allNamespaces"),
    ({"watch": {"allNamespaces": False, "namespaces": []}}, "/watch/namespaces"),
    ({"watch": {"namespaces": ["Team_A"]}}, "/watch/namespaces/0"),
    ({"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
    ({"image": {"tag": 1.0}}, "/image/tag"),
    ({"trainerImage": {"registry": "x"}}, "registry"),
    ({"operator": {"logLevel": "loud"}}, "/operator/logLevel"),
    ({"operator": {"pollIntervalSeconds": 0}}, "/operator/pollIntervalSeconds"),
    ({"operator": {"resources": {"limits": {"memory": "lots"}}}}, "/operator/resources/limits/memory"),
    ({"checkpoints": {"volumeSize": "big"}}, "/checkpoints/volumeSize"),
    ({"metrics": {"serviceMonitor": {"enabled": "true"}}}, "/metrics/serviceMonitor/enabled"),
    ({"networkPolicy": {"objectStorage": {"cidrs": ["10.0.0.0"]}}}, "/networkPolicy/objectStorage/cidrs/0"),
    ({"networkPolicy": {"dataStorage": {"ports": []}}}, "/networkPolicy/dataStorage/ports"),
    ({"webhook": {"certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}}, "/webhook/certManager/issuerRef"),
    ({"rbac": {"create": 1}}, "/rbac/create"),
    ({"unknownTopLevel": True}, "unknownTopLevel"),
]


@pytest.mark.parametrize(("values", "key"), BAD_VALUES, ids=[k for _, k in BAD_VALUES])
def test_bad_values_are_refused_naming_the_key(values: dict[str, Any], key: str, tmp_path: Path) -> None:
    result = run_helm("template", RELEASE, str(CHART), values=values, tmp=tmp_path, check=False)
    assert result.returncode != 0, f"{values} was accepted"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert key in result.stderr, result.stderr


def test_values_yaml_documents_every_top_level_key() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    top = [i for i, line in enumerate(lines) if line and not line[0].isspace() and not line.startswith("#")]
    assert top, "values.yaml has no keys"
    undocumented = [lines[i] for i in top if not lines[i - 1].startswith("#")]
    assert undocumented == []
