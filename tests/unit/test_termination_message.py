"""The aggregator's final status document fits in a pod's termination message."""

from __future__ import annotations

import json

from fedkube.aggregator.status import termination_message


def test_long_histories_keep_their_newest_rounds_within_the_limit() -> None:
    history = [{"round": r, "accuracy": 0.5, "loss": 1.0, "participants": list(range(50))} for r in range(1, 101)]
    document = {"phase": "Succeeded", "round": 100, "rounds": 100, "checkpoint": {"round": 100}, "history": history}
    text = termination_message(document, limit=4096)
    assert len(text.encode()) <= 4096
    decoded = json.loads(text)
    assert decoded["checkpoint"] == {"round": 100} and decoded["phase"] == "Succeeded"
    rounds = [h["round"] for h in decoded["history"]]
    assert rounds and rounds[-1] == 100 and rounds == list(range(rounds[0], 101))


def test_a_short_document_is_kept_whole() -> None:
    document = {"phase": "Failed", "round": 2, "history": [{"round": 1}]}
    assert json.loads(termination_message(document)) == document
