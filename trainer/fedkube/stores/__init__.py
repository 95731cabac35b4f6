"""Object stores behind one small interface: pick one by URI scheme with `open_store`.

boto3 is imported only when an s3:// store is opened, so file-only runs start fast.
"""

from __future__ import annotations

from urllib.parse import urlparse

from fedkube.stores.base import MissingObject, Store, StoreError
from fedkube.stores.file import FileStore

__all__ = ["FileStore", "MissingObject", "Store", "StoreError", "open_store"]


def open_store(uri: str, endpoint_url: str | None = None) -> Store:
    """The store for `uri`; `endpoint_url` (else FEDKUBE_S3_ENDPOINT_URL / AWS_ENDPOINT_URL) is for s3://."""
    scheme = urlparse(uri).scheme
    if scheme == "file":
        return FileStore(uri)
    if scheme == "s3":
        from fedkube.stores.s3 import S3Store

        return S3Store(uri, endpoint_url)
    raise ValueError(f"unsupported store URI {uri!r}: use file:///absolute/path or s3://bucket/prefix")
