"""Resource quantities (`cpu: 500m`, `memory: 12Gi`, `nvidia.com/gpu: 1`) checked as the API server does.

A quantity the API server would refuse must be refused when the manifest is validated (`fedkube
validate`, the admission webhook), naming the field: otherwise the job is accepted and only its
pods are refused later. Same grammar as Kubernetes' resource.Quantity; same rules as a container's
resources: no negative amounts, requests no larger than limits, and extended resources (a name
with a domain, such as nvidia.com/gpu) in whole units, never overcommitted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from fedkube.spec.errors import FieldError
from fedkube.spec.model import JobSpec

_QUANTITY = re.compile(r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
                       r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[mkMGTPE]|[eE][+-]?(?:\d+(?:\.\d*)?|\.\d+))?")
_MULTIPLIERS = {"": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
                "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15, "E": Decimal(10) ** 18,
                **{s: Decimal(1024) ** (i + 1) for i, s in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))}}
STANDARD = frozenset({"cpu", "memory", "ephemeral-storage"})
SECTIONS = ("limits", "requests")


def parse_quantity(value: Any) -> Decimal:
    """The amount a quantity stands for; ValueError for anything the API server would not parse."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("must be a quantity such as 500m, 2, 1.5Gi or 12G")
    match = _QUANTITY.fullmatch(value if isinstance(value, str) else repr(value))
    if match is None:
        raise ValueError(f"{value!r} is not a quantity: use a number with an optional suffix "
                         "(m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei), such as 500m, 2, 1.5Gi or 12G")
    suffix = match["suffix"] or ""
    number = Decimal(match["number"])
    if suffix[:1] in ("e", "E") and suffix not in _MULTIPLIERS:
        return number * Decimal(10) ** Decimal(suffix[1:])
    return number * _MULTIPLIERS[suffix]


def _extended(name: str) -> bool:
    return "/" in name and not name.startswith("kubernetes.io/")


def _name_error(name: str) -> str | None:
    if name in STANDARD or name.startswith("hugepages-") or _extended(name):
        return None
    return (f"unknown resource {name!r}: use cpu, memory, ephemeral-storage, hugepages-<size>, or an "
            "extended resource with a domain, such as nvidia.com/gpu")


def resource_errors(resources: Any, path: str) -> list[FieldError]:
    """Problems with one container's `resources` (limits, requests), each naming its field."""
    if resources is None:
        return []
    if not isinstance(resources, Mapping):
        return [FieldError(path, "must be a mapping with limits and/or requests")]
    errors = [FieldError(f"{path}.{key}", "unknown field: a container's resources hold limits, requests "
                                          "and claims") for key in resources if key not in (*SECTIONS, "claims")]
    amounts: dict[str, dict[str, Decimal]] = {}
    for section in SECTIONS:
        entries = resources.get(section) or {}
        if not isinstance(entries, Mapping):
            errors.append(FieldError(f"{path}.{section}", "must map resource names to quantities"))
            continue
        amounts[section] = {}
        for name, value in entries.items():
            field = f"{path}.{section}[{name}]"
            problem = _name_error(str(name))
            try:
                amount = parse_quantity(value)
            except ValueError as exc:
                problem = problem or str(exc)
                amount = Decimal(0)
            if problem is None and amount < 0:
                problem = f"{value!r}: must be greater than or equal to 0"
            if problem is None and _extended(str(name)) and amount != amount.to_integral_value():
                problem = f"{value!r}: {name} is an extended resource, so it comes in whole units"
            if problem is not None:
                errors.append(FieldError(field, problem))
            else:
                amounts[section][str(name)] = amount
    errors += _request_errors(amounts.get("limits", {}), amounts.get("requests", {}), resources, path)
    return errors


def _request_errors(limits: dict[str, Decimal], requests: dict[str, Decimal], resources: Mapping[str, Any],
                    path: str) -> list[FieldError]:
    errors = []
    for name, requested in requests.items():
        field = f"{path}.requests[{name}]"
        limit = limits.get(name)
        shown = resources["requests"][name]
        if _extended(name) and limit != requested:
            errors.append(FieldError(field, f"{shown!r}: {name} cannot be overcommitted, so its request must "
                                            f"equal its limit ({path}.limits[{name}])"))
        elif limit is not None and requested > limit:
            errors.append(FieldError(field, f"{shown!r}: must be less than or equal to the {name} limit "
                                            f"({resources['limits'][name]!r})"))
    return errors


def resource_rules(spec: JobSpec) -> list[FieldError]:
    """Every resources block of the pod templates and the per-partition overrides."""
    template = spec.template
    blocks = [("spec.template.aggregator.resources", template.aggregator.resources),
              ("spec.template.client.resources", template.client.resources)]
    blocks += [(f"spec.template.overrides[{i}].resources", o.resources) for i, o in enumerate(template.overrides)]
    return [e for path, resources in blocks for e in resource_errors(resources, path)]
