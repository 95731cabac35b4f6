"""The Helm chart: it lints, renders offline for every option of the matrix, every object is valid
Kubernetes 1.30+, and what it renders agrees with the operator's own code (flags, images, CRD,
webhook, security settings)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import socket
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart import (
    CASES,
    CHART,
    RELEASE_NAMESPACE,
    REPO,
    of_kind,
    one,
    operator_container,
    render,
    render_case,
    run_helm,
    template,
)

from fedkube_operator import GROUP, PLURAL, VERSION
from fedkube_operator.config import DEFAULT_IMAGE, WebhookConfig
from fedkube_operator.main import _parser, config_from_args
from fedkube_operator.security import RUN_AS_USER, chart_file
from fedkube_operator.webhook import FedkubeWebhookServer

KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
# Kinds of third-party CRDs (Prometheus Operator, cert-manager): no OpenAPI schema ships offline.
THIRD_PARTY_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "Certificate": "cert-manager.io/v1",
                     "Issuer": "cert-manager.io/v1"}


@pytest.fixture(scope="module", params=sorted(CASES))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict]]:
    name = request.param
    return name, render_case(name)


def test_chart_lints_with_default_and_every_case(tmp_path: Path) -> None:
    run_helm("lint", "--strict", str(CHART))
    for name, values in CASES.items():
        (tmp_path / name).mkdir()
        run_helm("lint", "--strict", str(CHART), "--namespace", RELEASE_NAMESPACE, values=values, tmp=tmp_path / name)


def test_every_rendered_object_is_valid_kubernetes(rendered: tuple[str, list[dict]]) -> None:
    name, objects = rendered
    assert objects, f"{name}: nothing rendered"
    for obj in objects:
        label = f"{name}: {obj['kind']} {obj['metadata'].get('name')}"
        if obj["kind"] in THIRD_PARTY_KINDS:
            assert obj["apiVersion"] == THIRD_PARTY_KINDS[obj["kind"]], label
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{label} is invalid for Kubernetes {version}: {exc.message} "
                                     f"at {'.'.join(map(str, exc.path))}") from exc


def test_the_crd_is_installed_and_valid(tmp_path: Path) -> None:
    objects = render(None, tmp_path, "--include-crds")
    crd = one(objects, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    kubernetes_validate.validate(crd, "1.30.0", strict=True)


def test_crd_copy_is_byte_identical() -> None:
    source = (REPO / "crds" / "federatedjob.yaml").read_bytes()
    copy = (CHART / "crds" / "federatedjob.yaml").read_bytes()
    assert copy == source, \
        "charts/fedkube/crds/federatedjob.yaml differs from crds/federatedjob.yaml: run make sync-crd"


def test_security_settings_copy_is_current() -> None:
    assert (CHART / "files" / "security.yaml").read_text() == chart_file(), \
        "charts/fedkube/files/security.yaml differs from fedkube_operator.security: run make sync-chart"


def test_app_version_is_the_package_version() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert chart["version"] == version


def test_default_images_match_the_operator_and_the_build() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    trainer = f"{values['trainerImage']['repository']}:{values['trainerImage']['tag'] or version}"
    assert trainer == DEFAULT_IMAGE
    operator = f"{values['image']['repository']}:{values['image']['tag'] or version}"
    container = operator_container(render_case("default"))
    assert container["image"] == operator
    assert f"--image={DEFAULT_IMAGE}" in container["args"]
    # `make images` tags what values.yaml pulls.
    makefile = (REPO / "Makefile").read_text()
    registry = re.search(r"^REGISTRY \?= (\S+)$", makefile, re.M)
    assert registry is not None
    for image, key in (("operator", "image"), ("trainer", "trainerImage")):
        assert f"$(REGISTRY)/{image}:$(VERSION)" in makefile
        assert f"{registry.group(1)}/{image}" == values[key]["repository"]


def test_operator_flags_are_ones_the_operator_accepts(rendered: tuple[str, list[dict]]) -> None:
    """The Deployment's command line parses with the operator's own parser, and means what the values say."""
    name, objects = rendered
    container = operator_container(objects)
    assert container["command"] == ["fedkube"] and container["args"][0] == "operator"
    args = _parser().parse_args(container["args"][1:])
    config = config_from_args(args)
    values = CASES[name]
    namespaced = not values.get("watch", {}).get("allNamespaces", True)
    assert args.all_namespaces is not namespaced
    if namespaced:
        assert args.namespace == values["watch"]["namespaces"]
    webhook = values.get("webhook", {})
    if webhook.get("enabled", True):
        assert config.webhook is not None
        assert config.webhook.port == ports_of(container)["webhook"]
        services = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-webhook")]
        assert config.webhook.service == (RELEASE_NAMESPACE, one(services, "Service")["metadata"]["name"])
        cert_manager = webhook.get("certManager", {}).get("enabled", False)
        assert (config.webhook.cert_file is not None) is cert_manager
        assert (config.webhook.managed is not None) is not cert_manager
    else:
        assert config.webhook is None
    assert args.liveness.endswith(f":{ports_of(container)['health']}/healthz")
    assert args.log_format == values.get("operator", {}).get("logFormat", "text")
    if values.get("metrics", {}).get("enabled", True):
        assert args.metrics_port == ports_of(container)["metrics"]
    else:
        assert args.metrics_port is None


def ports_of(container: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def test_probes_call_the_liveness_endpoint() -> None:
    container = operator_container(render_case("default"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "health"}, probe


def test_operator_pod_uses_the_shared_security_settings(rendered: tuple[str, list[dict]]) -> None:
    _name, objects = rendered
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    shared = yaml.safe_load(chart_file())
    assert pod["securityContext"] == shared["podSecurityContext"]
    assert pod["containers"][0]["securityContext"] == shared["containerSecurityContext"]
    assert pod["securityContext"]["runAsUser"] == RUN_AS_USER


async def served_client_config(webhook: WebhookConfig) -> dict[str, Any]:
    """The client config the operator's webhook server reports, from a real server on a free port."""
    server = FedkubeWebhookServer(dataclasses.replace(webhook, port=free_port(), addr="127.0.0.1"))

    async def never_called(*_: Any, **__: Any) -> Any:
        raise AssertionError("no admission request is sent here")

    async for client_config in server(never_called):
        return dict(client_config)
    raise AssertionError("the webhook server reported no client config")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_configuration_is_the_one_kopf_builds() -> None:
    """What the chart installs equals what the operator writes (less the CA bundle, which only the
    running operator knows), so neither fights the other and the API server reaches the handler."""
    from kopf._cogs.structs.references import Resource
    from kopf._core.engines.admission import build_webhooks

    from fedkube_operator.handlers import assemble

    objects = render_case("default")
    config = one(objects, "ValidatingWebhookConfiguration")
    container = operator_container(objects)
    operator = config_from_args(_parser().parse_args(container["args"][1:]))
    assert operator.webhook is not None and operator.webhook.managed == config["metadata"]["name"]
    client_config = asyncio.run(served_client_config(operator.webhook))
    assert client_config.pop("caBundle")
    handlers = assemble(operator).registry._webhooks.get_all_handlers()
    resource = Resource(GROUP, VERSION, PLURAL, namespaced=True)
    expected = build_webhooks(handlers, resources=[resource], name_suffix=operator.webhook.managed,
                              client_config=client_config)
    for webhook in expected:
        webhook.pop("objectSelector")  # None: no label filter
    assert config["webhooks"] == expected


