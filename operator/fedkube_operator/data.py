"""A client pod's view of its own silo's data (spec.data.sources): pure, like the rest of rendering.

The pod of partition i mounts its own claim, read-only, and nothing else of any other partition;
with an S3 prefix it gets the credentials of its own Secret as env, by reference, so a Secret
scoped to one prefix keeps every other prefix out of reach. The task finds the data where the
manifest says (the mount path, or the prefix) through the Task interface.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from fedkube.spec.errors import FieldError
from fedkube.spec.model import DataSourceSpec, JobSpec

DATA_VOLUME = "data"
# Keys of a source's Secret that become the client's AWS_* variables; the token is optional.
CREDENTIAL_KEYS = (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False), ("AWS_SESSION_TOKEN", True))


@dataclass(frozen=True)
class DataAccess:
    """What a client container adds to reach its data."""

    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)
    env: list[dict[str, Any]] = field(default_factory=list)


def data_access(source: DataSourceSpec | None) -> DataAccess:
    """The volume, mount and env that give one client pod its own data source, and only that."""
    if source is None:
        return DataAccess()
    if source.pvc is not None:
        mount: dict[str, Any] = {"name": DATA_VOLUME, "mountPath": source.pvc.mount_path, "readOnly": True}
        if source.pvc.sub_path:
            mount["subPath"] = source.pvc.sub_path
        return DataAccess(
            volumes=[{"name": DATA_VOLUME,
                      "persistentVolumeClaim": {"claimName": source.pvc.claim_name, "readOnly": True}}],
            mounts=[mount])
    secret = source.object_store.secret_ref if source.object_store is not None else None
    if secret is None:
        return DataAccess()
    return DataAccess(env=[
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name,
                                                      **({"optional": True} if optional else {})}}}
        for name, optional in CREDENTIAL_KEYS])


def mount_path_errors(spec: JobSpec, taken: Iterable[str]) -> list[FieldError]:
    """A claim mounted over, inside or above a path the client pod already uses would break the pod."""
    errors = []
    for i, entry in enumerate(spec.data.sources):
        if entry.pvc is None:
            continue
        path = posixpath.normpath(entry.pvc.mount_path)
        clash = next((t for t in taken if path == "/" or posixpath.commonpath([path, t]) in (path, t)), None)
        if clash is not None:
            errors.append(FieldError(f"spec.data.sources[{i}].pvc.mountPath",
                                     f"{entry.pvc.mount_path!r} overlaps {clash!r}, which the client pod uses; "
                                     "choose a folder of its own, e.g. /data"))
    return errors
