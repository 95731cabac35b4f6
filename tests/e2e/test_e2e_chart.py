"""The Helm chart in the emulated cluster.

- Every case of the option matrix, rendered by Helm, applies with the real kubectl and creates
  every object.
- The operator, started with the command line of the chart's Deployment as `fedkube operator`,
  runs a job through admission, suspension, resumption, success and TTL deletion; every API
  request it makes is allowed by the chart's RBAC, and every grant is used: the RBAC is exactly
  what the operator calls.

Mocked, because they cannot run here: the kubelet and garbage collector (the harness's
stand-ins), and the Prometheus Operator's and cert-manager's CRDs (minimal definitions, so their
kinds exist). Swapped in the operator's command line, because the process runs on this machine
and not in a pod: the listening addresses (liveness, metrics, webhook on 127.0.0.1 with free
ports) and the webhook's Service (the emulator calls webhooks by URL), plus the test clocks.
"""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from checks import third_party_crd
from conftest import BIN, NAMESPACE, OPERATOR_ARGS, Cluster, free_port, small_job, wait_for
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chart"))
from chart import CASES, RELEASE_NAMESPACE, one, operator_container, template  # noqa: E402
from pod_security import violations  # noqa: E402
from rbac import Access, denied, grants, unused  # noqa: E402

# The operator's two API clients: Kopf's, and the operator's own (fedkube_operator.kube).
OPERATOR_AGENTS = ("kopf/", "fedkube-operator")
THIRD_PARTY = [("monitoring.coreos.com", "ServiceMonitor", "servicemonitors", "v1"),
               ("cert-manager.io", "Certificate", "certificates", "v1"), ("cert-manager.io", "Issuer", "issuers", "v1"),
               ("scheduling.x-k8s.io", "PodGroup", "podgroups", "v1alpha1")]  # Volcano's is left out on purpose


def install(cluster: Cluster, values: dict[str, Any], tmp: Path) -> list[dict[str, Any]]:
    """`helm template | kubectl apply`, as one would without Helm's release storage; the objects."""
    manifest = template(values, tmp, "--include-crds")
    objects = [doc for doc in yaml.safe_load_all(manifest) if doc]
    namespaces = sorted({o["metadata"]["namespace"] for o in objects if o["metadata"].get("namespace")})
    for namespace in namespaces:
        cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    for crd in THIRD_PARTY:
        cluster.apply(third_party_crd(*crd))
    result = cluster.kubectl("apply", "--validate=false", "-f", "-", input=manifest)
    assert result.stderr == "", result.stderr
    return objects


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_chart_applies_and_creates_every_object(case: str, cluster: Cluster, tmp_path: Path) -> None:
    objects = install(cluster, CASES[case], tmp_path)
    stored = json.loads(cluster.kubectl("get", "-f", "-", "-o", "json", input=yaml.safe_dump_all(objects)).stdout)
    stored_items = stored["items"] if "items" in stored else [stored]
    identity = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in stored_items] == identity
    for obj, back in zip(objects, stored_items, strict=True):
        for field in ("spec", "rules", "webhooks", "subjects", "roleRef"):
            if field in obj:
                assert back[field] == obj[field], f"{obj['kind']} {obj['metadata']['name']}: {field} changed"


def operator_requests(log: list[Any]) -> list[Access]:
    """Every resource request of the operator in the emulator's access log, as an authorizer sees it."""
    out = []
    for request in list(log):
        if request.resource is None or request.resource.plural is None:
            continue  # discovery, which every authenticated client may read
        if not request.headers.get("User-Agent", "").startswith(OPERATOR_AGENTS):
            continue
        method = str(request.method.value if hasattr(request.method, "value") else request.method).upper()
        if method == "GET":
            verb = "get" if request.name else "watch" if request.params.get("watch") in ("true", "1") else "list"
        else:
            verb = {"POST": "create", "PATCH": "patch", "PUT": "update"}.get(method) or (
                "delete" if request.name else "deletecollection")
        resource = request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        out.append(Access(request.namespace, request.resource.group, resource, verb, request.name))
    return out


def chart_command(cluster: Cluster, args: list[str]) -> tuple[list[str], int]:
    """`fedkube operator` with the Deployment's flags, listening on this machine; and the metrics port."""
    cluster.liveness_port, cluster.webhook_port, metrics_port = free_port(), free_port(), free_port()
    local = {"--liveness": f"http://127.0.0.1:{cluster.liveness_port}/healthz",
             "--metrics-port": str(metrics_port), "--webhook-port": str(cluster.webhook_port)}
    command = [str(BIN / "fedkube")]
    for arg in args:
        flag, _, _value = arg.partition("=")
        if flag == "--webhook-service":
            command += ["--webhook-host=127.0.0.1", "--webhook-addr=127.0.0.1"]
        else:
            command.append(f"{flag}={local[flag]}" if flag in local else arg)
    return [*command, *OPERATOR_ARGS], metrics_port  # the test clocks come last and win


