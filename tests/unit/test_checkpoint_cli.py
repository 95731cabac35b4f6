"""`fedkube checkpoints ls | show | export` on a file:// store (the s3:// side is in tests/integration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from fedkube.checkpoint import export_final, write_checkpoint
from fedkube.checkpoint_cli import split_location
from fedkube.cli import main
from fedkube.stores import FileStore

WEIGHTS = {"fc.weight": np.arange(12, dtype=np.float32).reshape(3, 4), "fc.bias": np.ones(3, np.float32)}


def weights_of(round: int) -> dict[str, np.ndarray]:
    return {name: value * round for name, value in WEIGHTS.items()}


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    """Rounds 2 and 3 kept (keepLast 2), and a final export."""
    store = FileStore(f"file://{tmp_path}/ckpt")
    for r in (1, 2, 3):
        history = [{"round": h, "status": "completed", "accuracy": h / 10, "loss": 1 / h} for h in range(1, r + 1)]
        write_checkpoint(store, r, weights_of(r), {"strategy/m": np.zeros(2)},
                         {"round": r, "history": history, "strategy": {"step": r}}, keep_last=2)
    export_final(store, weights_of(3))
    return store


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["checkpoints", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("location, expected", [
    ("s3://b/p", ("s3://b/p", None)),
    ("s3://b/p/round-000012", ("s3://b/p", "round-000012")),
    ("s3://b/p/round-12/", ("s3://b/p", "round-000012")),
    ("file:///x/final", ("file:///x", "final")),
    ("file:///x/finals", ("file:///x/finals", None)),
])
def test_split_location(location: str, expected: tuple[str, str | None]) -> None:
    assert split_location(location) == expected


def test_ls_lists_rounds_marks_latest_and_names_the_final_model(store: FileStore, capsys) -> None:
    code, out, _ = run(capsys, "ls", store.uri)

    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["ROUND", "CREATED", "SIZE", "STATUS"]
    assert [line.split()[0] for line in lines[1:3]] == ["2", "3"]
    assert lines[1].endswith(" ok") and lines[2].endswith(" ok (latest)")
    assert lines[3] == f"final model: {store.uri}/final/weights.safetensors"


def test_ls_verify_finds_an_altered_object_and_fails(store: FileStore, capsys) -> None:
    path = store.root / "round-000002" / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))

    quick, quick_out, _ = run(capsys, "ls", store.uri)
    code, out, _ = run(capsys, "ls", "--verify", store.uri)

    assert quick == 0 and "UNUSABLE" not in quick_out  # only manifests are read without --verify
    assert code == 1
    (line,) = [line for line in out.splitlines() if line.split()[0] == "2"]
    assert "UNUSABLE: checkpoint round-000002: " in line and f"{path.name} has sha256" in line
    assert "ok (verified) (latest)" in out


def test_ls_shows_an_incomplete_round(store: FileStore, capsys) -> None:
    store.delete("round-000003/manifest.json")

    code, out, _ = run(capsys, "ls", store.uri)

    assert code == 0
    assert f"UNUSABLE: checkpoint round 3 is incomplete: {store.uri}/round-000003/manifest.json is missing" in out


def test_ls_of_an_empty_store(tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "ls", f"file://{tmp_path}")

    assert (code, out) == (0, f"no checkpoints at file://{tmp_path}\n")


def test_show_verifies_and_describes_a_round(store: FileStore, capsys) -> None:
    code, out, _ = run(capsys, "show", f"{store.uri}/round-2")

    assert code == 0
    assert out.splitlines()[0] == f"{store.uri}/round-000002: verified against its manifest"
    assert "round: 2" in out and "model: 2 tensors, 15 parameters (F32)" in out
    assert "history: 2 rounds; last: round=2, status=completed, accuracy=0.2, loss=0.5" in out
    assert 'strategy: {"step": 2}' in out


def test_show_defaults_to_latest_and_speaks_json(store: FileStore, capsys) -> None:
    code, out, _ = run(capsys, "show", "--json", store.uri)

    doc = json.loads(out)
    assert code == 0
    assert doc["uri"] == f"{store.uri}/round-000003" and doc["round"] == 3 and doc["verified"] is True
    assert doc["history"]["rounds"] == [1, 2, 3]
    assert set(doc["objects"]) == {"weights.safetensors", "state.safetensors", "state.json"}


def test_show_final(store: FileStore, capsys) -> None:
    code, out, _ = run(capsys, "show", f"{store.uri}/final")

    assert code == 0 and "model: 2 tensors, 15 parameters" in out and "history" not in out


def test_show_refuses_a_damaged_round_naming_the_object(store: FileStore, capsys) -> None:
    path = store.root / "round-000003" / "state.json"
    path.write_bytes(path.read_bytes()[:-5])

    code, out, err = run(capsys, "show", store.uri)

    assert code == 1 and out == ""
    assert err.startswith(f"error: checkpoint round-000003: {store.uri}/round-000003/state.json has ")
    assert "truncated or partly written" in err


@pytest.mark.parametrize("args, expected", [
    (["--round", "2"], weights_of(2)),
    ([], weights_of(3)),
    (["--round", "final"], weights_of(3)),
])
def test_export_writes_verified_weights(store: FileStore, tmp_path: Path, capsys,
                                        args: list[str], expected: dict) -> None:
    target = tmp_path / "out" / "model.safetensors"

    code, out, _ = run(capsys, "export", store.uri, *args, "--to", str(target))

    assert code == 0 and out.startswith(f"{store.uri}/") and f"-> {target}" in out
    exported = load_file(target)
    assert exported.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(exported[name], value)


def test_export_of_a_damaged_or_missing_round_leaves_no_file(store: FileStore, tmp_path: Path, capsys) -> None:
    path = store.root / "round-000003" / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-1])
    target = tmp_path / "model.safetensors"

    damaged, _, damaged_err = run(capsys, "export", store.uri, "--round", "3", "--to", str(target))
    missing, _, missing_err = run(capsys, "export", f"{store.uri}/round-9", "--to", str(target))

    assert damaged == 1 and "weights.safetensors has" in damaged_err
    assert missing == 1 and missing_err == f"error: no checkpoint round-000009 at {store.uri}/round-000009\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_bad_uri_or_round_is_refused(capsys) -> None:
    code, _, err = run(capsys, "ls", "http://example.com/x")
    assert code == 1 and err.startswith("error: unsupported store URI 'http://example.com/x'")
    with pytest.raises(SystemExit):
        main(["checkpoints", "export", "file:///x", "--round", "last", "--to", "m.safetensors"])
    assert "expected a round number or 'final', not 'last'" in capsys.readouterr().err
