"""Strategies, compression and stragglers in whole jobs: real aggregator and client processes over gRPC."""

from __future__ import annotations

import pytest
from jobs import Job, job_doc, with_task


@pytest.fixture
def run_job(tmp_path):
    started: list[Job] = []

    def run(doc, timeout: float = 600) -> Job:
        doc["spec"]["clients"]["joinTimeoutSeconds"] = 300  # a loaded machine can take a minute to start 8 clients
        job = Job(doc, tmp_path / doc["metadata"]["name"])
        started.append(job)
        job.start()
        assert job.wait_exit(timeout=timeout) == 0, job.aggregator_log()
        return job

    yield run
    for job in started:
        job.stop()


ROBUSTNESS = [
    # (strategy, its parameters, whether it should keep the model above 0.9)
    ("fedavg", {}, False),
    ("median", {}, True),
    ("trimmedmean", {"trimBeta": 0.25}, True),
    ("krum", {"byzantine": 2, "multiKrum": 3}, True),
]


@pytest.mark.parametrize("strategy, params, robust", ROBUSTNESS, ids=[r[0] for r in ROBUSTNESS])
def test_two_byzantine_clients_of_eight(run_job, strategy, params, robust):
    """Clients 0 and 1 send their honest update sign-flipped and scaled by 10."""
    doc = with_task(job_doc(f"byz-{strategy}", partitions=8, rounds=8, min_available=8),
                    "fedkube.tasks.byzantine:task",
                    {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "partitions": [0, 1],
                     "attack": "signflip", "scale": 10.0})
    doc["spec"]["strategy"] = {"name": strategy, **params}
    history = run_job(doc).metrics()
    accuracies = [h["accuracy"] for h in history]
    if robust:
        assert all(h["status"] == "completed" and h["clients_reported"] == 8 for h in history)
        assert accuracies[-1] >= 0.9, accuracies
    else:
        # The mean follows the attackers: the model degrades until its updates overflow and are refused.
        assert accuracies[-1] is None or accuracies[-1] < 0.9, (accuracies, [h["rejected"] for h in history])


def test_int8_cuts_bytes_fourfold_at_the_same_accuracy_and_topk_converges(run_job):
    results = {}
    for kind, extra in (("none", {}), ("int8", {}), ("topk", {"ratio": 0.1})):
        doc = job_doc(f"compress-{kind}", partitions=4, rounds=10, min_available=4)
        doc["spec"]["compression"] = {"kind": kind, **extra}
        job = run_job(doc)
        results[kind] = (job.metrics(), job.final_status())
    plain, int8, topk = (results[k][0] for k in ("none", "int8", "topk"))
    bytes_in = {k: sum(h["bytes_in"] for h in results[k][0]) for k in results}
    assert bytes_in["none"] / bytes_in["int8"] >= 3.5, bytes_in
    assert all(h["compression_ratio"] >= 3.5 for h in int8) and all(h["compression_ratio"] == 1 for h in plain)
    assert int8[-1]["accuracy"] >= plain[-1]["accuracy"] - 0.01, (plain[-1]["accuracy"], int8[-1]["accuracy"])
    # top-k keeps 10% of entries as (int32 index, float32 value) pairs: 5x less, and still learns.
    assert bytes_in["none"] / bytes_in["topk"] >= 4.5, bytes_in
    assert topk[-1]["accuracy"] >= 0.9, [h["accuracy"] for h in topk]
    status = results["int8"][1]["metrics"]
    assert status["bytes_in"] == bytes_in["int8"] and status["round_bytes_in"] == int8[-1]["bytes_in"]
    assert status["compression_ratio"] >= 3.5


def test_straggler_past_the_deadline_is_dropped_and_counted_while_the_round_completes(tmp_path):
    """Partition 2 sleeps 45 s in its second local training; deadline 20 s, quorum 3 of 4.

    By its second round every client has joined (one that missed round 1 is in round 2), so the three
    others answer and that round completes without it.
    """
    doc = with_task(job_doc("late", partitions=4, rounds=6, min_available=3, roundTimeoutSeconds=20,
                            localEpochs=1),
                    "fixture_tasks:straggler", {"slowPartition": 2, "slowCalls": [2], "seconds": 45})
    job = Job(doc, tmp_path / "late").start()
    try:
        assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
        history = job.metrics()
        late = [h for h in history if 2 in h["participants"]["dropped"]]
        assert late and all(h["status"] == "completed" and h["clients_reported"] == 3 for h in late), history
        assert all(h["status"] == "completed" for h in history if h["round"] > late[0]["round"]), history
        status = job.final_status()
        assert status["clients"]["dropped"] == sum(h["clients_dropped"] for h in history) >= 1
        assert len(history) == 6 and status["phase"] == "Succeeded"
    finally:
        job.stop()