def phase(job: dict[str, Any]) -> str | None:
    return job.get("status", {}).get("phase")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["namespaced", "cluster"])
def test_the_operator_started_as_the_chart_says_needs_exactly_the_charts_rbac(
        mode: str, cluster: Cluster, kubelet: object, garbage_collector: object, tmp_path: Path) -> None:
    values = {"watch": {"allNamespaces": False, "namespaces": [NAMESPACE]}} if mode == "namespaced" else {}
    assert cluster.emulator.emulator is not None
    log = cluster.emulator.emulator.access_log = []
    objects = install(cluster, values, tmp_path)
    container = operator_container(objects)
    assert violations(one(objects, "Deployment")["spec"]["template"]["spec"]) == []
    command, metrics_port = chart_command(cluster, container["args"])
    webhook_config = one(objects, "ValidatingWebhookConfiguration")["metadata"]["name"]
    cluster.launch_operator(command, webhook_config)

    # Admission through the chart's webhook configuration, now pointing at the operator.
    refused = cluster.apply(small_job("charted", rounds=0), check=False)
    assert refused.returncode != 0 and "spec.rounds" in refused.stderr, refused.stderr

    job = small_job("charted", partitions=2, rounds=3, ttlSecondsAfterFinished=2)
    job["spec"]["clients"]["roundTimeoutSeconds"] = 60  # generous: CI machines are shared
    job["spec"]["scheduling"] = {"gang": True}
    cluster.apply(job)
    # A Volcano gang job in a cluster without Volcano: the operator may ask, and is told it is absent.
    cluster.apply(small_job("volcanic", partitions=2, scheduling={"gang": True, "gangScheduler": "volcano"}))
    cluster.wait_job("volcanic", lambda j: any(c["type"] == "PodGroupMissing"
                                               for c in j.get("status", {}).get("conditions", [])),
                     30, "the PodGroupMissing condition")
    cluster.kubectl("delete", "fj", "volcanic", "--timeout=30s")
    # Suspend as soon as the pods exist: long before the aggregator can finish (the pods are deleted).
    pods = wait_for(lambda: len(p := cluster.pods("charted")) == 3 and p, 60, "the job's 3 pods",
                    diagnose=cluster.diagnose)
    for pod in pods:  # as stored by the API server: restricted, like the operator's own pod
        assert violations(pod["spec"]) == [], pod["metadata"]["name"]
    suspend = '{"spec": {"scheduling": {"suspend": %s}}}'
    cluster.kubectl("patch", "fj", "charted", "--type=merge", "-p", suspend % "true")
    cluster.wait_job("charted", lambda j: phase(j) == "Suspended", 30, "Suspended")
    wait_for(lambda: not [p for p in cluster.pods("charted") if p["status"].get("phase") in ("Pending", "Running")],
             30, "the pods to be deleted", diagnose=cluster.diagnose)
    cluster.kubectl("patch", "fj", "charted", "--type=merge", "-p", suspend % "false")
    done = cluster.wait_job("charted", lambda j: phase(j) in ("Succeeded", "Failed"), 180, "finished")
    assert phase(done) == "Succeeded", done["status"]
    wait_for(lambda: cluster.kubectl("get", "fj", "charted", check=False).returncode != 0, 30,
             "ttlSecondsAfterFinished to delete the job", diagnose=cluster.diagnose)

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        families = {f.name: f for f in text_string_to_metric_families(response.read().decode())}
    reconciles = [s for s in families["fedkube_operator_reconcile_duration_seconds"].samples
                  if s.name.endswith("_count")]
    assert reconciles and reconciles[0].value > 0, families.keys()

    account = one(objects, "ServiceAccount")["metadata"]["name"]
    granted = grants(objects, account, RELEASE_NAMESPACE)
    requests = operator_requests(log)
    assert requests, "no request of the operator was recorded"
    assert denied(granted, requests) == [], \
        "the chart's RBAC would refuse these requests of the operator: grant them in charts/fedkube/templates/rbac.yaml"
    assert unused(granted, requests) == [], \
        "the chart grants what the operator never asked for: remove it from charts/fedkube/templates/rbac.yaml"

