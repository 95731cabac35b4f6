"""The Pod Security Standards' "restricted" profile (Kubernetes 1.30+), checked field by field.

Each check follows one control of https://kubernetes.io/docs/concepts/security/pod-security-standards/
(baseline's controls included, since restricted builds on them) and returns what violates it, so a
test failure names the field. Used on the chart's operator Deployment and on the pods the
operator renders for jobs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

ALLOWED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                        "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for i, container in enumerate(spec.get(field) or []):
            yield f"spec.{field}[{i}]", container


def violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Every field of a pod spec that breaks the restricted profile; empty when it complies."""
    out: list[str] = []
    pod_sc = pod_spec.get("securityContext") or {}
    # Baseline: host namespaces, host ports, hostPath, privileged, capabilities, /proc, sysctls, SELinux.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            out.append(f"spec.{field} must be unset or false")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("spec.securityContext.windowsOptions.hostProcess must be unset or false")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"spec.securityContext.sysctls: {sysctl.get('name')} is not a safe sysctl")
    if (pod_sc.get("seLinuxOptions") or {}).get("type", "") not in ALLOWED_SELINUX_TYPES:
        out.append("spec.securityContext.seLinuxOptions.type is not allowed")
    for option in ("user", "role"):
        if (pod_sc.get("seLinuxOptions") or {}).get(option):
            out.append(f"spec.securityContext.seLinuxOptions.{option} must be unset")
    if (pod_sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
        out.append("spec.securityContext.appArmorProfile.type must be RuntimeDefault or Localhost")
    # Restricted: volume types, non-root, seccomp.
    for i, volume in enumerate(pod_spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUME_TYPES:
            out.append(f"spec.volumes[{i}] ({volume.get('name')}): type {sorted(kinds)} is not allowed")
    if pod_sc.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser must not be 0")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        out.append("spec.securityContext.seccompProfile.type must be RuntimeDefault or Localhost")

    containers = list(_containers(pod_spec))
    if not containers:
        out.append("spec.containers is empty")
    for path, container in containers:
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{path}.securityContext.privileged must be unset or false")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"{path}.securityContext.windowsOptions.hostProcess must be unset or false")
        for j, port in enumerate(container.get("ports") or []):
            if port.get("hostPort"):
                out.append(f"{path}.ports[{j}].hostPort must be unset or 0")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{path}.securityContext.procMount must be Default")
        if (sc.get("seLinuxOptions") or {}).get("type", "") not in ALLOWED_SELINUX_TYPES:
            out.append(f"{path}.securityContext.seLinuxOptions.type is not allowed")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            out.append(f"{path}.securityContext.appArmorProfile.type must be RuntimeDefault or Localhost")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{path}.securityContext.allowPrivilegeEscalation must be false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            out.append(f"{path}.securityContext.capabilities.drop must include ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{path}.securityContext.capabilities.add may only hold NET_BIND_SERVICE")
        run_as_non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            out.append(f"{path}.securityContext.runAsNonRoot must be true (here or in the pod's securityContext)")
        if sc.get("runAsUser") == 0:
            out.append(f"{path}.securityContext.runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{path}.securityContext.seccompProfile.type must be RuntimeDefault or Localhost "
                       "(here or in the pod's securityContext)")
    return out
