"""SecAgg+ between real processes over mTLS: clients SIGKILLed mid-protocol, the sum still right."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from fixture_tasks import KnownUpdateTask
from jobs import HERE, Job, job_doc, with_task

from fedkube.checkpoint import list_rounds, read_checkpoint
from fedkube.launcher import Child, log_tail
from fedkube.secure import default_bits
from fedkube.secure.ring import Ring
from fedkube.secure.tls import client_identity
from fedkube.stores import open_store

ROOT = HERE.parents[1]


def start_victim(job: Job, partition: int, step: str, number: int | None = None) -> None:
    """The real client for `partition`, misbehaving at `step` (see secagg_victim.py; `number` defaults to
    every partition: the first round all are in)."""
    log = job.run.run_dir / "logs" / f"client-{partition}.log"
    args = ["client", "--manifest", str(job.manifest), "--partition", str(partition), "--aggregator", job.target,
            "--tls-dir", str(job.run.tls_dir(client_identity(partition)))]
    everyone = str(job.job.spec.data.partitions if number is None else number)
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, str(HERE / "secagg_victim.py"), step, everyone, *args],
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    job.run.children.append(Child(f"client-{partition}", process, log))


def run_with_victims(tmp_path, doc: dict, victims: dict[int, str], number: int | None = None) -> Job:
    """The victims first, joined before anyone else starts: clients forked from the launcher's warm
    interpreter are up in a moment, and could finish the job before a victim's fresh interpreter joins."""
    job = Job(doc, tmp_path / doc["metadata"]["name"])
    job.ports = job.run.start_aggregator(job.manifest)
    for p, step in victims.items():
        start_victim(job, p, step, number)
    deadline = time.monotonic() + 300
    for p in victims:
        log = job.run.run_dir / "logs" / f"client-{p}.log"
        while "joined job" not in log.read_text(errors="replace"):
            assert time.monotonic() < deadline, f"victim {p} never joined:\n{log_tail(log)}"
            time.sleep(0.05)
    for p in range(job.job.spec.data.partitions):
        if p not in victims:
            job.run.start_client(job.manifest, p, job.ports["port"])
    return job


def secagg_doc(name: str, partitions: int, rounds: int, min_available: int, threshold: int,
               seconds: float = 0.0) -> dict:
    doc = with_task(job_doc(name, partitions=partitions, rounds=rounds, min_available=min_available,
                            roundTimeoutSeconds=15, joinTimeoutSeconds=300),  # slow starts on a busy machine
                    "fixture_tasks:known_update", {"seconds": seconds})
    doc["spec"]["secureAggregation"] = {"mode": "secagg+", "threshold": threshold}
    return doc


def check_rounds_sum_right(job: Job, ring: Ring) -> list[dict]:
    """Every checkpointed round's model is the weighted FedAvg of exactly the clients it reports."""
    history = job.metrics()
    assert all(h["status"] == "completed" for h in history), history
    store = open_store(f"file://{job.run.run_dir}/checkpoints")
    for number in list_rounds(store):
        weights = read_checkpoint(store, number).weights
        who = history[number - 1]["participants"]["reported"]
        total = sum(KnownUpdateTask.examples(p) for p in who)
        for name, array in weights.items():
            expected = sum(KnownUpdateTask.examples(p) * KnownUpdateTask.target(p, array.size).numpy()
                           for p in who) / total
            # Exact up to rounding in the ring: half a step per coordinate of the mean.
            assert np.abs(array.reshape(-1) - expected).max() <= ring.step / 2 + 1e-6, (number, name)
    assert not store.list("secagg/")  # masked records are dropped once their round is unmasked
    return history


def assert_killed(job: Job, partitions: list[int]) -> None:
    for p in partitions:
        child = next(c for c in job.run.children if c.name == f"client-{p}")
        assert child.process.returncode == -9, log_tail(child.log)


def test_two_of_eight_killed_after_sending_masked_vectors_the_round_sums_right(tmp_path) -> None:
    # minAvailable 8: the round starts with all eight, and completes only with all eight vectors.
    job = run_with_victims(tmp_path, secagg_doc("secagg-masked", 8, rounds=1, min_available=8, threshold=5),
                           {6: "after-masking", 7: "after-masking"})
    try:
        assert job.wait_exit(timeout=420) == 0, job.aggregator_log()
        assert_killed(job, [6, 7])
        (entry,) = check_rounds_sum_right(job, Ring(default_bits(8), 1.0, 8))
        assert entry["participants"]["reported"] == list(range(8))
        assert "unmasked the sum of 8 updates (0 dropped after sharing" in job.aggregator_log()
    finally:
        job.stop()


