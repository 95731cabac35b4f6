"""The one interface every object store implements, and the errors they all raise.

Checkpoints, exported models and data sources only ever talk to a `Store`, so a job behaves the
same on a laptop (file://) and in a cluster (s3://). Errors always carry the full URI of the
object and the cause, because the person reading them is usually looking at a pod's log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path


class StoreError(RuntimeError):
    """An object store operation failed; the message names the full URI and the cause."""


class MissingObject(StoreError, KeyError):
    """The key does not exist. Also a KeyError, so `except KeyError` reads naturally."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def check_key(uri: str, key: str) -> str:
    """Refuse keys that could escape the store root or mean different things on different stores."""
    parts = key.split("/")
    if not key or key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r} for {uri}: use relative 'a/b/c' keys")
    return key


class Store(ABC):
    """A flat namespace of byte objects under one root URI; keys use '/' as a folder separator."""

    uri: str  # normalised, without a trailing slash: file:///abs/dir or s3://bucket/prefix

    def url(self, key: str) -> str:
        """The full URI of `key`, as shown in errors and returned to users."""
        return f"{self.uri}/{key}"

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write an object atomically: readers see the old object or the new one, never a part."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file without reading it into memory (large objects)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Read a whole object; raises MissingObject when there is none."""

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Download an object into a local file without holding it in memory."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under the root that start with `prefix`, relative to the root, sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error, so pruning can be repeated."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object exists at `key`."""
