"""Checkpoints: one folder per round on any Store, committed by a pointer, verified on every read.

Layout, identical on file:// and s3://::

    round-000012/weights.safetensors   the global model
    round-000012/state.safetensors     named arrays of aggregator state (optimiser moments); may be empty
    round-000012/state.json            JSON-able aggregator state (round, metrics, sampler RNG, scalars)
    round-000012/manifest.json         size and sha256 of the three objects above, written after them
    latest                             "round-000012", written last
    final/weights.safetensors          the exported model, with final/manifest.json

The write order means a crash leaves the previous checkpoint or a complete new one, and readers
check every object against its manifest, so a truncated upload or a flipped byte is skipped with
a warning rather than resumed from. Tensors are safetensors, never pickle: loading a checkpoint
cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from fedkube.stores.base import MissingObject, Store, StoreError

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
ARRAYS = "state.safetensors"
STATE = "state.json"
MANIFEST = "manifest.json"
LATEST = "latest"
FINAL = "final"
ROUND_KEY = re.compile(r"round-(\d{6,})/")
POINTER = re.compile(r"round-(\d{6,})")


class CorruptCheckpoint(StoreError):
    """A checkpoint object is missing, truncated or altered; the message names it and the round."""


@dataclass(frozen=True)
class Checkpoint:
    round: int
    weights: dict[str, np.ndarray]
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]
    uri: str  # the round folder


def round_folder(round: int) -> str:
    return f"round-{round:06d}"


def write_checkpoint(store: Store, round: int, weights: Mapping[str, np.ndarray],
                     arrays: Mapping[str, np.ndarray], state: Mapping[str, Any], keep_last: int) -> str:
    """Write round `round`, point `latest` at it, then prune; returns the round folder's URI.

    Rounds older than the newest `keep_last` are deleted only after `latest` moved, so a crash
    at any point still leaves at least one valid checkpoint.
    """
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, not {keep_last}")
    state_json = json.dumps(state, sort_keys=True).encode()  # refuse non-JSON state before writing
    folder = round_folder(round)
    objects = {
        WEIGHTS: _put_tensors(store, f"{folder}/{WEIGHTS}", weights),
        ARRAYS: _put_tensors(store, f"{folder}/{ARRAYS}", arrays),
        STATE: _put_bytes(store, f"{folder}/{STATE}", state_json),
    }
    _put_manifest(store, folder, objects, round=round)
    store.put(LATEST, folder.encode())
    try:
        _prune(store, round, keep_last)
    except StoreError as exc:  # the checkpoint is committed; the next one prunes what is left
        log.warning("checkpoint %s written, but pruning older rounds failed: %s", store.url(folder), exc)
    return store.url(folder)


def read_checkpoint(store: Store, round: int) -> Checkpoint:
    """Read round `round`, verifying each object's size and sha256 against the manifest.

    Raises MissingObject when the round has no objects at all, CorruptCheckpoint when it is
    incomplete or any object differs from what the manifest recorded.
    """
    folder, what = round_folder(round), f"checkpoint round {round}"
    manifest = _read_manifest(store, folder, what)
    if manifest.get("round") != round:
        raise CorruptCheckpoint(f"{what}: {store.url(f'{folder}/{MANIFEST}')} is for round "
                                f"{manifest.get('round')!r}")
    with tempfile.TemporaryDirectory(prefix="fedkube-ckpt-") as tmp:
        def fetch(name: str) -> Path:
            return _fetch_verified(store, f"{folder}/{name}", manifest, Path(tmp) / name, what)

        try:
            weights, arrays = load_file(fetch(WEIGHTS)), load_file(fetch(ARRAYS))
            state = json.loads(fetch(STATE).read_bytes())
        except (SafetensorError, ValueError) as exc:  # verified bytes that were wrong when written
            raise CorruptCheckpoint(f"{what} at {store.url(folder)} cannot be decoded: {exc}") from exc
    return Checkpoint(round, weights, arrays, state, store.url(folder))


def latest_checkpoint(store: Store) -> Checkpoint | None:
    """The newest valid checkpoint: the round `latest` names, else older rounds, newest first.

    Corrupt or partial rounds are skipped with a warning naming them; None when no valid one
    exists. Other store errors (no bucket, access denied) propagate: they must not look like
    "no checkpoint", or a job would silently restart from round 0.
    """
    for round in _candidate_rounds(store):
        try:
            return read_checkpoint(store, round)
        except (CorruptCheckpoint, MissingObject) as exc:
            log.warning("skipping checkpoint round %d in %s: %s", round, store.uri, exc)
    return None


@dataclass(frozen=True)
class RoundSummary:
    """What `fedkube checkpoints ls` shows for one round folder, from its manifest."""

    round: int
    uri: str
    created: str | None
    size: int  # bytes of the objects the manifest lists
    problem: str | None  # why the round cannot be resumed from; None when it is usable


def summarize_rounds(store: Store, verify: bool = False) -> list[RoundSummary]:
    """Every round folder, ascending; `verify` also downloads and hashes each object.

    Without `verify` only manifests are read (cheap even for large models), so a round whose
    object was altered in place shows as usable until it is verified or read.
    """
    summaries = []
    for round in list_rounds(store):
        folder, what = round_folder(round), f"checkpoint round {round}"
        manifest: dict[str, Any] = {}
        problem = None
        try:
            manifest = _read_manifest(store, folder, what)
            if verify:
                verify_folder(store, folder)
        except CorruptCheckpoint as exc:
            problem = str(exc)
        objects = manifest.get("objects", {})
        size = sum(o.get("size", 0) for o in objects.values() if isinstance(o, dict))
        summaries.append(RoundSummary(round, store.url(folder), manifest.get("created"), size, problem))
    return summaries


def latest_round(store: Store) -> int | None:
    """The round the `latest` pointer names (None without a readable pointer); not verified."""
    return _read_latest(store)


def verify_folder(store: Store, folder: str, into: Path | None = None) -> dict[str, Any]:
    """Download and check every object a checkpoint folder's manifest lists; returns the manifest.

    The verified objects are kept under `into` (by name) when given, so a caller that wants to
    look inside them does not download them twice.
    """
    what = f"checkpoint {folder}"
    manifest = _read_manifest(store, folder, what)
    with tempfile.TemporaryDirectory(prefix="fedkube-ckpt-") as tmp:
        for name in manifest["objects"]:
            if "/" in name or name in (".", ".."):
                raise CorruptCheckpoint(f"{what}: {store.url(f'{folder}/{MANIFEST}')} lists a bad name {name!r}")
            path = (into or Path(tmp)) / name
            _fetch_verified(store, f"{folder}/{name}", manifest, path, what)
    return manifest


def export_weights(store: Store, folder: str, target: Path) -> dict[str, Any]:
    """Stream a checkpoint folder's verified weights to the local file `target`; returns their entry.

    The download goes to a temporary file beside `target` and is renamed only once its size and
    sha256 match the manifest, so a failed export never leaves a plausible-looking model behind.
    """
    what = f"checkpoint {folder}"
    manifest = _read_manifest(store, folder, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fedkube-export-", dir=target.parent) as tmp:
        path = _fetch_verified(store, f"{folder}/{WEIGHTS}", manifest, Path(tmp) / WEIGHTS, what)
        path.replace(target)
    entry: dict[str, Any] = manifest["objects"][WEIGHTS]
    return entry


def list_rounds(store: Store) -> list[int]:
    """Rounds that have at least one object, complete or not, ascending."""
    return sorted(_keys_by_round(store))


def export_final(store: Store, weights: Mapping[str, np.ndarray]) -> str:
    """Write the trained model to `final/`; returns the weights object's URI (what users download)."""
    objects = {WEIGHTS: _put_tensors(store, f"{FINAL}/{WEIGHTS}", weights)}
    _put_manifest(store, FINAL, objects)
    return store.url(f"{FINAL}/{WEIGHTS}")


