"""The stores against real endpoints: moto's S3 HTTP server and a local folder, same contract."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from moto.server import ThreadedMotoServer
from safetensors.numpy import load_file

from fedkube.checkpoint import latest_checkpoint, list_rounds, read_checkpoint, write_checkpoint
from fedkube.stores import FileStore, MissingObject, Store, StoreError, open_store
from fedkube.stores.s3 import RetryPolicy, S3Store, is_transient

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05, sdk_attempts=1, connect_timeout=1)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """Each contract test runs on both stores."""
    if request.param == "file":
        return FileStore(f"file://{tmp_path}/store")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Store(f"s3://{bucket}/jobs/demo", request.getfixturevalue("s3_server"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_put_get_list_delete(store: Store) -> None:
    store.put("b/c", b"two")
    store.put("a", b"one")
    store.put("b/d/e", b"three")
    store.put("a", b"one again")  # overwrite

    assert store.list() == ["a", "b/c", "b/d/e"]
    assert store.list("b/") == ["b/c", "b/d/e"]
    assert store.list("b/d") == ["b/d/e"]
    assert store.get("a") == b"one again"
    assert store.exists("b/c") and not store.exists("b")
    store.delete("b/c")
    store.delete("b/c")  # missing is fine
    assert store.list() == ["a", "b/d/e"]
    assert not store.exists("b/c")


def test_missing_object_is_a_key_error_naming_the_uri(store: Store, tmp_path: Path) -> None:
    for read in (lambda: store.get("no/such"), lambda: store.get_file("no/such", tmp_path / "x")):
        with pytest.raises(KeyError) as caught:
            read()
        assert isinstance(caught.value, MissingObject)
        assert str(caught.value) == f"no object at {store.uri}/no/such"


def test_local_file_errors_are_store_errors_not_missing_objects(store: Store, tmp_path: Path) -> None:
    store.put("k", b"v")
    for transfer in (lambda: store.put_file("k", tmp_path / "no-source"),
                     lambda: store.get_file("k", tmp_path / "no-folder" / "target")):
        with pytest.raises(StoreError) as caught:
            transfer()
        assert not isinstance(caught.value, MissingObject)
        assert str(caught.value).startswith("cannot ") and f"{store.uri}/k: " in str(caught.value)


def test_streaming_round_trip(store: Store, tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(9 * 2**20 + 7)
    (tmp_path / "src").write_bytes(data)

    store.put_file("big/blob", tmp_path / "src")
    store.get_file("big/blob", tmp_path / "dst")

    assert (tmp_path / "dst").read_bytes() == data


def test_large_upload_is_multipart(s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    data = np.random.default_rng(1).bytes(20 * 2**20)
    (tmp_path / "src").write_bytes(data)
    store = S3Store(f"s3://{s3_bucket}/p", s3_server)

    store.put_file("blob", tmp_path / "src")

    etag = boto3.client("s3", endpoint_url=s3_server).head_object(Bucket=s3_bucket, Key="p/blob")["ETag"]
    assert etag.strip('"').endswith("-3")  # three 8 MiB parts
    assert store.get("blob") == data


def test_checkpoints_have_the_same_layout_on_s3_and_on_disk(
        s3_server: str, s3_bucket: str, tmp_path: Path) -> None:
    stores = [S3Store(f"s3://{s3_bucket}/ckpt", s3_server), FileStore(f"file://{tmp_path}/ckpt")]
    weights = {"dense.w": np.random.default_rng(2).standard_normal((300, 200)).astype(np.float32)}
    arrays = {"adam.m": np.ones(7), "adam.v": np.full(7, 0.5)}

    for s in stores:
        for n in (1, 2, 3):
            uri = write_checkpoint(s, n, weights, arrays, {"round": n, "history": [0.1]}, keep_last=2)
        assert uri == f"{s.uri}/round-000003"

    s3, disk = stores
    assert s3.list() == disk.list()
    assert list_rounds(s3) == [2, 3]
    restored = latest_checkpoint(s3)
    assert restored is not None and restored.round == 3 and restored.uri == f"s3://{s3_bucket}/ckpt/round-000003"
    np.testing.assert_array_equal(restored.weights["dense.w"], weights["dense.w"])
    np.testing.assert_array_equal(restored.arrays["adam.v"], arrays["adam.v"])
    assert restored.state == {"round": 3, "history": [0.1]}


def test_missing_bucket_is_named_with_the_uri(s3_server: str, aws_env: None, tmp_path: Path) -> None:
    store = S3Store("s3://no-such-bucket/prefix", s3_server)
    expected = "bucket 'no-such-bucket' does not exist (s3://no-such-bucket/prefix/key)"
    for operation in (lambda: store.put("key", b"x"), lambda: store.get("key"),
                      lambda: store.get_file("key", tmp_path / "x"), lambda: store.exists("key")):
        with pytest.raises(StoreError) as caught:
            operation()
        assert str(caught.value) == expected and not isinstance(caught.value, MissingObject)
    with pytest.raises(StoreError, match="does not exist"):  # never mistaken for "no checkpoint yet"
        latest_checkpoint(store)
    with pytest.raises(StoreError, match="does not exist"):
        read_checkpoint(store, 1)


@pytest.mark.parametrize("credentials, code", [
    ("unknown key", "InvalidAccessKeyId"),
    ("wrong secret", "SignatureDoesNotMatch"),
    ("no policy", "AccessDenied"),
])
def test_denied_credentials_say_what_to_check(
        s3_server: str, s3_bucket: str, enforce_s3_auth: Callable[[], None], monkeypatch: pytest.MonkeyPatch,
        credentials: str, code: str) -> None:
    iam = boto3.client("iam", endpoint_url=s3_server)
    user = f"user-{s3_bucket}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    key_id, secret = {
        "unknown key": ("AKIAUNKNOWNUNKNOWN00", "x"),
        "wrong secret": (key["AccessKeyId"], "wrong"),
        "no policy": (key["AccessKeyId"], key["SecretAccessKey"]),
    }[credentials]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    enforce_s3_auth()

    with pytest.raises(StoreError) as caught:
        S3Store(f"s3://{s3_bucket}/p", s3_server).put("k", b"x")

    assert str(caught.value).startswith(f"access denied to s3://{s3_bucket}/p/k ({code}): check credentials")


def test_unreachable_endpoint_fails_clearly_after_bounded_retries(aws_env: None) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = S3Store("s3://bucket/prefix", endpoint, FAST_RETRY)

    started = time.monotonic()
    with pytest.raises(StoreError) as caught:
        store.get("key")

    assert time.monotonic() - started < 5
    assert str(caught.value).startswith(
        f"cannot reach endpoint {endpoint} to read s3://bucket/prefix/key after 3 attempts")


class _StartServerOnFirstRetry(logging.Handler):
    """Brings the endpoint up when the store announces its first retry: an outage that ends."""

    def __init__(self, port: int) -> None:
        super().__init__(logging.WARNING)
        self.port = port
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.started = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.started:
            self.server.start()
            self.started = True


@pytest.fixture
def outage_ending_on_retry() -> Iterator[_StartServerOnFirstRetry]:
    handler = _StartServerOnFirstRetry(closed_port())
    logger = logging.getLogger("fedkube.stores.s3")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    if handler.started:
        handler.server.stop()


def test_transient_outage_is_retried(s3_server: str, s3_bucket: str,
                                     outage_ending_on_retry: _StartServerOnFirstRetry) -> None:
    endpoint = f"http://127.0.0.1:{outage_ending_on_retry.port}"
    store = S3Store(f"s3://{s3_bucket}/p", endpoint, FAST_RETRY)

    store.put("k", b"made it")

    assert outage_ending_on_retry.started
    assert S3Store(f"s3://{s3_bucket}/p", s3_server).get("k") == b"made it"


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize("name, error, transient", [
    ("connection refused", EndpointConnectionError(endpoint_url="http://x"), True),
    ("read timeout", ReadTimeoutError(endpoint_url="http://x"), True),
    ("slow down", _client_error("SlowDown", 503), True),
    ("throttled", _client_error("ThrottlingException", 400), True),
    ("internal error", _client_error("InternalError", 500), True),
    ("too many requests", _client_error("Whatever", 429), True),
    ("no such bucket", _client_error("NoSuchBucket", 404), False),
    ("access denied", _client_error("AccessDenied", 403), False),
    ("bad request", _client_error("InvalidArgument", 400), False),
])
def test_is_transient(name: str, error: Exception, transient: bool) -> None:
    assert is_transient(error) is transient, name


def test_open_store_reads_the_endpoint_from_the_environment(
        s3_server: str, s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEDKUBE_S3_ENDPOINT_URL", s3_server)

    store = open_store(f"s3://{s3_bucket}/from-env/")
    store.put("k", b"v")

    assert store.uri == f"s3://{s3_bucket}/from-env"
    assert S3Store(f"s3://{s3_bucket}", s3_server).list() == ["from-env/k"]


def test_checkpoints_cli_against_s3(s3_server: str, s3_bucket: str, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from fedkube.cli import main

    store = S3Store(f"s3://{s3_bucket}/job", s3_server)
    weights = {"w": np.arange(6, dtype=np.float32)}
    for n in (1, 2):
        write_checkpoint(store, n, {"w": weights["w"] * n}, {}, {"round": n, "history": []}, keep_last=3)
    target = tmp_path / "model.safetensors"

    listed = main(["checkpoints", "ls", store.uri, "--verify", "--endpoint-url", s3_server])
    exported = main(["checkpoints", "export", store.uri, "--round", "1", "--to", str(target),
                     "--endpoint-url", s3_server])
    missing = main(["checkpoints", "show", "s3://no-such-bucket/job", "--endpoint-url", s3_server])

    out, err = capsys.readouterr()
    assert (listed, exported, missing) == (0, 0, 1)
    assert "ok (verified) (latest)" in out
    np.testing.assert_array_equal(load_file(target)["w"], weights["w"])
    assert "error: bucket 'no-such-bucket' does not exist (s3://no-such-bucket/job/latest)" in err.splitlines()


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_a_damaged_s3_checkpoint_is_skipped_for_the_previous_one(
        s3_server: str, s3_bucket: str, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    store = S3Store(f"s3://{s3_bucket}/job", s3_server)
    for n in (1, 2):
        write_checkpoint(store, n, {"w": np.full(1000, n, np.float32)}, {}, {"round": n, "history": []}, keep_last=3)
    s3, key = boto3.client("s3", endpoint_url=s3_server), "job/round-000002/weights.safetensors"
    data = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    if damage == "truncate":
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data[:-10])
    elif damage == "alter":
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data[:-1] + bytes([data[-1] ^ 1]))
    else:
        s3.delete_object(Bucket=s3_bucket, Key=key)

    with caplog.at_level(logging.WARNING, logger="fedkube.checkpoint"):
        restored = latest_checkpoint(store)

    assert restored is not None and restored.round == 1
    np.testing.assert_array_equal(restored.weights["w"], np.full(1000, 1, np.float32))
    assert f"skipping checkpoint round 2 in s3://{s3_bucket}/job" in caplog.text
    assert f"s3://{s3_bucket}/{key}" in caplog.text
