"""The status board's JSON (metrics.json, status.json, GET /status) reuses each round's encoded text
and still says exactly what json.dumps of the live history and document would."""

from __future__ import annotations

import json
from typing import Any

from fedkube.aggregator.status import HistoryJson, StatusBoard


def entry(number: int) -> dict[str, Any]:
    return {"round": number, "status": "completed", "accuracy": None, "rejected": {},
            "participants": {"reported": [0, 1], "dropped": [], "rejected": []}, "bytes_in": 8, "bytes_out": 8}


def test_history_text_follows_appends_and_changes_in_place() -> None:
    encode, history = HistoryJson(), [entry(1)]
    assert encode([]) == "[]"
    assert encode(history) == json.dumps(history)
    history.append(entry(2))
    assert encode(history) == json.dumps(history)
    history[-1]["checkpoint_seconds"] = 0.5           # the round just published gains its checkpoint time
    history[0]["participants"]["dropped"].append(1)  # a nested change to an earlier round
    history[0]["accuracy"] = 0.9                     # a CKKS job's backfilled accuracy
    assert encode(history) == json.dumps(history)
    assert encode(history[:1]) == json.dumps(history[:1])  # a history replaced by a shorter one (a resume)


def test_the_document_text_is_the_document() -> None:
    board = StatusBoard("job", 3, phase="Running", round=2, history=[entry(1), entry(2)],
                        clients=lambda: {"joined": 2}, privacy={"epsilon": 1.5})
    assert json.loads(board.document_json()) == board.document()
    assert board.document_json() == json.dumps(board.document())
    board.history.append(entry(3))
    assert board.document_json(board.history_json(board.history)) == json.dumps(board.document())
