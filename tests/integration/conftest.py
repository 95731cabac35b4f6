"""Integration fixtures: a real S3 HTTP endpoint (moto's server) on 127.0.0.1.

The product's own boto3 code talks to it over HTTP; nothing in boto3 is patched. moto keeps
its buckets in this process, so every server started here sees the same buckets.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Callable, Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # No real AWS configuration can leak in from the developer's machine.
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/fedkube-test-credentials",
    "AWS_CONFIG_FILE": "/nonexistent/fedkube-test-config",
}
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
         "FEDKUBE_S3_ENDPOINT_URL", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server in a thread for the whole session; yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dummy credentials only: moto accepts any, and nothing can reach a real account."""
    for name, value in DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_bucket(s3_server: str, aws_env: None) -> str:
    """A fresh bucket per test, so tests never see each other's objects."""
    name = f"fedkube-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def enforce_s3_auth(s3_server: str) -> Iterator[Callable[[], None]]:
    """A switch that makes moto check credentials and IAM policies (off by default) until teardown.

    A switch rather than an immediate effect, so a test can create IAM users first.
    """

    def allow_unauthenticated(count: str) -> None:
        request = urllib.request.Request(f"{s3_server}/moto-api/reset-auth", data=count.encode(),
                                         method="POST", headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    yield lambda: allow_unauthenticated("0")
    allow_unauthenticated("inf")
