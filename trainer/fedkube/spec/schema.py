"""The FederatedJob schema from `crds/federatedjob.yaml`, applied the way the API server would.

The CRD is the one source of truth: this module reads its openAPIV3Schema, fills defaults
(as the API server's defaulting does) and validates with jsonschema. Unknown fields are
refused, as `kubectl apply --validate=strict` refuses them, instead of being silently pruned.
"""

from __future__ import annotations

import copy
import functools
from importlib import resources
from typing import Any

import jsonschema
import yaml

from fedkube.spec.errors import FieldError

GROUP = "fedkube.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "FederatedJob"


@functools.cache
def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as shipped in the package (a link to crds/)."""
    text = resources.files("fedkube").joinpath("schema/federatedjob.yaml").read_text()
    return yaml.safe_load(text)


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """The v1alpha1 openAPIV3Schema of the whole object."""
    (version,) = [v for v in crd()["spec"]["versions"] if v["name"] == VERSION]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Copy of `schema` where every object with known properties refuses unknown ones."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if not isinstance(node, dict):
            return
        if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            node.setdefault("additionalProperties", False)
        for key in ("properties",):
            for child in node.get(key, {}).values():
                walk(child)
        for key in ("items", "additionalProperties"):
            walk(node.get(key))

    walk(out)
    return out


@functools.cache
def _validator() -> jsonschema.Draft4Validator:
    # OpenAPI 3.0 (what Kubernetes speaks) uses boolean exclusiveMinimum, as draft 4 does.
    return jsonschema.Draft4Validator(_strict(openapi_schema()))


def apply_defaults(obj: Any, schema: dict[str, Any] | None = None) -> Any:
    """Fill `default`s from the schema into `obj` in place, recursing into present objects."""
    schema = openapi_schema() if schema is None else schema
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                apply_defaults(obj[name], sub)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            apply_defaults(item, schema["items"])
    return obj


def field_path(parts: Any) -> str:
    """`['spec', 'template', 'overrides', 0, 'partitions']` -> `spec.template.overrides[0].partitions`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _describe(error: jsonschema.ValidationError) -> FieldError:
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return FieldError(field_path([*path, missing]), "required field is missing")
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known))
        return FieldError(field_path([*path, extra[0]]), f"unknown field (known fields: {', '.join(known)})")
    if error.validator == "enum":
        allowed = ", ".join(repr(v) for v in error.validator_value)
        return FieldError(field_path(path), f"{error.instance!r} is not one of {allowed}")
    if error.validator == "type":
        return FieldError(field_path(path), f"{error.instance!r} is not of type {error.validator_value}")
    return FieldError(field_path(path), error.message)


def schema_errors(obj: dict[str, Any]) -> list[FieldError]:
    """Every schema violation of a (defaulted) FederatedJob object, sorted by field path."""
    errors = [_describe(e) for e in _validator().iter_errors(obj)]
    return sorted(errors, key=lambda e: e.path)