def test_client_killed_after_sharing_is_unmasked_from_its_key_shares(tmp_path) -> None:
    # The victim dies in the first round all six are in; five vectors still make the quorum.
    job = run_with_victims(tmp_path, secagg_doc("secagg-shared", 6, rounds=8, min_available=5, threshold=4,
                                                seconds=0.3), {5: "after-sharing"})
    try:
        assert job.wait_exit(timeout=420) == 0, job.aggregator_log()
        assert_killed(job, [5])
        history = check_rounds_sum_right(job, Ring(default_bits(6), 1.0, 6))
        assert all(5 not in h["participants"]["reported"] for h in history[-3:])
        assert "unmasked the sum of 5 updates (1 dropped after sharing" in job.aggregator_log()
    finally:
        job.stop()


def test_aggregator_killed_holding_the_masked_sum_resumes_at_unmasking(tmp_path) -> None:
    # Every client waits a few seconds before revealing in round 2: the aggregator dies in between.
    job = run_with_victims(tmp_path, secagg_doc("secagg-resume", 4, rounds=3, min_available=4, threshold=3),
                           dict.fromkeys(range(4), "reveal-late"), number=2)
    try:
        records = job.run.run_dir / "checkpoints" / "secagg"
        deadline = time.monotonic() + 300
        while not list(records.glob("round-000002-*/round.json")):
            assert time.monotonic() < deadline and job.aggregator.process.poll() is None, job.aggregator_log()
            time.sleep(0.05)
        job.kill_aggregator()
        job.restart_aggregator()
        assert job.wait_exit(timeout=420) == 0, job.aggregator_log()
        history = check_rounds_sum_right(job, Ring(default_bits(4), 1.0, 4))
    finally:
        job.stop()
    assert [h["round"] for h in history] == [1, 2, 3]  # no finished round lost, none run twice
    assert all(h["participants"]["reported"] == [0, 1, 2, 3] for h in history)
    log = job.aggregator_log()
    assert "resuming after round 1" in log and "round 2: resuming SecAgg+ attempt" in log, log
    assert "round 2: SecAgg+ unmasked the sum of 4 updates" in log, log


def run_manifest(doc: dict, run_dir: Path) -> list[dict]:
    manifest = run_dir.with_suffix(".yaml")
    manifest.write_text(yaml.safe_dump(doc))
    done = subprocess.run([sys.executable, "-m", "fedkube.cli", "run", str(manifest), "--output-dir", str(run_dir)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    history = json.loads((run_dir / "metrics.json").read_text())
    assert all(h["status"] == "completed" for h in history), history
    return history


@pytest.mark.slow
@pytest.mark.timeout(1200)  # two 15-round jobs of 8 clients; minutes on a shared 2-core machine
def test_digits_secagg_example_matches_plain_fedavg(tmp_path) -> None:
    """The shipped example against plain FedAvg on the same example (secureAggregation removed).

    Both runs wait for all 8 clients before round 1 (minAvailable 8): otherwise round 1 trains on
    whichever 6 or 7 joined first, a start-up race that makes two plain FedAvg runs differ as much.
    With the same clients in every round, the only difference left is secure aggregation.
    """
    secure = yaml.safe_load((ROOT / "examples" / "digits-secagg.yaml").read_text())
    secure["spec"]["clients"]["minAvailable"] = secure["spec"]["data"]["partitions"]
    plain = copy.deepcopy(secure)
    del plain["spec"]["secureAggregation"]
    runs = {"plain": run_manifest(plain, tmp_path / "plain"), "secagg": run_manifest(secure, tmp_path / "secagg")}
    assert [h["participants"] for h in runs["secagg"]] == [h["participants"] for h in runs["plain"]]
    assert all(len(h["participants"]["reported"]) == 8 for h in runs["plain"])
    # Round 1 starts from the same model with the same updates: its mean differs by quantisation only.
    assert abs(runs["secagg"][0]["loss"] - runs["plain"][0]["loss"]) <= 1e-6
    accuracy = {name: [h["accuracy"] for h in history] for name, history in runs.items()}
    assert abs(accuracy["secagg"][-1] - accuracy["plain"][-1]) <= 0.005, accuracy
    assert max(abs(a - b) for a, b in zip(accuracy["secagg"], accuracy["plain"], strict=True)) <= 0.005, accuracy
