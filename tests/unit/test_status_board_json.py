"""The status board's JSON (metrics.json, status.json, GET /status) is kept as the history grows and
still says exactly what json.dumps of the live history and document would, through any sequence of
appends, changes to the open round, amendments of earlier rounds and a resume."""

from __future__ import annotations

import copy
import json
import pickle
import random
from typing import Any

import pytest

from fedkube.aggregator.history import History
from fedkube.aggregator.status import StatusBoard
from fedkube.he.session import backfill_client_evaluation


def entry(number: int, rng: random.Random | None = None) -> dict[str, Any]:
    rng = rng or random.Random(number)
    return {"round": number, "status": rng.choice(["completed", "completed", "abandoned"]),
            "accuracy": rng.choice([None, round(rng.random(), 4)]), "loss": None, "rejected": {},
            "participants": {"reported": [0, 1], "dropped": [], "rejected": []},
            "bytes_in": rng.randrange(1000), "bytes_out": rng.randrange(1000)}


def expected_document(board: StatusBoard, history: list[dict[str, Any]]) -> dict[str, Any]:
    """The document as it was computed before the history kept its totals: from scratch."""
    last = history[-1] if history else {}
    evaluated = next((h for h in reversed(history) if h.get("accuracy") is not None), {})
    return {"job": board.job, "phase": board.phase, "round": board.round, "rounds": board.rounds,
            "message": board.message, "clients": board.clients(),
            "metrics": {"accuracy": evaluated.get("accuracy"), "loss": evaluated.get("loss"),
                        "bytes_in": sum(h["bytes_in"] for h in history),
                        "bytes_out": sum(h["bytes_out"] for h in history),
                        "round_bytes_in": last.get("bytes_in"), "round_bytes_out": last.get("bytes_out"),
                        "compression_ratio": last.get("compression_ratio")},
            "checkpoint": board.checkpoint, "history": history}


def assert_published(board: StatusBoard, model: list[dict[str, Any]]) -> None:
    """What the aggregator writes (metrics.json, status.json) and serves (GET /status)."""
    history = board.history.parts()
    assert b"".join(history).decode() == json.dumps(model)
    document = json.dumps(expected_document(board, model))
    assert b"".join(board.document_parts(history)).decode() == document == json.dumps(board.document())
    del history
    assert board.history.text() == json.dumps(model) and board.document_json() == document


@pytest.mark.parametrize("seed", range(8))
def test_published_texts_follow_random_changes(seed: int) -> None:
    rng = random.Random(seed)
    board = StatusBoard("job", 100, phase="Running", clients=lambda: {"joined": 2}, checkpoint={"round": 0})
    model: list[dict[str, Any]] = []  # what the history holds, kept apart as plain dicts
    for number in range(1, 120):
        step = rng.random()
        if step < 0.45 or not model:
            new = entry(number, rng)
            board.history.append(new)
            model.append(copy.deepcopy(new))
            if rng.random() < 0.5:  # the round loop fills in the round just appended
                new["checkpoint_seconds"] = model[-1]["checkpoint_seconds"] = number / 100
                new["participants"]["dropped"].append(number)
                model[-1]["participants"]["dropped"].append(number)
        elif step < 0.9:
            index = rng.randrange(len(model)) if rng.random() < 0.5 else rng.randrange(max(0, len(model) - 3),
                                                                                       len(model))
            fields = rng.choice([{"accuracy": round(rng.random(), 4), "loss": 0.5}, {"accuracy": None},
                                 {"bytes_in": rng.randrange(1000)}, {"epsilon": 1.5, "bytes_out": 7}])
            board.history.amend(index - len(model) if rng.random() < 0.3 else index, **fields)
            model[index].update(fields)
        else:  # a resume: the history comes back from a checkpoint's JSON
            board.history = History(json.loads(json.dumps({"history": list(board.history)}, sort_keys=True))["history"])
            model = json.loads(json.dumps(model, sort_keys=True))
        board.round = len(model)
        if rng.random() < 0.7:  # several changes may come between two publishes
            assert_published(board, model)
    assert_published(board, model)


def test_a_resumed_history_goes_on_with_its_totals() -> None:
    board = StatusBoard("job", 10)
    for number in range(1, 6):
        board.history.append(entry(number))
        board.history.text()
    board.history.amend(1, accuracy=0.75, bytes_in=5000)
    saved = json.loads(json.dumps({"history": list(board.history)}, sort_keys=True))["history"]
    resumed = StatusBoard("job", 10, history=History(saved))
    assert resumed.document_json() == json.dumps(expected_document(resumed, saved))
    assert resumed.document()["metrics"] == board.document()["metrics"]
    for b in (board, resumed):
        b.history.append(entry(6) | {"accuracy": None})
        b.history.amend(-1, checkpoint_seconds=0.25)
        b.history.amend(4, accuracy=0.5)
    assert resumed.document()["metrics"] == board.document()["metrics"]
    assert json.loads(resumed.document_json()) == json.loads(board.document_json())
    assert resumed.document_json() == json.dumps(resumed.document())


def test_settled_rounds_refuse_changes_in_place() -> None:
    history = History([entry(1), entry(2)])
    history[-1]["accuracy"] = 0.5  # the open round may still be filled in
    text = history.text()
    with pytest.raises(TypeError, match="History.append and .amend"):
        history[0]["accuracy"] = 0.9
    with pytest.raises(TypeError):
        history[0]["participants"]["dropped"].append(3)
    with pytest.raises(TypeError):
        history[0].update(loss=1.0)
    with pytest.raises(TypeError):
        history.extend([entry(3)])
    with pytest.raises(TypeError):
        history[1] = entry(3)
    assert history.text() == text == json.dumps(history)
    held = history.parts()  # a publish's parts, kept past the next change: refused, not written stale
    history.append(entry(3))
    with pytest.raises(BufferError):
        history.parts()
    with pytest.raises(BufferError):
        history.amend(0, accuracy=0.9)
    del held
    assert history.text() == json.dumps(history) and history[0]["accuracy"] == entry(1)["accuracy"]
    text = history.text()
    copied = copy.deepcopy(history)
    assert copied == history and pickle.loads(pickle.dumps(history)) == history
    assert copied.text() == text


def test_ckks_backfill_amends_the_round_that_produced_the_model() -> None:
    history = History([entry(1) | {"status": "completed", "accuracy": None},
                       entry(2) | {"status": "abandoned"}, entry(3) | {"status": "completed"}])
    before = history.text()
    backfill_client_evaluation(history, [(10, {"global_accuracy": 0.5, "global_loss": 2.0}),
                                         (30, {"global_accuracy": 0.9, "global_loss": 1.0})])
    assert history[0]["accuracy"] == pytest.approx(0.8) and history[0]["loss"] == pytest.approx(1.25)
    assert history.text() == json.dumps(history) != before