def _put_tensors(store: Store, key: str, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Serialise once into a staging file and upload that file, so a big model is never held twice.

    safetensors writes straight from the arrays' memory, which is why they must be C-contiguous
    (it would silently write a transposed view's buffer in the wrong order).
    """
    contiguous = {name: np.require(t, requirements="C") for name, t in tensors.items()}
    with tempfile.TemporaryDirectory(prefix="fedkube-ckpt-") as tmp:
        path = Path(tmp) / "tensors.safetensors"
        save_file(contiguous, path)
        entry = _describe_file(path)
        store.put_file(key, path)
    return entry


def _put_bytes(store: Store, key: str, data: bytes) -> dict[str, Any]:
    store.put(key, data)
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _put_manifest(store: Store, folder: str, objects: dict[str, Any], **fields: Any) -> None:
    created = datetime.now(UTC).isoformat(timespec="seconds")
    manifest = {**fields, "created": created, "objects": objects}
    store.put(f"{folder}/{MANIFEST}", json.dumps(manifest, indent=2, sort_keys=True).encode())


def _describe_file(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"sha256": digest, "size": path.stat().st_size}


def _read_manifest(store: Store, folder: str, what: str) -> dict[str, Any]:
    key = f"{folder}/{MANIFEST}"
    try:
        manifest = json.loads(store.get(key))
    except MissingObject as exc:
        if not store.list(f"{folder}/"):
            raise MissingObject(f"no {what} at {store.url(folder)}") from exc
        raise CorruptCheckpoint(f"{what} is incomplete: {store.url(key)} is missing "
                                "(the writer stopped before finishing)") from exc
    except ValueError as exc:
        raise CorruptCheckpoint(f"{what}: {store.url(key)} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("objects"), dict):
        raise CorruptCheckpoint(f"{what}: {store.url(key)} has no 'objects' table")
    return manifest


def _fetch_verified(store: Store, key: str, manifest: dict[str, Any], path: Path, what: str) -> Path:
    """Download `key` to `path` and check it is byte for byte what the manifest recorded."""
    url, name = store.url(key), key.rpartition("/")[2]
    expected = manifest["objects"].get(name)
    if not isinstance(expected, dict):
        raise CorruptCheckpoint(f"{what}: {url} is not listed in the manifest")
    try:
        store.get_file(key, path)
    except MissingObject as exc:
        raise CorruptCheckpoint(f"{what}: {url} is missing") from exc
    actual = _describe_file(path)
    if actual["size"] != expected.get("size"):
        raise CorruptCheckpoint(f"{what}: {url} has {actual['size']} bytes but the manifest says "
                                f"{expected.get('size')} (truncated or partly written)")
    if actual["sha256"] != expected.get("sha256"):
        raise CorruptCheckpoint(f"{what}: {url} has sha256 {actual['sha256']} but the manifest says "
                                f"{expected.get('sha256')} (altered after it was written)")
    return path


def _candidate_rounds(store: Store) -> Iterator[int]:
    """The round `latest` names; then, only if that one fails, older rounds newest first.

    Rounds newer than `latest` are never candidates: they were not committed.
    """
    pointed = _read_latest(store)
    if pointed is not None:
        yield pointed
    yield from (r for r in reversed(list_rounds(store)) if pointed is None or r < pointed)


def _read_latest(store: Store) -> int | None:
    try:
        text = store.get(LATEST).decode(errors="replace").strip()
    except MissingObject:
        return None  # a fresh store, or a crash before the first pointer: scan the rounds
    match = POINTER.fullmatch(text)
    if match is None:
        log.warning("ignoring unreadable checkpoint pointer %s (%r); scanning rounds",
                    store.url(LATEST), text[:40])
        return None
    return int(match.group(1))


def _keys_by_round(store: Store) -> dict[int, list[str]]:
    rounds: dict[int, list[str]] = defaultdict(list)
    for key in store.list("round-"):
        if match := ROUND_KEY.match(key):
            rounds[int(match.group(1))].append(key)
    return rounds


def _prune(store: Store, current: int, keep_last: int) -> None:
    """Delete rounds older than the newest `keep_last` up to `current`, partial ones included."""
    by_round = _keys_by_round(store)
    for round in sorted(r for r in by_round if r <= current)[:-keep_last]:
        # Manifest first: a reader racing the prune then sees an incomplete round, not a corrupt one.
        for key in sorted(by_round[round], key=lambda k: not k.endswith(f"/{MANIFEST}")):
            store.delete(key)
