"""SecAgg+ settings: what is refused (with the field that is wrong), what is accepted and defaulted."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fedkube.plan import make_plan
from fedkube.secure import default_neighbours, neighbourhood
from fedkube.spec import SpecError, parse_manifest
from fedkube.spec.rules import secagg_threshold

BASE = {
    "apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "s"},
    "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 8}, "rounds": 3,
             "clients": {"minAvailable": 6}},
}


def doc(secure: dict[str, Any], **spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["spec"]["secureAggregation"] = secure
    out["spec"].update(spec)
    return out


@pytest.mark.parametrize("name, manifest, field, message", [
    ("threshold above minAvailable", doc({"mode": "secagg+", "threshold": 7}),
     "spec.secureAggregation.threshold", "exceeds spec.clients.minAvailable (6)"),
    ("threshold below a majority of the share holders", doc({"mode": "secagg+", "threshold": 3}),
     "spec.secureAggregation.threshold", "below the safe minimum 4"),
    ("threshold below a majority on the complete graph", doc({"mode": "secagg+", "threshold": 4, "neighbours": 7}),
     "spec.secureAggregation.threshold", "below the safe minimum 5"),
    ("threshold above the neighbourhood", doc({"mode": "secagg+", "threshold": 5, "neighbours": 4}),
     "spec.secureAggregation.threshold", "exceeds the 4 neighbours each client has"),
    ("a ring that could overflow", doc({"mode": "secagg+", "bits": 24}),
     "spec.secureAggregation.bits", "at least 28"),
    ("median under secure aggregation", doc({"mode": "secagg+"}, strategy={"name": "median"}),
     "spec.strategy.name", "secure aggregation"),
    ("krum under secure aggregation", doc({"mode": "secagg+"}, strategy={"name": "krum", "byzantine": 1}),
     "spec.strategy.name", "secure aggregation"),
    ("trimmed mean under secure aggregation", doc({"mode": "secagg+"}, strategy={"name": "trimmedmean"}),
     "spec.strategy.name", "secure aggregation"),
    ("compression of masked vectors", doc({"mode": "secagg+"}, compression={"kind": "int8"}),
     "spec.compression.kind", "masked"),
    ("adaptive clipping under secure aggregation",
     doc({"mode": "secagg+"}, privacy={"noiseMultiplier": 1.0, "clippingNorm": 0.1, "adaptiveClipping": {}}),
     "spec.privacy.adaptiveClipping", "outside the masked sum"),
    ("distributed noise the ring would cut off",
     doc({"mode": "secagg+"}, privacy={"noiseMultiplier": 1.0, "clippingNorm": 1.0, "placement": "distributed"}),
     "spec.secureAggregation.clipRange", "at least 3.45"),
    ("secagg settings without secagg", doc({"mode": "none", "threshold": 4}),
     "spec.secureAggregation.threshold", "only used with secureAggregation.mode secagg+"),
])
def test_refused_with_the_field(name: str, manifest: dict, field: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_manifest(manifest, check_entrypoint=False)
    assert any(e.path == field and message in e.message for e in caught.value.errors), caught.value.errors


@pytest.mark.parametrize("secure, threshold", [
    ({"mode": "secagg+"}, 4),                                   # SecAgg+'s default of 8: 2 log2(8) = 6 neighbours
    ({"mode": "secagg+", "neighbours": 7}, 5),                  # complete graph of 8: 7 neighbours + itself
    ({"mode": "secagg+", "neighbours": 50}, 5),                 # more than there are: the complete graph
    ({"mode": "secagg+", "neighbours": 4}, 3),                  # SecAgg+: 4 neighbours
    ({"mode": "secagg+", "threshold": 6, "bits": 40, "clipRange": 0.5}, 6),
])
def test_accepted_and_defaulted(secure: dict, threshold: int) -> None:
    job = parse_manifest(doc(secure), check_entrypoint=False)
    assert secagg_threshold(job.spec) == threshold
    plan = make_plan(job)
    assert plan.aggregator.secure_aggregation.mode == "secagg+"
    assert all(c.secure_aggregation.mode == "secagg+" for c in plan.clients)


@pytest.mark.parametrize("clients, neighbours", [(2, 1), (4, 3), (7, 6), (8, 6), (16, 8), (17, 10), (1000, 20)])
def test_the_default_neighbourhood_is_logarithmic_once_that_is_sparser_than_complete(clients: int,
                                                                                      neighbours: int) -> None:
    assert default_neighbours(clients) == neighbours
    assert neighbourhood(None, clients) == neighbours and neighbourhood(3 * clients, clients) == clients - 1


def test_linear_strategies_compose_with_secagg() -> None:
    for strategy in ({"name": "fedavg"}, {"name": "fedprox", "mu": 0.1}, {"name": "fedadam"}):
        parse_manifest(doc({"mode": "secagg+"}, strategy=strategy), check_entrypoint=False)
