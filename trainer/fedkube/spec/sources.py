"""Per-partition data sources: which silo's data each client reads, and nothing else.

`spec.data.sources` maps partitions to a PersistentVolumeClaim, an S3 prefix or (fedkube run) a
local folder. `{partition}` in a location stands for the partition's number, so one entry can
serve a thousand silos. Each client is handed its own resolved entry only: the operator mounts
just that claim (and passes just that Secret) into its pod, and the local launcher writes each
client a manifest that names just its own folder or prefix.
"""

from __future__ import annotations

import copy
import dataclasses
import posixpath
import re
from dataclasses import replace
from typing import Any
from urllib.parse import urlparse

from fedkube.spec.errors import FieldError
from fedkube.spec.model import DataSourceSpec, JobSpec, camel

PLACEHOLDER = "{partition}"
KINDS = ("pvc", "objectStore", "path")
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A Kubernetes object name (DNS-1123 subdomain), checked with `{partition}` standing for a number.
OBJECT_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")


def _fill(value: str | None, partition: int) -> str | None:
    return None if value is None else value.replace(PLACEHOLDER, str(partition))


def resolve(entry: DataSourceSpec, partition: int) -> DataSourceSpec:
    """`entry` as it applies to one partition: placeholders filled in, naming that partition alone."""
    pvc, store = entry.pvc, entry.object_store
    return DataSourceSpec(
        partitions=(partition,),
        pvc=None if pvc is None else replace(pvc, claim_name=_fill(pvc.claim_name, partition),
                                             sub_path=_fill(pvc.sub_path, partition)),
        object_store=None if store is None else replace(store, uri=_fill(store.uri, partition),
                                                        secret_ref=_fill(store.secret_ref, partition)),
        path=_fill(entry.path, partition))


def source_for(spec: JobSpec, partition: int) -> DataSourceSpec | None:
    """The data source of `partition`, resolved; None when it loads through the partitioner."""
    for entry in spec.data.sources:
        if not entry.partitions or partition in entry.partitions:
            return resolve(entry, partition)
    return None


def data_uri(source: DataSourceSpec) -> str:
    """Where the client reads its data, as a store URI: the claim's mount path in the pod, the
    S3 prefix, or the local folder."""
    if source.pvc is not None:
        return f"file://{source.pvc.mount_path}"
    if source.object_store is not None:
        return source.object_store.uri
    assert source.path is not None
    return f"file://{source.path}"


def _kinds(entry: DataSourceSpec) -> list[str]:
    return [k for k, v in zip(KINDS, (entry.pvc, entry.object_store, entry.path), strict=True) if v is not None]


def _location_fields(entry: DataSourceSpec) -> dict[str, str | None]:
    """The fields that tell one partition's data from another's, by field path below the entry."""
    if entry.pvc is not None:
        return {"pvc.claimName": entry.pvc.claim_name, "pvc.subPath": entry.pvc.sub_path}
    if entry.object_store is not None:
        return {"objectStore.uri": entry.object_store.uri}
    return {"path": entry.path}


def source_rules(spec: JobSpec) -> list[FieldError]:
    """One kind of location per entry, and one location per partition (so no silo reads another's).

    Partition numbers that are out of range or named twice are checked with the overrides'.
    """
    errors = []
    sources = spec.data.sources
    for i, entry in enumerate(sources):
        base = f"spec.data.sources[{i}]"
        kinds = _kinds(entry)
        if len(kinds) != 1:
            found = f"sets {' and '.join(kinds)}" if kinds else "sets none"
            errors.append(FieldError(base, f"{found}; give exactly one of {', '.join(KINDS)}"))
            continue
        if not entry.partitions and len(sources) > 1:
            errors.append(FieldError(f"{base}.partitions", "absent means every partition, so this entry must be "
                                                           "the only one; list its partitions"))
        served = len(entry.partitions) if entry.partitions else spec.data.partitions
        fields = _location_fields(entry)
        if served > 1 and not any(PLACEHOLDER in (v or "") for v in fields.values()):
            errors.append(FieldError(f"{base}.{next(iter(fields))}", f"serves {served} partitions from one location; "
                                     f"put {PLACEHOLDER} in it so each partition reads only its own data"))
        if entry.object_store is not None:
            errors += _object_store_errors(base, entry)
        names = {"pvc.claimName": entry.pvc.claim_name if entry.pvc else None,
                 "objectStore.secretRef": entry.object_store.secret_ref if entry.object_store else None}
        errors += [FieldError(f"{base}.{field}", f"{name!r} is not a Kubernetes object name (lower-case letters, "
                                                 "digits, '-' and '.'; {partition} allowed)")
                   for field, name in names.items()
                   if name is not None and not OBJECT_NAME.fullmatch(name.replace(PLACEHOLDER, "0"))]
    return errors or _shared_location_errors(spec)


