"""Checkpoint format and the file:// store, on temporary folders."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedkube.checkpoint import (
    CorruptCheckpoint,
    export_final,
    latest_checkpoint,
    list_rounds,
    read_checkpoint,
    write_checkpoint,
)
from fedkube.stores import FileStore, MissingObject, StoreError, open_store
from fedkube.stores.file import TMP_PREFIX

RNG = np.random.default_rng(0)
WEIGHTS = {
    "conv.weight": RNG.standard_normal((8, 1, 3, 3)).astype(np.float32),
    "fc.weight": RNG.standard_normal((10, 32)).astype(np.float32).T,  # a non-contiguous view
    "fc.bias": np.zeros(10, np.float16),
}
ARRAYS = {"adam.m": RNG.standard_normal(100), "adam.v": np.abs(RNG.standard_normal(100))}


def state(round: int) -> dict:
    return {"round": round, "history": [{"round": r, "loss": 1.0 / r} for r in range(1, round + 1)],
            "sampler": np.random.default_rng(round).bit_generator.state, "server_lr": 0.5}


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(f"file://{tmp_path}/ckpt")


def write_rounds(store: FileStore, rounds: range, keep_last: int = 10) -> None:
    for r in rounds:
        write_checkpoint(store, r, {k: v * r for k, v in WEIGHTS.items()}, ARRAYS, state(r), keep_last)


def assert_same_tensors(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name].dtype == value.dtype and actual[name].shape == value.shape, name
        np.testing.assert_array_equal(actual[name], value)


# --- the file store -----------------------------------------------------------------------------

def test_file_store_writes_world_readable_files_in_subfolders(store: FileStore) -> None:
    store.put("a/b/c", b"x")

    path = store.root / "a" / "b" / "c"
    assert path.read_bytes() == b"x"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert store.uri == f"file://{store.root}"


def test_file_store_leaves_nothing_behind_when_a_write_fails(store: FileStore, tmp_path: Path) -> None:
    store.put("keep", b"old")

    with pytest.raises(StoreError, match=f"cannot write {store.uri}/keep"):
        store.put_file("keep", tmp_path / "missing-source")

    assert store.get("keep") == b"old"
    assert [p.name for p in store.root.iterdir()] == ["keep"]


def test_file_store_hides_partial_writes_and_removes_emptied_folders(store: FileStore) -> None:
    store.put("round/x", b"1")
    (store.root / "round" / f"{TMP_PREFIX}abc").write_bytes(b"partial")
    assert store.list() == ["round/x"]

    (store.root / "round" / f"{TMP_PREFIX}abc").unlink()
    store.delete("round/x")

    assert list(store.root.iterdir()) == []


@pytest.mark.parametrize("uri", ["file://relative/dir", "file:relative", "s3x://b/p", "/no/scheme"])
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="URI"):
        open_store(uri)


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a", "a\\b", "a/"])
def test_keys_that_could_escape_the_root_are_refused(store: FileStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put(key, b"x")


def test_open_store_picks_the_store_by_scheme(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}/x/")
    assert isinstance(store, FileStore) and store.uri == f"file://{tmp_path}/x"


# --- the checkpoint format ----------------------------------------------------------------------

def test_round_trip_and_layout(store: FileStore) -> None:
    uri = write_checkpoint(store, 12, WEIGHTS, ARRAYS, state(12), keep_last=3)

    assert uri == f"{store.uri}/round-000012"
    assert store.list() == ["latest", "round-000012/manifest.json", "round-000012/state.json",
                            "round-000012/state.safetensors", "round-000012/weights.safetensors"]
    assert store.get("latest") == b"round-000012"
    manifest = json.loads(store.get("round-000012/manifest.json"))
    assert manifest["round"] == 12 and manifest["created"].endswith("+00:00")
    assert set(manifest["objects"]) == {"weights.safetensors", "state.safetensors", "state.json"}
    restored = read_checkpoint(store, 12)
    assert (restored.round, restored.uri, restored.state) == (12, uri, json.loads(json.dumps(state(12))))
    assert_same_tensors(restored.weights, WEIGHTS)
    assert_same_tensors(restored.arrays, ARRAYS)


def test_state_arrays_may_be_empty(store: FileStore) -> None:
    write_checkpoint(store, 1, WEIGHTS, {}, {}, keep_last=1)

    restored = read_checkpoint(store, 1)

    assert restored.arrays == {} and restored.state == {}


def test_state_that_is_not_json_is_refused_before_anything_is_written(store: FileStore) -> None:
    with pytest.raises(TypeError):
        write_checkpoint(store, 1, WEIGHTS, {}, {"rng": np.random.default_rng()}, keep_last=1)
    assert store.list() == []


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage, obj, complaint", [
    ("truncated weights", truncate, "weights.safetensors", "bytes but the manifest says"),
    ("altered weights", flip_a_byte, "weights.safetensors", "(altered after it was written)"),
    ("altered state", flip_a_byte, "state.json", "(altered after it was written)"),
    ("missing arrays", Path.unlink, "state.safetensors", "is missing"),
    ("garbled manifest", truncate, "manifest.json", "is not valid JSON"),
])
def test_damage_is_detected_and_the_previous_round_is_used(
        store: FileStore, caplog: pytest.LogCaptureFixture,
        name: str, damage: Callable[[Path], object], obj: str, complaint: str) -> None:
    write_rounds(store, range(1, 3))
    damage(store.root / "round-000002" / obj)

    with pytest.raises(CorruptCheckpoint) as caught:
        read_checkpoint(store, 2)
    with caplog.at_level(logging.WARNING, logger="fedkube.checkpoint"):
        fallback = latest_checkpoint(store)

    message = str(caught.value)
    assert message.startswith("checkpoint round 2: ") and complaint in message, name
    assert f"{store.uri}/round-000002/{obj}" in message
    assert fallback is not None and fallback.round == 1
    assert_same_tensors(fallback.weights, WEIGHTS)
    assert "skipping checkpoint round 2" in caplog.text and obj in caplog.text


def test_a_crash_before_the_pointer_falls_back_to_the_newest_complete_round(
        store: FileStore, caplog: pytest.LogCaptureFixture) -> None:
    write_rounds(store, range(1, 4))
    # Round 3 died after its objects but before its manifest, and so before `latest`.
    store.delete("round-000003/manifest.json")
    store.delete("latest")

    with caplog.at_level(logging.WARNING):
        restored = latest_checkpoint(store)

    assert restored is not None and restored.round == 2
    assert "skipping checkpoint round 3" in caplog.text and "is incomplete" in caplog.text


def test_rounds_newer_than_latest_were_never_committed(store: FileStore) -> None:
    write_rounds(store, range(1, 4))
    store.put("latest", b"round-000002")  # round 3 wrote its manifest, then died

    restored = latest_checkpoint(store)

    assert restored is not None and restored.round == 2


@pytest.mark.parametrize("pointer", [b"round-000009", b"garbage"])
def test_a_dangling_or_unreadable_pointer_falls_back(store: FileStore, pointer: bytes) -> None:
    write_rounds(store, range(1, 3))
    store.put("latest", pointer)

    restored = latest_checkpoint(store)

    assert restored is not None and restored.round == 2


def test_an_empty_store_has_no_checkpoint(store: FileStore) -> None:
    assert latest_checkpoint(store) is None
    assert list_rounds(store) == []
    with pytest.raises(MissingObject, match="no checkpoint round 4"):
        read_checkpoint(store, 4)


def test_keep_last_prunes_older_rounds_after_the_pointer_moves(store: FileStore) -> None:
    write_rounds(store, range(1, 6), keep_last=2)

    assert list_rounds(store) == [4, 5]
    assert sorted(p.name for p in store.root.iterdir()) == ["latest", "round-000004", "round-000005"]
    assert latest_checkpoint(store).round == 5  # type: ignore[union-attr]


def test_keep_last_must_be_positive(store: FileStore) -> None:
    with pytest.raises(ValueError, match="keep_last"):
        write_checkpoint(store, 1, WEIGHTS, {}, {}, keep_last=0)


def test_export_final(store: FileStore) -> None:
    uri = export_final(store, WEIGHTS)

    assert uri == f"{store.uri}/final/weights.safetensors"
    assert store.list("final/") == ["final/manifest.json", "final/weights.safetensors"]
    path = store.root / "final" / "weights.safetensors"
    entry = json.loads(store.get("final/manifest.json"))["objects"]["weights.safetensors"]
    assert entry["size"] == path.stat().st_size
    assert_same_tensors(load_file(path), WEIGHTS)
    assert list_rounds(store) == []
