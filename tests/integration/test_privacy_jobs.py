"""Private jobs end to end, real processes and gRPC: DP-SGD still learns, the budget stops the job at
the right round, and a resumed job's epsilon goes on from its checkpoint. Every epsilon is checked
against dp-accounting called directly here."""

from __future__ import annotations

import math

import dp_accounting
import pytest
from dp_accounting.rdp import RdpAccountant
from jobs import Job, job_doc

from fedkube.checkpoint import list_rounds, read_checkpoint
from fedkube.spec.model import PartitionerSpec
from fedkube.stores import open_store
from fedkube.tasks.digits import task as digits

DELTA = 1e-5


def all_clients_epsilon(noise_multiplier: float, rounds: int) -> float:
    """Every client in every round, replace-one adjacency: a Gaussian of multiplier sigma/2 per round."""
    accountant = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier / 2), rounds)
    return accountant.get_epsilon(DELTA)


def private_doc(name: str, partitions: int, rounds: int, min_available: int, privacy: dict) -> dict:
    doc = job_doc(name, partitions=partitions, rounds=rounds, min_available=min_available, localEpochs=1,
                  joinTimeoutSeconds=240, roundTimeoutSeconds=240)  # clients import torch and opacus
    doc["spec"]["privacy"] = privacy
    return doc


@pytest.fixture
def run_job(tmp_path):
    started: list[Job] = []

    def run(doc: dict, resume: bool = False) -> Job:
        job = Job(doc, tmp_path / doc["metadata"]["name"], resume=resume)
        started.append(job)
        job.start()
        assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
        return job

    yield run
    for job in started:
        job.stop()


def test_budget_stops_the_job_before_the_round_that_would_exceed_it(run_job):
    target = float(all_clients_epsilon(1.0, 2) + all_clients_epsilon(1.0, 3)) / 2  # two rounds fit, not three
    # Distributed noise under SecAgg+: each client noises its clipped update before masking it.
    doc = private_doc("budget", partitions=3, rounds=6, min_available=3,
                      privacy={"noiseMultiplier": 1.0, "clippingNorm": 0.2, "targetEpsilon": target,
                               "placement": "distributed"})
    doc["spec"].update(checkpoint={"everyRounds": 4}, secureAggregation={"mode": "secagg+"})
    job = run_job(doc)
    status = job.final_status()
    assert status["phase"] == "Succeeded" and status["reason"] == "PrivacyBudgetExhausted"
    assert [h["round"] for h in job.metrics()] == [1, 2]
    assert status["privacy"]["epsilon"] <= target
    assert status["privacy"]["epsilon"] == pytest.approx(all_clients_epsilon(1.0, 2))
    assert status["privacy"]["budgetExhausted"] and "privacy budget exhausted" in status["message"]
    assert "train_loss" not in job.metrics()[-1]  # un-noised client metrics stay private
    store = open_store(f"file://{job.run.run_dir}/checkpoints")
    assert list_rounds(store) == [2]  # the last round is kept although everyRounds is 4
    assert read_checkpoint(store, 2).state["parts"]["privacy"]["events"][0]["count"] == 2
    assert store.exists("final/weights.safetensors")


def test_resumed_job_goes_on_from_the_checkpointed_epsilon(run_job):
    privacy = {"noiseMultiplier": 1.0, "clippingNorm": 0.5,
               "adaptiveClipping": {"targetQuantile": 0.5, "countNoiseMultiplier": 3.0}}
    first = run_job(private_doc("resumed", partitions=3, rounds=1, min_available=2, privacy=privacy))
    clip_after_one = first.final_status()["privacy"]["clippingNorm"]
    second = run_job(private_doc("resumed", partitions=3, rounds=2, min_available=2, privacy=privacy), resume=True)
    history = second.metrics()
    assert [h["round"] for h in history] == [1, 2]
    for entry in history:  # from zero, round 2 would read as one round's epsilon
        assert entry["epsilon"] == pytest.approx(all_clients_epsilon(1.0, entry["round"]))
    assert history[0]["clipping_norm"] == 0.5
    assert history[1]["clipping_norm"] == pytest.approx(clip_after_one) != 0.5  # adaptive state resumed too
    assert second.final_status()["privacy"]["rounds"] == 2


def test_dp_sgd_digits_still_learns_and_reports_each_clients_epsilon(run_job):
    doc = private_doc("dpsgd", partitions=3, rounds=4, min_available=3,
                      privacy={"level": "sample", "noiseMultiplier": 1.0, "clippingNorm": 1.0})
    doc["spec"]["clients"].update(localEpochs=2, optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9})
    job = run_job(doc)
    history, status = job.metrics(), job.final_status()
    assert history[-1]["accuracy"] >= 0.6 and history[-1]["accuracy"] > history[0]["accuracy"]
    task = digits({})
    for p in range(3):
        batches = math.ceil(len(task.load_partition(p, 3, PartitionerSpec())) / 32)
        accountant = RdpAccountant()
        accountant.compose(dp_accounting.PoissonSampledDpEvent(1 / batches, dp_accounting.GaussianDpEvent(1.0)),
                           2 * batches * 4)
        expected = accountant.get_epsilon(DELTA)
        assert status["privacy"]["clients"][str(p)] == pytest.approx(expected)
        assert history[-1]["client_epsilon"][str(p)] == pytest.approx(expected)  # as the client reported it
    assert status["privacy"]["epsilon"] == pytest.approx(max(status["privacy"]["clients"].values()))
