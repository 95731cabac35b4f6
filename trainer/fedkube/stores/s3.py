"""A Store on S3 or any S3-compatible service (MinIO, Ceph, moto).

Credentials come only from boto3's default chain (environment, shared files, IRSA web
identity), so the operator can hand them over as a Secret or a service account without fedkube
knowing which. Retries happen at two levels: botocore's standard mode retries single requests,
and `S3Store` retries a whole operation (a multipart upload included) with exponential backoff,
so a short outage or throttling does not lose a round's checkpoint. Every failure is turned into
a StoreError that names the object's URI and says what to fix.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
)
from botocore.exceptions import ConnectionError as SdkConnectionError  # not the builtin

from fedkube.stores.base import MissingObject, Store, StoreError, check_key

log = logging.getLogger(__name__)
T = TypeVar("T")

ENDPOINT_ENV = ("FEDKUBE_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
MiB = 1 << 20
COPY_BUFFER = 1 * MiB
SDK_ERRORS = (ClientError, BotoCoreError)
TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "TooManyRequestsException",
    "RequestTimeout", "InternalError", "ServiceUnavailable",
})
DENIED_CODES = frozenset({
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up; tests shrink the delays, jobs keep the defaults."""

    attempts: int = 4  # our attempts at a whole operation
    base_delay: float = 0.5  # seconds before the second attempt, doubled each time
    max_delay: float = 10.0
    sdk_attempts: int = 3  # botocore's attempts at each request, inside each of ours
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def delay(self, attempt: int) -> float:
        """Backoff after failed attempt `attempt` (1-based), jittered so retries do not stay in step."""
        return min(self.max_delay, self.base_delay * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def resolve_endpoint(endpoint_url: str | None) -> str | None:
    """The argument wins; otherwise the first endpoint variable set; None means AWS itself."""
    return endpoint_url or next((os.environ[n] for n in ENDPOINT_ENV if os.environ.get(n)), None)


def error_code(exc: BaseException) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) if isinstance(exc, ClientError) else ""


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the network, the service's 5xx, or throttling; never a 4xx about the request."""
    if isinstance(exc, SdkConnectionError | HTTPClientError | IncompleteReadError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500 or status == 429
    return False


class S3Store(Store):
    """Objects under `s3://bucket/prefix`; keys are appended to the prefix with '/'."""

    def __init__(self, uri: str, endpoint_url: str | None = None, retry: RetryPolicy = RetryPolicy()) -> None:
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"invalid S3 URI {uri!r}: use s3://bucket/prefix")
        self.bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.uri = f"s3://{self.bucket}/{prefix}".rstrip("/")
        self.retry = retry
        endpoint = resolve_endpoint(endpoint_url)
        config = Config(
            retries={"mode": "standard", "max_attempts": retry.sdk_attempts},
            connect_timeout=retry.connect_timeout,
            read_timeout=retry.read_timeout,
            # Custom endpoints (MinIO, moto) rarely have wildcard DNS for bucket subdomains.
            s3={"addressing_style": "path"} if endpoint else None,
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint, config=config)
        self.transfer = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                                       max_concurrency=10)

    def _key(self, key: str) -> str:
        return self.prefix + check_key(self.uri, key)

    def _call(self, key: str, action: str, operation: Callable[[], T]) -> T:
        """Run `operation`, retrying transient failures with backoff; translate the final failure."""
        attempt = 1
        while True:
            try:
                return operation()
            except SDK_ERRORS as exc:
                if not is_transient(exc) or attempt >= self.retry.attempts:
                    raise self._error(exc, key, action, attempt) from exc
                delay = self.retry.delay(attempt)
                log.warning("%s %s failed (%s); retrying in %.2fs (attempt %d of %d)",
                            action, self.url(key), exc, delay, attempt, self.retry.attempts)
                time.sleep(delay)
                attempt += 1
            except OSError as exc:  # the local file, not the service
                raise StoreError(f"cannot {action} {self.url(key)}: {exc}") from exc

    def _error(self, exc: BaseException, key: str, action: str, attempts: int) -> StoreError:
        url, code = self.url(key), error_code(exc)
        if code == "NoSuchBucket":
            return StoreError(f"bucket {self.bucket!r} does not exist ({url})")
        if code in DENIED_CODES:
            return StoreError(f"access denied to {url} ({code}): check credentials (AWS_* variables, "
                              "shared credentials file or IRSA role) and the bucket policy")
        if code == "NoSuchKey":
            return MissingObject(f"no object at {url}")
        if isinstance(exc, NoCredentialsError):
            return StoreError(f"no AWS credentials found for {url}: set AWS_ACCESS_KEY_ID and "
                              "AWS_SECRET_ACCESS_KEY, a shared credentials file, or an IRSA role")
        if isinstance(exc, SdkConnectionError):
            return StoreError(f"cannot reach endpoint {self.client.meta.endpoint_url} to {action} {url} "
                              f"after {attempts} attempts: {exc}")
        if is_transient(exc):
            return StoreError(f"cannot {action} {url}: still failing after {attempts} attempts: {exc}")
        return StoreError(f"cannot {action} {url}: {exc}")

    def put(self, key: str, data: bytes) -> None:
        """One PUT: S3 makes it atomic. Meant for small objects; large ones go through put_file."""
        full = self._key(key)
        self._call(key, "write", lambda: self.client.put_object(Bucket=self.bucket, Key=full, Body=data))

    def put_file(self, key: str, path: Path) -> None:
        """Multipart above 8 MiB, parts in parallel; the object appears only when all parts are in."""
        full = self._key(key)

        def upload() -> None:
            with open(path, "rb") as f:  # reopened on each attempt, so a retry starts from byte 0
                self.client.upload_fileobj(f, self.bucket, full, Config=self.transfer)

        self._call(key, "write", upload)

    def get(self, key: str) -> bytes:
        full = self._key(key)

        def read() -> bytes:
            data: bytes = self.client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
            return data

        return self._call(key, "read", read)

    def get_file(self, key: str, path: Path) -> None:
        """One streaming GET into the file.

        Not the transfer manager's parallel ranged GETs: a checkpoint is read once per restart,
        one stream is as fast on MinIO-like servers (about 10x faster on moto, which rereads the
        object for every range), and a GET tells a missing key from a missing bucket, a HEAD
        cannot.
        """
        full = self._key(key)

        def download() -> None:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            with open(path, "wb") as f:  # a retry starts the file again
                shutil.copyfileobj(body, f, COPY_BUFFER)

        self._call(key, "read", download)

    def delete(self, key: str) -> None:
        full = self._key(key)
        self._call(key, "delete", lambda: self.client.delete_object(Bucket=self.bucket, Key=full))

    def exists(self, key: str) -> bool:
        """A one-key listing rather than a HEAD, whose bare 404 could also mean "no bucket"."""
        full = self._key(key)

        def probe() -> bool:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, MaxKeys=1)
            return any(obj["Key"] == full for obj in page.get("Contents", []))

        return self._call(key, "check", probe)

    def list(self, prefix: str = "") -> list[str]:
        def collect() -> list[str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix)
            keys = (obj["Key"] for page in pages for obj in page.get("Contents", []))
            return sorted(k[len(self.prefix):] for k in keys if not k.endswith("/"))  # skip folder markers

        return self._call(prefix, "list", collect)
