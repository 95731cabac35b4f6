"""Crash and resume with real processes and checkpoints on moto's S3 server over HTTP.

The aggregator is killed with SIGKILL (no chance to write anything more), a new one starts on the
same port and checkpoint URI, the clients find it again on their own, and the job must end with
the very bits an uninterrupted run of the same manifest produces: with spec.strategy.exactSum, whose
sum does not depend on the order updates arrive in (the default float32 sum agrees within rounding).
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from jobs import Job, job_doc
from moto.server import ThreadedMotoServer
from safetensors.numpy import load

from fedkube.checkpoint import latest_checkpoint, list_rounds
from fedkube.stores.s3 import S3Store

ROUNDS = 6


def resumable_doc(name: str, uri: str, endpoint: str, exact_sum: bool = False) -> dict[str, Any]:
    doc = job_doc(name, partitions=3, rounds=ROUNDS, min_available=3, localEpochs=2, roundTimeoutSeconds=120,
                  joinTimeoutSeconds=120)
    doc["spec"]["seed"] = 11
    doc["spec"]["checkpoint"] = {"uri": uri, "endpointUrl": endpoint, "keepLast": 2}
    doc["spec"]["strategy"] = {"exactSum": exact_sum}
    return doc


def final_weights(endpoint: str, uri: str) -> dict[str, np.ndarray]:
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint)
    return load(s3.get_object(Bucket=bucket, Key=f"{prefix}/final/weights.safetensors")["Body"].read())


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def evaluation(history: list[dict[str, Any]]) -> list[tuple[int, str, float, float]]:
    return [(h["round"], h["status"], h["accuracy"], h["loss"]) for h in history]


def test_killed_aggregator_resumes_and_ends_bit_identical(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    plain_uri, crash_uri = f"s3://{s3_bucket}/plain", f"s3://{s3_bucket}/crashed"
    plain = Job(resumable_doc("resume", plain_uri, s3_server, exact_sum=True), tmp_path / "plain").start()
    crashed = Job(resumable_doc("resume", crash_uri, s3_server, exact_sum=True),
                  tmp_path / "crashed").start(port=free_port())
    try:
        crashed.wait_for("round 3 to start", lambda s: s["round"] >= 3, timeout=300)
        time.sleep(random.uniform(0, 0.3))  # anywhere in round 3
        crashed.kill_aggregator()
        crashed.restart_aggregator()

        assert plain.wait_exit(timeout=300) == 0, plain.aggregator_log()
        assert crashed.wait_exit(timeout=300) == 0, crashed.aggregator_log()
    finally:
        plain.stop()
        crashed.stop()

    resumed = re.search(r"resuming after round (\d+) from (\S+)", crashed.aggregator_log())
    assert resumed is not None, crashed.aggregator_log()
    assert 2 <= int(resumed.group(1)) < ROUNDS and resumed.group(2).startswith(f"{crash_uri}/round-")
    # Bitwise: the same tensors, dtypes and bytes.
    expected, actual = final_weights(s3_server, plain_uri), final_weights(s3_server, crash_uri)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype and actual[name].tobytes() == value.tobytes(), name
    # The history has every round once, and each round evaluated exactly as without the crash.
    history = crashed.metrics()
    assert [h["round"] for h in history] == list(range(1, ROUNDS + 1))
    assert evaluation(history) == evaluation(plain.metrics())
    assert all(h["status"] == "completed" and h["clients_reported"] == 3 for h in history)
    # The checkpoints agree: the last one holds the full history and keepLast pruned the rest.
    store = S3Store(crash_uri, s3_server)
    last = latest_checkpoint(store)
    assert last is not None and last.round == ROUNDS and list_rounds(store) == [ROUNDS - 1, ROUNDS]
    assert [h["round"] for h in last.state["history"]] == list(range(1, ROUNDS + 1))
    assert set(last.state["parts"]) == {"strategy", "clients", "privacy"}
    assert last.state["parts"]["clients"]["sampler"] == {"seed": 11, "sampling": "fixed"}
    assert crashed.final_status()["phase"] == "Succeeded"


def test_a_missing_bucket_or_denied_store_stops_the_aggregator_before_training(
        s3_server: str, aws_env: None, tmp_path: Path) -> None:
    doc = resumable_doc("nobucket", "s3://no-such-bucket/job", s3_server)
    job = Job(doc, tmp_path / "nobucket")

    with pytest.raises(Exception, match="exited with code 1") as caught:
        job.start(clients=[])

    assert "cannot resume from s3://no-such-bucket/job: bucket 'no-such-bucket' does not exist" in str(caught.value)


def test_an_endpoint_that_goes_away_mid_run_loses_no_round(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    port = free_port()
    endpoint, uri = f"http://127.0.0.1:{port}", f"s3://{s3_bucket}/outage"
    # A second server on moto's shared in-process backend: stopping it takes only this endpoint away.
    servers = [ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)]
    servers[0].start()
    job = Job(resumable_doc("outage", uri, endpoint), tmp_path / "outage").start()
    try:
        job.wait_for("the checkpoint of round 2", lambda s: (s["checkpoint"] or {}).get("round", 0) >= 2,
                     timeout=300)
        servers[0].stop()
        failed = job.wait_for("a failed checkpoint", lambda s: "error" in (s["checkpoint"] or {}), timeout=120)
        servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[1].start()
        assert job.wait_exit(timeout=300) == 0, job.aggregator_log()
    finally:
        job.stop()
        servers[-1].stop()

    assert failed["checkpoint"]["error"].endswith(f"to {uri} failed; retried at the next one")
    log = (job.run.run_dir / "logs" / "aggregator.log").read_text()
    assert "training goes on and the next checkpoint retries: cannot reach endpoint " + endpoint in log
    last = latest_checkpoint(S3Store(uri, s3_server))
    assert last is not None and last.round == ROUNDS
    assert [h["round"] for h in last.state["history"]] == list(range(1, ROUNDS + 1))
    assert [h["round"] for h in job.metrics()] == list(range(1, ROUNDS + 1))
    assert job.final_status()["checkpoint"] == {"uri": f"{uri}/round-{ROUNDS:06d}", "round": ROUNDS}
