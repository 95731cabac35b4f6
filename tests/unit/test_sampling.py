"""Client sampling: how many, which ones, and the same ones again after a resume."""

from __future__ import annotations

import copy

import pytest

from fedkube.aggregator.coordinator import Coordinator
from fedkube.plan import make_plan
from fedkube.spec import parse_manifest

DOC = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "s"},
       "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 10}, "rounds": 50,
                "seed": 3, "clients": {"minAvailable": 2}}}


def coordinator(**clients) -> Coordinator:
    doc = copy.deepcopy(DOC)
    doc["spec"]["clients"].update(clients)
    c = Coordinator(make_plan(parse_manifest(doc, check_entrypoint=False)).aggregator)
    c.live = set(range(10))
    return c


@pytest.mark.parametrize("clients, size", [({"perRound": 4}, 4), ({"fraction": 0.25}, 3), ({}, 10)])
def test_each_round_samples_the_configured_number(clients, size):
    c = coordinator(**clients)
    rounds = [c.sample(r) for r in range(1, 51)]
    assert all(len(s) == size and len(set(s)) == size and set(s) <= c.live for s in rounds)
    assert set().union(*rounds) == c.live   # over many rounds every client gets a turn


def test_sampling_is_seeded_so_a_resumed_aggregator_picks_the_same_clients():
    first, resumed = coordinator(perRound=4), coordinator(perRound=4)
    assert [first.sample(r) for r in range(1, 20)] == [resumed.sample(r) for r in range(1, 20)]
    assert len({tuple(first.sample(r)) for r in range(1, 20)}) > 10   # and differs from round to round


def test_only_connected_clients_are_sampled():
    c = coordinator(perRound=4)
    c.live = {1, 5, 7}
    assert c.sample(1) == [1, 5, 7]


def test_poisson_sampling_includes_each_client_independently():
    c = coordinator(perRound=3, sampling="poisson")
    sizes = [len(c.sample(r)) for r in range(1, 401)]
    assert len(set(sizes)) > 3 and abs(sum(sizes) / len(sizes) - 3) < 0.3
