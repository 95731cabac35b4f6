"""A Store on a local or mounted filesystem (a laptop run, or a PVC in a cluster).

Every write goes to a temporary file in the destination folder, is fsynced, and then renamed
over the target, so a crash or a full disk never leaves a half-written object under its real
name; the folder is fsynced too so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from fedkube.stores.base import MissingObject, Store, StoreError, check_key

TMP_PREFIX = ".fedkube-tmp-"  # partial writes; never listed, safe to delete
FILE_MODE = 0o644


class FileStore(Store):
    """Objects are files under an absolute root folder; '/' in a key makes subfolders."""

    def __init__(self, uri: str) -> None:
        parsed = urlparse(uri)
        path = unquote(parsed.path)
        if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ValueError(f"invalid file URI {uri!r}: use file:///absolute/path")
        self.root = Path(os.path.normpath(path))
        self.uri = f"file://{self.root.as_posix()}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(self.uri, key)

    @contextlib.contextmanager
    def _errors(self, key: str, action: str) -> Iterator[None]:
        try:
            yield
        except FileNotFoundError as exc:
            if exc.filename == str(self.root / key):  # not a missing local source or target
                raise MissingObject(f"no object at {self.url(key)}") from exc
            raise StoreError(f"cannot {action} {self.url(key)}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot {action} {self.url(key)}: {exc}") from exc

    def _replace(self, key: str, fill: Callable[[Path], object]) -> None:
        """Fill a temp file beside the target, make it durable, then rename it into place."""
        dest = self._path(key)
        with self._errors(key, "write"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=dest.parent)
            os.close(fd)
            tmp = Path(name)
            try:
                fill(tmp)
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.chmod(tmp, FILE_MODE)
                os.replace(tmp, dest)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(dest.parent)

    def put(self, key: str, data: bytes) -> None:
        self._replace(key, lambda tmp: tmp.write_bytes(data))

    def put_file(self, key: str, path: Path) -> None:
        self._replace(key, lambda tmp: shutil.copyfile(path, tmp))  # sendfile: no user-space copy

    def get(self, key: str) -> bytes:
        with self._errors(key, "read"):
            return self._path(key).read_bytes()

    def get_file(self, key: str, path: Path) -> None:
        with self._errors(key, "read"):
            shutil.copyfile(self._path(key), path)

    def delete(self, key: str) -> None:
        """Remove the file, then any folders it leaves empty (pruned rounds leave no husks)."""
        path = self._path(key)
        with self._errors(key, "delete"):
            path.unlink(missing_ok=True)
        folder = path.parent
        while folder != self.root:
            try:
                folder.rmdir()
            except OSError:  # not empty, or already gone: stop climbing
                break
            folder = folder.parent

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        folder, slash, _ = prefix.rpartition("/")
        start = self._path(folder) if slash else self.root  # walk only the folder the prefix names
        keys = []
        with self._errors(prefix, "list"):
            for parent, _, files in os.walk(start, onerror=_raise_unless_missing):
                for name in files:
                    key = Path(parent, name).relative_to(self.root).as_posix()
                    if key.startswith(prefix) and not name.startswith(TMP_PREFIX):
                        keys.append(key)
        return sorted(keys)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _raise_unless_missing(exc: OSError) -> None:
    """os.walk ignores errors by default; an unreadable folder must not look like an empty one."""
    if not isinstance(exc, FileNotFoundError):
        raise exc
