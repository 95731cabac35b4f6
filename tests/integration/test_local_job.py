"""Whole jobs with real processes and real gRPC: training, checkpoints, drops, timeouts, bad updates."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest
from jobs import Job, job_doc, with_task

from fedkube.checkpoint import list_rounds, read_checkpoint
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import TensorSpec, data_envelopes, receive_tensors, spec_from_header
from fedkube.stores import open_store


@pytest.fixture
def jobs(tmp_path):
    started: list[Job] = []

    def make(doc, clients=None) -> Job:
        job = Job(doc, tmp_path / doc["metadata"]["name"])
        started.append(job)
        return job.start(clients)

    yield make
    for job in started:
        job.stop()


def test_four_clients_train_and_checkpoints_verify(jobs):
    doc = job_doc("four", partitions=4, rounds=3, min_available=4)
    doc["spec"]["checkpoint"] = {"keepLast": 2}
    launched = time.time()
    job = jobs(doc)
    assert job.wait_exit() == 0, job.aggregator_log()
    history = job.metrics()
    assert [h["round"] for h in history] == [1, 2, 3]
    ends = [h["ended"] for h in history]  # each round's end, in Unix seconds
    assert launched < ends[0] < ends[1] < ends[2] < time.time()
    assert all(h["status"] == "completed" and h["clients_reported"] == 4 for h in history)
    assert history[-1]["accuracy"] > history[0]["accuracy"] and history[-1]["accuracy"] > 0.8
    assert all(h["bytes_in"] > 0 and h["bytes_out"] > 0 for h in history)
    store = open_store(f"file://{job.run.run_dir}/checkpoints")
    assert list_rounds(store) == [2, 3]
    for number in (2, 3):
        checkpoint = read_checkpoint(store, number)  # verifies every object against its manifest
        assert checkpoint.round == number and [h["round"] for h in checkpoint.state["history"]] == list(
            range(1, number + 1))
    assert store.exists("final/weights.safetensors")
    status = job.final_status()
    assert status["phase"] == "Succeeded" and status["checkpoint"]["round"] == 3


def test_client_killed_mid_round_round_completes_with_quorum(jobs):
    # Five rounds: partition 3 may join after round 1 has started, and rounds must follow the killed one.
    doc = with_task(job_doc("killed", partitions=4, rounds=5, min_available=3, roundTimeoutSeconds=20),
                    "fixture_tasks:straggler", {"slowPartition": 3, "slowCalls": [2], "seconds": 120})
    job = jobs(doc)
    # Partition 3 sleeps in its second local training: wait until it has reported once and the
    # next round, which samples every live client, is under way.
    job.wait_for("partition 3 to be in its second round",
                 lambda s: sum(3 in h["participants"]["reported"] for h in s["history"]) == 1
                 and s["round"] == len(s["history"]) + 1 and s["clients"]["selected"] == 4
                 and s["clients"]["reported"] >= 1)
    job.kill_client(3)  # asleep in its second local training
    assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
    history = job.metrics()
    (killed_round,) = [h for h in history if 3 in h["participants"]["dropped"]]
    assert killed_round["status"] == "completed"
    assert (killed_round["clients_reported"], killed_round["participants"]["dropped"]) == (3, [3])
    after = [h for h in history if h["round"] > killed_round["round"]]
    assert after and all(h["clients_selected"] == 3 and h["status"] == "completed" for h in after)
    assert job.final_status()["clients"]["dropped"] == 1


def test_round_below_quorum_times_out_and_next_round_goes_on(jobs):
    # Deadlines leave a loaded machine time for ordinary rounds; only the straggler's sleep misses one.
    doc = with_task(job_doc("straggle", partitions=3, rounds=3, min_available=3, roundTimeoutSeconds=25),
                    "fixture_tasks:straggler", {"slowPartition": 2, "slowCalls": [2], "seconds": 45})
    job = jobs(doc)
    assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
    history = job.metrics()
    # The straggler's second round cannot meet the deadline: that round is abandoned without a model step.
    straggled = [h for h in history if h["participants"]["dropped"] == [2]]
    assert straggled and all(h["status"] == "abandoned" and h["accuracy"] is None for h in straggled)
    assert all(h["clients_reported"] == 2 for h in straggled)
    # The straggler came back for the next round, which went on and completed.
    assert history[-1]["status"] == "completed" and history[-1]["clients_reported"] == 3
    assert job.final_status()["clients"]["rejected_late"] >= 1  # its stale update was refused


def test_too_few_clients_left_fails_the_job_with_a_message(jobs):
    doc = with_task(job_doc("starved", partitions=3, rounds=4, min_available=3, roundTimeoutSeconds=25,
                            joinTimeoutSeconds=45),
                    "fixture_tasks:straggler", {"slowPartition": 1, "slowCalls": [2], "seconds": 120})
    doc["spec"]["checkpoint"] = {"everyRounds": 10}  # no checkpoint publishes the files before the quorum wait
    job = jobs(doc)
    job.wait_for("partition 1 to be in its second round",
                 lambda s: sum(1 in h["participants"]["reported"] for h in s["history"]) == 1
                 and s["round"] == len(s["history"]) + 1, timeout=240)
    job.kill_client(1)
    waiting = job.wait_for("the wait for a quorum", lambda s: s["clients"]["joined"] < 3 and len(s["history"]) == 2)
    assert [h["round"] for h in job.metrics()] == [1, 2]  # the files do not wait with the next round
    assert "round=1]: round 1/4 completed" in job.aggregator_log()  # written as round 2 began, named round 1
    assert waiting["phase"] == "Running"
    assert job.wait_exit(timeout=300) == 1
    status = job.final_status()
    assert status["phase"] == "Failed"
    assert "only 2 of the required 3 clients (spec.clients.minAvailable) are connected after 45s" in status["message"]


def test_twenty_million_parameters_travel_both_ways(jobs):
    doc = with_task(job_doc("big", partitions=1, rounds=1, min_available=1, batchSize=8,
                            optimizer={"name": "sgd", "lr": 0.01}),
                    "fixture_tasks:big", {"width": 4472})
    job = jobs(doc)
    assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
    (entry,) = job.metrics()
    model_bytes = (4472 * 4472 + 4472) * 4
    assert model_bytes > 80_000_000
    assert entry["bytes_out"] == model_bytes and entry["bytes_in"] == model_bytes
    assert entry["clients_reported"] == 1


class ScriptedClient:
    """A client driven by the test over real gRPC, sending whatever update the test scripts."""

    def __init__(self, channel: grpc.Channel, partition: int) -> None:
        self.partition = partition
        self.stub = pb_grpc.AggregatorStub(channel)
        self.session = self.stub.Join(pb.JoinRequest(partition=partition)).session

    def next_round(self) -> tuple[pb.RoundInfo, dict[str, np.ndarray]]:
        stream = self.stub.GetTask(pb.TaskRequest(partition=self.partition, session=self.session), timeout=60)
        info = next(stream).round
        return info, receive_tensors([spec_from_header(h) for h in info.tensors], (e.data for e in stream))

    def submit(self, info: pb.RoundInfo, update: dict[str, np.ndarray]) -> pb.SubmitReply:
        headers = [TensorSpec(n, str(a.dtype), tuple(a.shape)).header() for n, a in update.items()]

        def envelopes():
            yield pb.Envelope(update=pb.UpdateInfo(partition=self.partition, round=info.round, ticket=info.ticket,
                                                   num_examples=100, tensors=headers))
            yield from data_envelopes(update.values())

        return self.stub.SubmitUpdate(envelopes(), timeout=60)


def _wrong_shape(weights):
    name = next(iter(weights))
    return {**weights, name: np.zeros(weights[name].size + 1, np.float32)}


def _late_nan(weights):
    update = {n: np.zeros_like(a) for n, a in weights.items()}
    last = list(update)[-1]
    update[last].reshape(-1)[-1] = np.nan
    return update


def _inf(weights):
    update = {n: np.zeros_like(a) for n, a in weights.items()}
    next(iter(update.values())).reshape(-1)[0] = np.inf
    return update


def _wrong_dtype(weights):
    return {n: a.astype(np.float64) for n, a in weights.items()}


def test_bad_updates_are_rejected_counted_and_the_round_goes_on(jobs):
    cases = [(_wrong_shape, "wrong_shape"), (_late_nan, "non_finite"), (_inf, "non_finite"),
             (_wrong_dtype, "wrong_dtype")]
    job = jobs(job_doc("bad", partitions=4, rounds=len(cases) + 2, min_available=3), clients=[0, 1, 2])
    job.wait_for("three clients to join", lambda s: s["clients"]["joined"] == 3)
    bad = ScriptedClient(job.channel(3), partition=3)
    rounds = {}
    for make_update, reason in cases:
        info, weights = bad.next_round()
        reply = bad.submit(info, make_update(weights))
        assert not reply.accepted and reply.reason.startswith(reason), reply.reason
        rounds[info.round] = reason
    assert job.wait_exit() == 0, job.aggregator_log()
    history = {h["round"]: h for h in job.metrics()}
    assert all(h["status"] == "completed" and h["clients_reported"] == 3 for h in history.values())
    for number, reason in rounds.items():
        assert history[number]["rejected"] == {reason: 1} and history[number]["participants"]["rejected"] == [3]
    # The bad updates left no trace in the model: it still learns.
    assert history[len(history)]["accuracy"] > 0.8
    clients = job.final_status()["clients"]
    assert clients["rejected"] == 4
    assert (clients["rejected_wrong_shape"], clients["rejected_non_finite"], clients["rejected_wrong_dtype"]) == (
        1, 2, 1)
