"""manifest: what the admission webhook and the reconciler accept, as tables of manifests."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fedkube_operator.manifest import admission_errors, admission_message, changed_fields, document, refused_changes


def valid() -> dict[str, Any]:
    return {
        "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob",
        "metadata": {"name": "digits", "namespace": "default", "uid": "abc", "resourceVersion": "7",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 4},
                 "rounds": 3, "clients": {"minAvailable": 2}},
        "status": {"phase": "Running", "round": 2},
    }


def edit(path: str, value: Any) -> dict[str, Any]:
    """A valid manifest with `path` (dotted; `-` deletes) set to `value`."""
    doc = valid()
    *parents, leaf = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value == "-":
        del node[leaf]
    else:
        node[leaf] = value
    return doc


# (name, manifest, the field path the error must name)
INVALID = [
    ("rounds below minimum", edit("spec.rounds", 0), "spec.rounds"),
    ("rounds not an integer", edit("spec.rounds", "ten"), "spec.rounds"),
    ("missing task", edit("spec.task", "-"), "spec.task"),
    ("bad entrypoint", edit("spec.task.entrypoint", "no-colon"), "spec.task.entrypoint"),
    ("quorum above partitions", edit("spec.clients.minAvailable", 9), "spec.clients.minAvailable"),
    ("unknown strategy", edit("spec.strategy", {"name": "fedmagic"}), "spec.strategy.name"),
    ("unknown field", edit("spec.roundz", 3), "spec.roundz"),
    ("fraction above one", edit("spec.clients.fraction", 1.5), "spec.clients.fraction"),
    ("override names a missing partition", edit("spec.template", {"overrides": [{"partitions": [7]}]}),
     "spec.template.overrides[0].partitions[0]"),
    ("bad partitioner", edit("spec.data.partitioner", {"kind": "zipf"}), "spec.data.partitioner.kind"),
    ("negative backoff limit", edit("spec.backoffLimit", -1), "spec.backoffLimit"),
    ("name too long", edit("metadata.name", "x" * 41), "metadata.name"),
    ("uppercase name", edit("metadata.name", "Digits"), "metadata.name"),
    ("checkpoint uri scheme", edit("spec.checkpoint", {"uri": "gs://bucket"}), "spec.checkpoint.uri"),
    ("zero partitions", edit("spec.data.partitions", 0), "spec.data.partitions"),
]


@pytest.mark.parametrize("name, manifest, field", INVALID, ids=[row[0] for row in INVALID])
def test_invalid_manifests_are_refused_on_create_naming_the_field(name: str, manifest: dict[str, Any],
                                                                   field: str) -> None:
    errors = admission_errors("CREATE", manifest, None)
    assert errors, name
    assert field in [e.path for e in errors], f"{name}: {errors}"
    assert field in admission_message(errors)


def test_a_valid_manifest_with_server_fields_is_allowed() -> None:
    assert admission_errors("CREATE", valid(), None) == []


@pytest.mark.parametrize("name, change, allowed, refused_field", [
    ("metadata only", lambda d: d["metadata"].setdefault("labels", {}).update(team="a"), True, None),
    ("status only", lambda d: d["status"].update(round=3), True, None),
    ("suspend", lambda d: d["spec"].setdefault("scheduling", {}).update(suspend=True), True, None),
    ("rounds", lambda d: d["spec"].update(rounds=10), False, "spec.rounds"),
    ("client template", lambda d: d["spec"].update(template={"client": {"image": "x"}}), False,
     "spec.template.client.image"),
    ("an explicit default is no change", lambda d: d["spec"].update(backoffLimit=3), True, None),
])
def test_updates_may_change_only_suspend(name: str, change: Any, allowed: bool, refused_field: str | None) -> None:
    old, new = valid(), valid()
    change(new)
    errors = admission_errors("UPDATE", new, old)
    assert (errors == []) is allowed, f"{name}: {errors}"
    if refused_field:
        assert errors[0].path == refused_field
        assert "cannot change once created, except spec.scheduling.suspend" in errors[0].message


def test_an_update_leaving_an_invalid_spec_alone_is_allowed_so_it_can_be_deleted() -> None:
    old = edit("spec.rounds", 0)
    new = copy.deepcopy(old)
    new["metadata"]["finalizers"] = []
    assert admission_errors("UPDATE", new, old) == []


def test_changed_fields_compare_with_defaults_filled() -> None:
    old = valid()["spec"]
    new = {**old, "rounds": 4, "scheduling": {"suspend": True}, "seed": 0}
    assert changed_fields(old, new) == ["spec.rounds", "spec.scheduling.suspend"]
    assert refused_changes(old, new) == ["spec.rounds"]


def test_document_keeps_identity_and_spec_only() -> None:
    assert document(valid()) == {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob",
                                 "metadata": {"name": "digits", "namespace": "default"}, "spec": valid()["spec"]}
