"""The restricted security settings of every fedkube pod, in one place.

The operator's pod renderer applies them to aggregator and client pods, the Helm chart to the
operator's own Deployment (through `charts/fedkube/files/security.yaml`, written from here by
`make sync-chart`), and the images run as the same numeric user. They meet the Pod Security
"restricted" profile: non-root, no privilege escalation, every capability dropped, seccomp
RuntimeDefault, read-only root filesystem.
"""

from __future__ import annotations

from typing import Any

import yaml

# Numeric, so the kubelet can check runAsNonRoot without reading the image's /etc/passwd.
RUN_AS_USER = 1000


def pod_security_context() -> dict[str, Any]:
    return {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER, "fsGroup": RUN_AS_USER,
            "seccompProfile": {"type": "RuntimeDefault"}}


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def chart_file() -> str:
    """The chart's copy, as YAML; a test keeps `charts/fedkube/files/security.yaml` equal to it."""
    header = "# Generated from operator/fedkube_operator/security.py by `make sync-chart`: do not edit.\n"
    return header + yaml.safe_dump({"podSecurityContext": pod_security_context(),
                                    "containerSecurityContext": container_security_context()}, sort_keys=True)


if __name__ == "__main__":
    print(chart_file(), end="")
