"""A client asked again for rounds it already trained starts them from the state it had then."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedkube.client.rewind import RoundRewind
from fedkube.compression import Codec, build_codec
from fedkube.spec.model import CompressionSpec


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


def test_a_rewound_codec_keeps_only_what_it_carries() -> None:
    plain, topk = build_codec(CompressionSpec(kind="none")), build_codec(CompressionSpec(kind="topk", ratio=0.5))
    kept: RoundRewind[Codec] = RoundRewind(keep=2)
    kept.start(1, plain)
    assert kept.before[1] is plain  # it carries nothing between rounds: no copy to keep
    rewind: RoundRewind[Codec] = RoundRewind(keep=2)
    update = {"w": np.array([4.0, -3.0, 2.0, 1.0], np.float32)}
    topk = rewind.start(1, topk)
    topk.encode(update, 0)
    after_round_1 = topk.residuals["w"].copy()
    topk = rewind.start(2, topk)
    topk.encode(update, 1)  # round 2 moves the residuals on
    topk = rewind.start(2, topk)  # ... and is asked again: it starts from round 1's residuals
    np.testing.assert_array_equal(topk.residuals["w"], after_round_1)