def test_cert_manager_injects_the_ca_and_mounts_the_certificate() -> None:
    objects = render_case("cert-manager")
    certificate = one(objects, "Certificate")
    config = one(objects, "ValidatingWebhookConfiguration")
    assert config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == \
        f"{RELEASE_NAMESPACE}/{certificate['metadata']['name']}"
    assert certificate["spec"]["issuerRef"]["name"] == one(objects, "Issuer")["metadata"]["name"]
    service = [s for s in of_kind(objects, "Service") if s["metadata"]["name"].endswith("-webhook")][0]
    assert f"{service['metadata']['name']}.{RELEASE_NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == [certificate["spec"]["secretName"]]


def test_an_existing_issuer_is_used_as_given() -> None:
    objects = render_case("everything")
    assert not of_kind(objects, "Issuer")
    assert one(objects, "Certificate")["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": "corp-ca"}


def test_webhook_off_renders_no_webhook() -> None:
    objects = render_case("webhook-off")
    assert not of_kind(objects, "ValidatingWebhookConfiguration")
    assert not of_kind(objects, "MutatingWebhookConfiguration")
    assert [s["metadata"]["name"] for s in of_kind(objects, "Service")] == []
    assert not any(a.startswith("--webhook") for a in operator_container(objects)["args"])


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objects = render_case("service-monitor")
    (monitor,) = [m for m in of_kind(objects, "ServiceMonitor") if m["metadata"]["name"] == "fedkube"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selected = [s for s in of_kind(objects, "Service")
                if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in selected] == ["fedkube-metrics"]
    assert [p["name"] for p in selected[0]["spec"]["ports"]] == [monitor["spec"]["endpoints"][0]["port"]]
    assert selected[0]["spec"]["selector"].items() <= \
        one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"].items()


def job_objects() -> list[dict[str, Any]]:
    """What the operator creates for the digits example (Service, pods, ...), from its own render code."""
    from fedkube.plan import make_plan
    from fedkube.spec import parse_manifest
    from fedkube_operator.render import Owner, RenderConfig, render_aggregator_pod, render_job_objects

    manifest = yaml.safe_load((REPO / "examples" / "digits-fedavg.yaml").read_text())
    plan = make_plan(parse_manifest(manifest, check_entrypoint=False))
    owner, config = Owner("digits", "ml-team-a", "uid"), RenderConfig(image=DEFAULT_IMAGE)
    return [*render_job_objects(plan, owner, config), render_aggregator_pod(plan, owner, config)]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    exists = [e["key"] for e in selector.get("matchExpressions", []) if e["operator"] == "Exists"]
    assert len(exists) == len(selector.get("matchExpressions", [])), "only Exists expressions are checked here"
    return selector.get("matchLabels", {}).items() <= labels.items() and all(k in labels for k in exists)


@pytest.mark.parametrize("watch, namespace_selector", [
    ({}, {"any": True}),
    ({"allNamespaces": False, "namespaces": ["ml-team-a"]}, {"matchNames": ["ml-team-a"]}),
])
def test_job_service_monitor_scrapes_every_aggregator(watch: dict[str, Any], namespace_selector: dict[str, Any],
                                                      tmp_path: Path) -> None:
    objects = render({**CASES["service-monitor"], "watch": watch}, tmp_path)
    (monitor,) = [m for m in of_kind(objects, "ServiceMonitor") if m["metadata"]["name"] == "fedkube-jobs"]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["namespaceSelector"] == namespace_selector
    jobs = job_objects()
    selected = [o for o in jobs if o["kind"] == "Service" and selects(monitor["spec"]["selector"],
                                                                      o["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in selected] == ["digits-aggregator"]
    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in selected[0]["spec"]["ports"] if p["name"] == endpoint["port"]]
    (container,) = [o for o in jobs if o["kind"] == "Pod"][0]["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]} and endpoint["path"] == "/metrics"
    assert not [s for s in of_kind(objects, "Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]


def test_job_service_monitor_can_be_left_out(tmp_path: Path) -> None:
    objects = render({"metrics": {"serviceMonitor": {"enabled": True, "jobs": False}}}, tmp_path)
    assert [m["metadata"]["name"] for m in of_kind(objects, "ServiceMonitor")] == ["fedkube"]


def test_network_policy_isolates_job_pods() -> None:
    from fedkube_operator.names import LABEL_ROLE, ROLE_AGGREGATOR, ROLE_CLIENT

    objects = render_case("network-policy")
    policies = {p["spec"]["podSelector"]["matchLabels"][LABEL_ROLE]: p for p in of_kind(objects, "NetworkPolicy")}
    assert set(policies) == {ROLE_AGGREGATOR, ROLE_CLIENT}
    assert all(p["metadata"]["namespace"] == "ml-team-a" for p in policies.values())
    clients, aggregators = policies[ROLE_CLIENT]["spec"], policies[ROLE_AGGREGATOR]["spec"]
    assert clients["policyTypes"] == aggregators["policyTypes"] == ["Ingress", "Egress"]
    assert clients["ingress"] == []
    # Clients reach aggregators' gRPC port, DNS and their silos' object storage; nothing else.
    to_aggregator, dns, data = clients["egress"]
    assert data == {"to": [{"ipBlock": {"cidr": "10.30.0.0/16"}}, {"ipBlock": {"cidr": "192.0.2.10/32"}}],
                    "ports": [{"port": 443, "protocol": "TCP"}]}
    assert to_aggregator["to"] == [{"podSelector": {"matchLabels": {LABEL_ROLE: ROLE_AGGREGATOR}}}]
    assert to_aggregator["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert {p["port"] for p in dns["ports"]} == {53}
    # Aggregators: DNS and object storage out; gRPC from clients and status from the operator in.
    assert len(aggregators["egress"]) == 2 and aggregators["egress"][0] == dns
    assert aggregators["egress"][1] == {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                                        "ports": [{"port": 443, "protocol": "TCP"}, {"port": 9000, "protocol": "TCP"}]}
    from_clients, from_operator, from_monitoring = aggregators["ingress"]
    assert from_clients["from"] == [{"podSelector": {"matchLabels": {LABEL_ROLE: ROLE_CLIENT}}}]
    assert from_monitoring == {"from": CASES["network-policy"]["networkPolicy"]["metricsFrom"],
                               "ports": [{"port": "metrics", "protocol": "TCP"}]}
    operator_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert from_operator["from"][0]["podSelector"]["matchLabels"].items() <= operator_labels.items()
    # The named ports exist on the pods the operator renders.
    named = {p["port"] for rule in aggregators["ingress"] for p in rule["ports"]}
    (aggregator,) = [o for o in job_objects() if o["kind"] == "Pod"]
    assert named <= {p["name"] for p in aggregator["spec"]["containers"][0]["ports"]}


def test_notes_tell_how_to_apply_the_first_example() -> None:
    notes = run_helm("install", "fedkube", str(CHART), "--namespace", RELEASE_NAMESPACE, "--dry-run=client").stdout
    notes = notes[notes.index("NOTES:"):]
    assert "kubectl -n default apply -f examples/digits-fedavg.yaml" in notes
    assert (REPO / "examples" / "digits-fedavg.yaml").exists()
    assert "rollout status deployment/fedkube" in notes


def test_template_output_is_stable(tmp_path: Path) -> None:
    """Rendering is deterministic: upgrades show no spurious diffs."""
    assert template(CASES["everything"], tmp_path) == template(CASES["everything"], tmp_path)
