"""Kubernetes RBAC, evaluated over rendered manifests: which requests a ServiceAccount may make.

Enough of the RBAC authorizer for the chart's tests: ClusterRoles bound cluster-wide, Roles (and
ClusterRoles) bound in one namespace, and rules matched on API group, resource (with subresource),
verb and resourceNames. Wildcards are not interpreted, since the chart must not use them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Access:
    """One API request, as the authorizer sees it."""

    namespace: str | None  # None: cluster-scoped, or across all namespaces
    group: str
    resource: str  # "pods", or "federatedjobs/status" for a subresource
    verb: str
    name: str | None = None


@dataclass(frozen=True)
class Grant:
    """One (group, resource, verb) a rule grants, where (namespace; None: everywhere) and to which names."""

    namespace: str | None
    group: str
    resource: str
    verb: str
    names: frozenset[str] | None = None

    def allows(self, access: Access) -> bool:
        return ((self.namespace is None or self.namespace == access.namespace)
                and (self.group, self.resource, self.verb) == (access.group, access.resource, access.verb)
                and (self.names is None or access.name in self.names))


def _grants_of(rules: Iterable[Mapping[str, Any]], namespace: str | None) -> list[Grant]:
    out = []
    for rule in rules:
        names = frozenset(rule["resourceNames"]) if rule.get("resourceNames") else None
        out += [Grant(namespace, group, resource, verb, names)
                for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]]
    return out


def grants(objects: list[Mapping[str, Any]], account: str, account_namespace: str) -> list[Grant]:
    """Everything the bindings among `objects` grant to the ServiceAccount `account_namespace/account`."""
    roles = {(o["kind"], o["metadata"].get("namespace") if o["kind"] == "Role" else None, o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    subject = {"kind": "ServiceAccount", "name": account, "namespace": account_namespace}
    out: list[Grant] = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding") or subject not in binding.get("subjects", []):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else None
        role = roles.get((ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} refers to a missing {ref}"
        out += _grants_of(role["rules"], scope)
    return out


def denied(granted: list[Grant], accesses: Iterable[Access]) -> list[Access]:
    """The requests no grant allows, each once."""
    return sorted({a for a in accesses if not any(g.allows(a) for g in granted)}, key=str)


def unused(granted: list[Grant], accesses: Iterable[Access]) -> list[Grant]:
    """The grants no request needed."""
    seen = list(accesses)
    return [g for g in granted if not any(g.allows(a) for a in seen)]
