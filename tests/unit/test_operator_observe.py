"""observe: pods and aggregator status documents parsed into views, tolerant of missing fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from fedkube_operator.names import AGGREGATOR, Slot
from fedkube_operator.observe import AggregatorReport, pod_view


def pod(labels: dict[str, str], status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "labels": labels, "creationTimestamp": "2030-01-01T00:00:00Z",
                         "ownerReferences": [{"uid": "job-uid", "controller": True}], **meta},
            "status": status or {}}


CLIENT = {"fedkube.io/job": "j", "fedkube.io/role": "client", "fedkube.io/partition": "3", "fedkube.io/attempt": "2"}


@pytest.mark.parametrize("name, body, expected", [
    ("not ours", pod({"app": "x"}), None),
    ("client without a partition", pod({"fedkube.io/role": "client"}), None),
    ("fresh client", pod(CLIENT), {"slot": Slot(3), "attempt": 2, "phase": "Pending", "owner_uid": "job-uid",
                                   "active": True}),
    ("aggregator running", pod({"fedkube.io/role": "aggregator"}, {
        "phase": "Running", "podIP": "10.1.2.3",
        "containerStatuses": [{"ready": True, "state": {"running": {}}}]}),
     {"slot": AGGREGATOR, "attempt": 0, "ip": "10.1.2.3", "ready": True}),
    ("unschedulable", pod(CLIENT, {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
         "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
     {"waiting": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}),
    ("image pull", pod(CLIENT, {"phase": "Pending", "containerStatuses": [
        {"state": {"waiting": {"reason": "ImagePullBackOff", "message": "not found"}}}]}),
     {"waiting": "ImagePullBackOff: not found"}),
    ("killed", pod(CLIENT, {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {
        "exitCode": 137, "reason": "Error", "finishedAt": "2030-01-01T00:01:00Z", "message": "a\nlast line"}}}]}),
     {"exit_code": 137, "finished": datetime(2030, 1, 1, 0, 1, tzinfo=UTC), "active": False,
      "describe": "exit code 137 (Error): last line"}),
    ("evicted", pod(CLIENT, {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}),
     {"reason": "Evicted", "describe": "no exit code (Evicted): low on memory"}),
    ("being deleted", pod(CLIENT, {"phase": "Running"}, deletionTimestamp="2030-01-01T00:02:00Z"),
     {"deleting": True, "active": False}),
])
def test_pod_view(name: str, body: dict[str, Any], expected: dict[str, Any] | None) -> None:
    view = pod_view(body)
    if expected is None:
        assert view is None, name
        return
    assert view is not None, name
    for key, value in expected.items():
        actual = view.describe_exit() if key == "describe" else getattr(view, key)
        assert actual == value, f"{name}: {key}"


DOC = {"job": "j", "phase": "Running", "round": 3, "rounds": 5,
       "clients": {"joined": 4, "reported": 2, "dropped": 1, "rejected": 0},
       "metrics": {"accuracy": 0.9, "loss": 0.3}, "checkpoint": {"uri": "file:///c/round-2", "round": 2},
       "message": "", "history": [{"round": 1, "accuracy": 0.5, "loss": 1.0, "clients_reported": 4,
                                   "clients_dropped": 0, "seconds": 2.0, "status": "completed"},
                                  {"round": 2, "accuracy": 0.9, "loss": 0.3, "clients_reported": 3,
                                   "clients_dropped": 1, "seconds": 2.5, "status": "abandoned"}]}


@pytest.mark.parametrize("name, doc, expected", [
    ("full document", DOC, {"round": 3, "completed_round": 2, "joined": 4, "dropped": 1, "accuracy": 0.9,
                            "checkpoint": {"uri": "file:///c/round-2", "round": 2}}),
    ("no history, running", {"phase": "Running", "round": 3}, {"completed_round": 2, "accuracy": None}),
    ("no history, finished", {"phase": "Succeeded", "round": 5}, {"completed_round": 5}),
    ("unknown phase", {"phase": "Exploded"}, None),
    ("not a mapping", ["Running"], None),
    ("wrong types are ignored", {"phase": "Pending", "round": "3", "clients": [], "metrics": {"accuracy": "high"}},
     {"round": 0, "joined": 0, "accuracy": None}),
])
def test_report_parse(name: str, doc: Any, expected: dict[str, Any] | None) -> None:
    report = AggregatorReport.parse(doc)
    if expected is None:
        assert report is None, name
        return
    assert report is not None, name
    for key, value in expected.items():
        assert getattr(report, key) == value, f"{name}: {key}"


def test_history_records_describe_themselves() -> None:
    report = AggregatorReport.parse(DOC)
    assert report is not None
    assert report.history[1].describe(5) == ("round 2/5 abandoned, accuracy 0.9000, loss 0.3000, "
                                             "3 clients reported, 1 dropped, in 2.5s")


def test_report_from_text() -> None:
    assert AggregatorReport.parse_text(json.dumps(DOC)) == AggregatorReport.parse(DOC)
    assert AggregatorReport.parse_text("Traceback (most recent call last):") is None
