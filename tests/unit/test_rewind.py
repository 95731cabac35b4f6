"""A client asked again for rounds it already trained starts them from the state it had then."""

from __future__ import annotations

import logging

import pytest

from fedkube.client.rewind import RoundRewind


def train(rewind: RoundRewind[dict[str, list[int]]], state: dict[str, list[int]], round_number: int) -> dict:
    """A stand-in for a round: start from the rewound state, then advance it in place."""
    state = rewind.start(round_number, state)
    state.setdefault("rounds", []).append(round_number)
    return state


def test_a_round_trained_again_starts_from_the_state_before_it() -> None:
    rewind: RoundRewind[dict[str, list[int]]] = RoundRewind(keep=2)
    state: dict[str, list[int]] = {}
    for r in (1, 2, 3):
        state = train(rewind, state, r)

    state = train(rewind, state, 3)  # the aggregator resumed from round 2's checkpoint
    assert state == {"rounds": [1, 2, 3]}
    state = train(rewind, state, 2)  # ... or from round 1's
    assert state == {"rounds": [1, 2]}
    state = train(rewind, state, 3)
    assert state == {"rounds": [1, 2, 3]}


def test_copies_are_kept_for_the_last_rounds_only(caplog: pytest.LogCaptureFixture) -> None:
    rewind: RoundRewind[dict[str, list[int]]] = RoundRewind(keep=2)
    state: dict[str, list[int]] = {}
    for r in (1, 2, 3, 4):
        state = train(rewind, state, r)

    assert sorted(rewind.before) == [3, 4]
    with caplog.at_level(logging.WARNING):
        state = train(rewind, state, 2)
    assert "cannot be rewound" in caplog.text and state["rounds"][-1] == 2
