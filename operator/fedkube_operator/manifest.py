"""The FederatedJob as the operator reads it: the user's document, validated, and what may change.

Admission and reconciliation share these rules, so a change refused at `kubectl apply` (when
the webhook is installed) is exactly the change the operator ignores and reports (when not).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from fedkube.spec import FederatedJob, FieldError, JobSpec, SpecError, parse_manifest
from fedkube.spec.schema import apply_defaults, openapi_schema
from fedkube.spec.sources import cluster_errors as source_cluster_errors

# The one spec field a started job may change (Kueue-style suspension).
MUTABLE_FIELDS = frozenset({"spec.scheduling.suspend"})


def document(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The user's manifest inside an API object: identity and spec, without server-side fields."""
    meta = obj.get("metadata") or {}
    doc: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                           "metadata": {k: meta[k] for k in ("name", "namespace") if k in meta}}
    if "spec" in obj:
        doc["spec"] = copy.deepcopy(obj["spec"])
    return doc


def parse(obj: Mapping[str, Any]) -> FederatedJob:
    """Validate an API object as `fedkube validate` would, minus importing the task's code.

    The operator's image carries no task code, so the entrypoint is checked by the pods.
    Raises SpecError naming every bad field.
    """
    job = parse_manifest(document(obj), check_entrypoint=False)
    errors = cluster_errors(job) + source_cluster_errors(job.spec) + data_mount_errors(job.spec)
    if errors:
        raise SpecError(errors)
    return job


def cluster_errors(job: FederatedJob) -> list[FieldError]:
    """What runs locally but cannot in a cluster: a CKKS key larger than a Secret may hold."""
    from fedkube.he.params import ckks_params, secret_context_bytes

    secure = job.spec.secure_aggregation
    if secure.mode != "ckks":
        return []
    size = secret_context_bytes(ckks_params(secure.ckks))
    if size <= SECRET_LIMIT_BYTES:
        return []
    return [FieldError("spec.secureAggregation.ckks", f"the job's secret context (up to {size / 1e6:.1f} MB) "
                                                      "exceeds the 1 MiB a Kubernetes Secret holds; use a smaller "
                                                      "polyModulusDegree or fewer coeffModBits")]


SECRET_LIMIT_BYTES = 1 << 20


def data_mount_errors(spec: JobSpec) -> list[FieldError]:
    from fedkube_operator.data import mount_path_errors
    from fedkube_operator.render import CKKS_DIR, MANIFEST_DIR, TERMINATION_LOG, TMP_DIR, TRANSPORT_DIR

    return mount_path_errors(spec, (CKKS_DIR, MANIFEST_DIR, TERMINATION_LOG, TMP_DIR, TRANSPORT_DIR))


def _defaulted_spec(spec: Any) -> Any:
    spec_schema = openapi_schema()["properties"]["spec"]
    return apply_defaults(copy.deepcopy(spec), spec_schema) if isinstance(spec, dict) else spec


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            _diff(old.get(key), new.get(key), f"{path}.{key}", out)
    elif old != new:
        out.append(path)


def changed_fields(old_spec: Any, new_spec: Any) -> list[str]:
    """Field paths that differ between two specs once defaults are filled in, sorted."""
    out: list[str] = []
    _diff(_defaulted_spec(old_spec), _defaulted_spec(new_spec), "spec", out)
    return out


def refused_changes(old_spec: Any, new_spec: Any) -> list[str]:
    """Changed field paths that a started job does not accept."""
    if old_spec == new_spec:  # every pass of every job asks: answer the usual case without copying
        return []
    return [p for p in changed_fields(old_spec, new_spec) if p not in MUTABLE_FIELDS]


def refusal_message(paths: list[str]) -> str:
    return (f"the spec of a FederatedJob cannot change once created, except spec.scheduling.suspend; "
            f"changed: {', '.join(paths)}")


def admission_errors(operation: str, new: Mapping[str, Any] | None,
                     old: Mapping[str, Any] | None) -> list[FieldError]:
    """Why an admission request must be refused; empty when it is allowed.

    CREATE: the manifest must validate. UPDATE: the spec may change only in its mutable
    fields, and a changed spec must validate; an update that leaves the spec alone (labels,
    annotations, finalizers) is always allowed, so objects stay deletable.
    """
    if new is None:
        return []
    if operation == "UPDATE" and old is not None:
        if old.get("spec") == new.get("spec"):
            return []
        refused = refused_changes(old.get("spec"), new.get("spec"))
        if refused:
            return [FieldError(refused[0], refusal_message(refused))]
    if operation not in ("CREATE", "UPDATE"):
        return []
    try:
        parse(new)
    except SpecError as exc:
        return list(exc.errors)
    return []


def admission_message(errors: list[FieldError]) -> str:
    return "invalid FederatedJob: " + "; ".join(str(e) for e in errors)
