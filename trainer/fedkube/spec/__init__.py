"""Parse FederatedJob manifests once, into frozen typed objects, or fail naming every bad field.

The same function backs `fedkube validate`, the local launcher and the operator's admission
handler, so a manifest means the same thing everywhere.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from fedkube.spec.errors import FieldError, SpecError
from fedkube.spec.model import FederatedJob, JobSpec, from_dict
from fedkube.spec.rules import sample_size, semantic_errors
from fedkube.spec.schema import API_VERSION, KIND, apply_defaults, schema_errors

__all__ = ["FederatedJob", "FieldError", "JobSpec", "SpecError", "load_file", "parse_manifest",
           "parse_yaml", "sample_size"]

# Pod names are `<job>-client-<partition>`; a DNS-1123 label keeps them valid.
NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_LENGTH = 40


def _identity_errors(doc: Any) -> list[FieldError]:
    if not isinstance(doc, dict):
        return [FieldError("(document)", f"expected a mapping, got {type(doc).__name__}")]
    errors = []
    if doc.get("apiVersion") != API_VERSION:
        errors.append(FieldError("apiVersion", f"{doc.get('apiVersion')!r} is not {API_VERSION!r}"))
    if doc.get("kind") != KIND:
        errors.append(FieldError("kind", f"{doc.get('kind')!r} is not {KIND!r}"))
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str):
        errors.append(FieldError("metadata.name", "required field is missing"))
    elif not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        errors.append(FieldError(
            "metadata.name", f"{name!r} must be a DNS-1123 label of at most {MAX_NAME_LENGTH} characters"))
    return errors


def parse_manifest(doc: Any, check_entrypoint: bool = True, source: str = "") -> FederatedJob:
    """Validate one FederatedJob document (schema, then semantics) and return its typed form.

    `check_entrypoint` imports the task's module; the operator, whose image carries no task
    code, turns it off. Raises SpecError listing every problem with its field path.
    """
    errors = _identity_errors(doc)
    if errors:
        raise SpecError(errors, source)
    manifest = apply_defaults(copy.deepcopy(doc))
    errors = schema_errors(manifest)
    if errors:
        raise SpecError(errors, source)
    spec: JobSpec = from_dict(JobSpec, manifest["spec"])
    errors = semantic_errors(spec, check_entrypoint)
    if errors:
        raise SpecError(errors, source)
    meta = manifest["metadata"]
    return FederatedJob(meta["name"], meta.get("namespace", "default"), spec, manifest)


def parse_yaml(text: str, check_entrypoint: bool = True, source: str = "") -> list[FederatedJob]:
    """Every FederatedJob in a (multi-document) YAML text."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([FieldError("(yaml)", str(exc).replace("\n", " "))], source) from exc
    if not docs:
        raise SpecError([FieldError("(document)", "no YAML document found")], source)
    jobs, errors = [], []
    for i, doc in enumerate(docs):
        try:
            jobs.append(parse_manifest(doc, check_entrypoint, source))
        except SpecError as exc:
            where = f"document {i + 1}: " if len(docs) > 1 else ""
            errors += [FieldError(e.path, where + e.message) for e in exc.errors]
    if errors:
        raise SpecError(errors, source)
    return jobs


def load_file(path: str | Path, check_entrypoint: bool = True) -> list[FederatedJob]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([FieldError("(file)", exc.strerror or str(exc))], str(path)) from exc
    return parse_yaml(text, check_entrypoint, str(path))
