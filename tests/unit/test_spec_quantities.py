"""Resource quantities: the API server's grammar and rules, refused by `fedkube validate` with field paths."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
import yaml

from fedkube.cli import main
from fedkube.spec import parse_manifest
from fedkube.spec.quantities import parse_quantity, resource_errors

GOOD = {
    "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "gpus"},
    "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 4}, "rounds": 3,
             "clients": {"minAvailable": 2}},
}


def with_template(template: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(GOOD)
    doc["spec"]["template"] = template
    return doc


@pytest.mark.parametrize(("text", "amount"), [
    ("500m", "0.5"), ("2", "2"), (1, "1"), (0.25, "0.25"), ("1.5Gi", str(3 * 2 ** 29)), ("12G", "12e9"),
    ("1e3", "1000"), ("1E", "1e18"), (".5", "0.5"), ("+3", "3"), ("0", "0"), ("2Ki", "2048"),
])
def test_quantities_parse_like_the_api_server(text: Any, amount: str) -> None:
    assert parse_quantity(text) == Decimal(amount)


@pytest.mark.parametrize("text", ["lots", "12XB", "1 Gi", "", "1.2.3", "5 m", "Gi", True, None, [1]])
def test_what_the_api_server_cannot_parse_is_refused(text: Any) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


def test_a_valid_gpu_template_passes() -> None:
    resources = {"limits": {"nvidia.com/gpu": 2, "cpu": "4", "memory": "16Gi"},
                 "requests": {"nvidia.com/gpu": "2", "cpu": "3500m", "memory": "12G"}}
    assert resource_errors(resources, "r") == []
    parse_manifest(with_template({"client": {"resources": resources}}))


@pytest.mark.parametrize(("resources", "path", "words"), [
    ({"limits": {"nvidia.com/gpu": "lots"}}, "r.limits[nvidia.com/gpu]", "'lots' is not a quantity"),
    ({"limits": {"cpu": "-1"}}, "r.limits[cpu]", "must be greater than or equal to 0"),
    ({"requests": {"memory": "12XB"}}, "r.requests[memory]", "'12XB' is not a quantity"),
    ({"limits": {"nvidia.com/gpu": 0.5}}, "r.limits[nvidia.com/gpu]", "whole units"),
    ({"limits": {"gpu": 1}}, "r.limits[gpu]", "unknown resource 'gpu'"),
    ({"limits": {"cpu": "1"}, "requests": {"cpu": "2"}}, "r.requests[cpu]", "less than or equal to the cpu limit"),
    ({"limits": {"nvidia.com/gpu": 2}, "requests": {"nvidia.com/gpu": 1}}, "r.requests[nvidia.com/gpu]",
     "cannot be overcommitted"),
    ({"limit": {"cpu": "1"}}, "r.limit", "unknown field"),
    ({"limits": ["cpu"]}, "r.limits", "must map resource names to quantities"),
])
def test_invalid_resources_are_refused_naming_the_field(resources: dict[str, Any], path: str, words: str) -> None:
    errors = resource_errors(resources, "r")
    assert [e.path for e in errors] == [path] and words in errors[0].message, errors


def test_fedkube_validate_names_every_bad_quantity(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    doc = with_template({"aggregator": {"resources": {"requests": {"cpu": "-1"}}},
                         "client": {"resources": {"limits": {"nvidia.com/gpu": "lots"}}},
                         "overrides": [{"partitions": [1], "resources": {"limits": {"memory": "12XB"}}}]})
    manifest = tmp_path / "job.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    assert main(["validate", str(manifest)]) == 1
    err = capsys.readouterr().err
    for path in ("spec.template.aggregator.resources.requests[cpu]: ",
                 "spec.template.client.resources.limits[nvidia.com/gpu]: ",
                 "spec.template.overrides[0].resources.limits[memory]: "):
        assert path in err, err
