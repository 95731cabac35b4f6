"""Each silo's client reads only its own data: real processes, real folders, a real S3 endpoint.

Partitions hold different digits (partition 0 only 0-4, partition 1 only 5-9), so the labels a
client trained on show whose data it read; the recording task also reports every file its source
holds and everything its configuration names, from inside the client process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from jobs import Job, job_doc, with_task
from sklearn.datasets import load_digits

from fedkube.plan import make_plan
from fedkube.spec import parse_manifest
from fedkube.stores import StoreError
from fedkube.tasks.files import open_source, read_labelled_arrays

SPLITS = {0: range(0, 5), 1: range(5, 10)}


def silo_arrays() -> dict[int, tuple[np.ndarray, np.ndarray]]:
    x, y = load_digits(return_X_y=True)
    return {p: (x[np.isin(y, list(labels))][:300], y[np.isin(y, list(labels))][:300]) for p, labels in SPLITS.items()}


def run_job(doc: dict[str, Any], run_dir: Path) -> Job:
    job = Job(doc, run_dir).start()
    try:
        assert job.wait_exit(timeout=240) == 0, job.aggregator_log()
    finally:
        job.stop()
    return job


def records(record_dir: Path) -> dict[int, dict[str, Any]]:
    return {p: json.loads((record_dir / f"partition-{p}.json").read_text()) for p in SPLITS}


def silo_doc(name: str, record_dir: Path, sources: list[dict[str, Any]]) -> dict[str, Any]:
    doc = with_task(job_doc(name, partitions=2, rounds=1, min_available=2, localEpochs=1),
                    "silo_task:task", {"recordDir": str(record_dir)})
    doc["spec"]["data"]["sources"] = sources
    return doc


def test_each_client_reads_only_its_own_folder(tmp_path: Path) -> None:
    silos, record_dir = tmp_path / "silos", tmp_path / "records"
    record_dir.mkdir()
    for p, (x, y) in silo_arrays().items():
        folder = silos / f"hospital-{p}"
        folder.mkdir(parents=True, mode=0o700)
        if p == 0:
            np.savez(folder / "records.npz", x=x, y=y)
        else:
            np.savetxt(folder / "records.csv", np.column_stack([x, y]), delimiter=",", fmt="%g")
    doc = silo_doc("folders", record_dir, [{"path": f"{silos}/hospital-{{partition}}"}])

    job = run_job(doc, tmp_path / "run")

    seen = records(record_dir)
    assert seen[0]["uri"] == f"file://{silos}/hospital-0" and seen[0]["files"] == ["records.npz"]
    assert seen[1]["uri"] == f"file://{silos}/hospital-1" and seen[1]["files"] == ["records.csv"]
    for p, labels in SPLITS.items():
        assert seen[p]["labels"] == list(labels)
        assert seen[p]["sources"] == [{"partitions": [p], "path": f"{silos}/hospital-{p}"}]
        other = f"hospital-{1 - p}"
        assert other not in seen[p]["configuration"], f"client {p}'s configuration names {other}"
    assert job.metrics()[-1]["clients_reported"] == 2
    for p in SPLITS:  # each client's own manifest, readable by its owner only
        assert (job.run.run_dir / "clients" / f"client-{p}.yaml").stat().st_mode & 0o777 == 0o600


def test_each_client_reads_only_its_own_s3_prefix(tmp_path: Path, s3_server: str, s3_bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=s3_server)
    for p, (x, y) in silo_arrays().items():
        path = tmp_path / f"{p}.npz"
        np.savez(path, x=x, y=y)
        s3.upload_file(str(path), s3_bucket, f"silos/{p}/part-000.npz")
    # A prefix that starts like partition 1's but belongs to no one must stay unread.
    s3.put_object(Bucket=s3_bucket, Key="silos/10/decoy.csv", Body=b"not,digits\n")
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    doc = silo_doc("prefixes", record_dir, [{"objectStore": {"uri": f"s3://{s3_bucket}/silos/{{partition}}",
                                                              "endpointUrl": s3_server}}])

    run_job(doc, tmp_path / "run")

    seen = records(record_dir)
    for p, labels in SPLITS.items():
        assert seen[p]["uri"] == f"s3://{s3_bucket}/silos/{p}"
        assert seen[p]["files"] == ["part-000.npz"] and seen[p]["labels"] == list(labels)
        assert f"silos/{1 - p}" not in seen[p]["configuration"]


def test_a_silos_scoped_credentials_read_its_prefix_and_are_refused_the_others(
        tmp_path: Path, s3_server: str, s3_bucket: str, enforce_s3_auth: Callable[[], None],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What each client pod gets from its own Secret: keys whose policy covers its prefix only."""
    s3, iam = boto3.client("s3", endpoint_url=s3_server), boto3.client("iam", endpoint_url=s3_server)
    keys = {}
    for p, (x, y) in silo_arrays().items():
        path = tmp_path / f"{p}.npz"
        np.savez(path, x=x, y=y)
        s3.upload_file(str(path), s3_bucket, f"silos/{p}/part-000.npz")
        iam.create_user(UserName=f"silo-{p}-{s3_bucket}")
        iam.put_user_policy(UserName=f"silo-{p}-{s3_bucket}", PolicyName="own-prefix", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{s3_bucket}/silos/{p}/*"},
                {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{s3_bucket}",
                 "Condition": {"StringLike": {"s3:prefix": [f"silos/{p}/*"]}}}]}))
        keys[p] = iam.create_access_key(UserName=f"silo-{p}-{s3_bucket}")["AccessKey"]
    plan = make_plan(parse_manifest(silo_doc("scoped", tmp_path, [{"objectStore": {
        "uri": f"s3://{s3_bucket}/silos/{{partition}}", "endpointUrl": s3_server}}]), check_entrypoint=False))
    enforce_s3_auth()

    for p in SPLITS:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys[p]["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys[p]["SecretAccessKey"])
        _, labels = read_labelled_arrays(open_source(plan.clients[p].source))
        assert sorted(set(labels.tolist())) == list(SPLITS[p])
        # The other silo's records are refused. (Its key names are not: moto does not evaluate the
        # s3:prefix condition on ListBucket that S3 itself applies.)
        with pytest.raises(StoreError, match="access denied"):
            open_source(plan.clients[1 - p].source).get("part-000.npz")
