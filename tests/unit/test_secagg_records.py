"""The masked records a SecAgg+ aggregator leaves in its store: which one a restart may finish."""

from __future__ import annotations

import io
import json

import numpy as np

from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.secagg import SecAggRounds
from fedkube.plan import make_plan
from fedkube.spec import parse_manifest
from fedkube.stores import open_store

DOC = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "r"},
       "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 4}, "rounds": 5,
                "clients": {"minAvailable": 4}, "secureAggregation": {"mode": "secagg+"}}}


def put_record(store, prefix: str, masked: np.ndarray | None, doc: dict | None) -> None:
    if masked is not None:
        store.put(f"secagg/{prefix}/masked-sum.npy", _npy(masked))
    if doc is not None:
        store.put(f"secagg/{prefix}/round.json", json.dumps(doc).encode())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_only_the_starting_rounds_complete_record_is_kept(tmp_path) -> None:
    store = open_store(f"file://{tmp_path}")
    plan = make_plan(parse_manifest(DOC, check_entrypoint=False)).aggregator
    rounds = SecAggRounds(plan, Coordinator(plan), store)
    total = np.arange(5, dtype=np.uint32)
    put_record(store, "round-000002-aa", total, {"round": 2})
    put_record(store, "round-000002-bb", total, None)     # cut off before its record: never complete
    put_record(store, "round-000003-cc", total, {"round": 3})  # a later round, masked over other weights
    put_record(store, "round-000001-dd", total, {"round": 1})  # an earlier one, unmasked before the crash

    keys, doc, loaded = rounds._load(2)

    assert keys == ["secagg/round-000002-aa/masked-sum.npy", "secagg/round-000002-aa/round.json"]
    assert doc == {"round": 2} and loaded.dtype == np.uint32 and loaded.tolist() == total.tolist()
    assert store.list("secagg/") == keys  # every other record is gone
    rounds._forget(keys)
    assert rounds._load(2) is None and store.list("secagg/") == []