def _location_key(source: DataSourceSpec) -> str:
    """A location as a string that starts with another location's key exactly when it lies inside it."""
    if source.pvc is not None:
        inside = posixpath.normpath(source.pvc.sub_path or ".").strip("./")
        return f"pvc://{source.pvc.claim_name}/{inside}".rstrip("/") + "/"
    if source.object_store is not None:
        uri = urlparse(source.object_store.uri)
        return f"s3://{uri.netloc}/{uri.path.strip('/')}".rstrip("/") + "/"
    assert source.path is not None
    return "file://" + posixpath.normpath(source.path).rstrip("/") + "/"


def _shared_location_errors(spec: JobSpec) -> list[FieldError]:
    """No partition's location may be another's or lie inside it: a folder's reader sees its subfolders.

    In sorted order the locations a location holds follow it directly, so one pass with a stack of
    the enclosing locations finds every case in O(n log n), even with 10,000 partitions.
    """
    entry_of = {p: i for i, e in enumerate(spec.data.sources) for p in (e.partitions or range(spec.data.partitions))}
    located = sorted((_location_key(source), p) for p in sorted(entry_of)
                     if (source := source_for(spec, p)) is not None)
    errors, enclosing = [], []  # enclosing: (key, partition) of the locations the current one may lie in
    for key, q in located:
        while enclosing and not key.startswith(enclosing[-1][0]):
            enclosing.pop()
        if enclosing:
            outer, p = enclosing[-1]
            errors.append(FieldError(f"spec.data.sources[{entry_of[q]}]",
                                     f"partition {q}'s data ({key.rstrip('/')}) is partition {p}'s or lies inside "
                                     f"it ({outer.rstrip('/')}), so one silo could read the other's"))
        enclosing.append((key, q))
    return errors


def _object_store_errors(base: str, entry: DataSourceSpec) -> list[FieldError]:
    store = entry.object_store
    assert store is not None
    errors = []
    bucket = urlparse(store.uri).netloc
    if PLACEHOLDER not in bucket and not S3_BUCKET.fullmatch(bucket):
        errors.append(FieldError(f"{base}.objectStore.uri", f"{bucket!r} is not an S3 bucket name (3 to 63 "
                                                            "lower-case letters, digits, dots and hyphens)"))
    if store.endpoint_url and urlparse(store.endpoint_url).scheme not in ("http", "https"):
        errors.append(FieldError(f"{base}.objectStore.endpointUrl",
                                 f"{store.endpoint_url!r} is not an http:// or https:// URL"))
    return errors


def local_errors(spec: JobSpec) -> list[FieldError]:
    """What `fedkube run` cannot read: a PersistentVolumeClaim exists only in a cluster."""
    return [FieldError(f"spec.data.sources[{i}].pvc", "a PersistentVolumeClaim needs a cluster; fedkube run reads "
                                                      "a local path or an objectStore prefix")
            for i, entry in enumerate(spec.data.sources) if entry.pvc is not None]


def cluster_errors(spec: JobSpec) -> list[FieldError]:
    """What a cluster cannot read: a folder on the machine that runs `fedkube run`."""
    return [FieldError(f"spec.data.sources[{i}].path", "a local folder only works with fedkube run; in a cluster "
                                                       "use pvc or objectStore")
            for i, entry in enumerate(spec.data.sources) if entry.path is not None]


def _document(value: Any) -> Any:
    """A typed value back as manifest YAML: camelCase keys, unset fields left out."""
    if dataclasses.is_dataclass(value):
        return {camel(f.name): _document(v) for f in dataclasses.fields(value)
                if (v := getattr(value, f.name)) is not None}
    if isinstance(value, tuple):
        return [_document(v) for v in value]
    return value


def client_manifest(manifest: dict[str, Any], spec: JobSpec, partition: int) -> dict[str, Any]:
    """The manifest one client process reads: the job's, naming its own data source and no other."""
    doc = copy.deepcopy(manifest)
    source = source_for(spec, partition)
    doc["spec"]["data"]["sources"] = [] if source is None else [_document(source)]
    return doc
