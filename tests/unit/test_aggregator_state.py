"""Gathering the aggregator's state for a checkpoint and putting it back, and checking resumed weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from fedkube.aggregator.state import ResumeError, ScalarState, gather, restore, weights_in_model_order


class Moments:
    """A part with scalars and arrays, like a server optimiser."""

    def __init__(self) -> None:
        self.step, self.m = 0, {"w": np.zeros(3)}

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"step": self.step}, dict(self.m)

    def load_state(self, scalars: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.step, self.m = scalars.get("step", 0), arrays


class Accountant:
    """A part with scalars only, like the privacy accountant."""

    def __init__(self) -> None:
        self.events: list[dict[str, float]] = []

    def state(self) -> dict[str, Any]:
        return {"events": self.events}

    def load_state(self, state: dict[str, Any]) -> None:
        self.events = state.get("events", [])


def test_gather_then_restore_round_trips_every_part_under_its_own_name() -> None:
    moments, accountant = Moments(), Accountant()
    moments.step, moments.m = 4, {"w": np.arange(3.0)}
    accountant.events = [{"q": 0.5, "sigma": 1.1}]

    scalars, arrays = gather({"strategy": moments, "privacy": ScalarState(accountant)})
    fresh_moments, fresh_accountant = Moments(), Accountant()
    restore({"strategy": fresh_moments, "privacy": ScalarState(fresh_accountant)}, scalars, arrays)

    assert scalars == {"strategy": {"step": 4}, "privacy": {"events": [{"q": 0.5, "sigma": 1.1}]}}
    assert list(arrays) == ["strategy/w"]
    assert fresh_moments.step == 4 and np.array_equal(fresh_moments.m["w"], np.arange(3.0))
    assert fresh_accountant.events == accountant.events


def test_a_part_the_checkpoint_lacks_starts_empty() -> None:
    accountant = Accountant()
    accountant.events = [{"q": 1.0}]

    restore({"privacy": ScalarState(accountant)}, {"strategy": {"step": 2}}, {"strategy/w": np.zeros(1)})

    assert accountant.events == []


MODEL = {"conv.weight": np.zeros((2, 3), np.float32), "conv.bias": np.zeros(2, np.float32)}


def test_resumed_weights_come_back_in_the_models_order() -> None:
    stored = {"conv.bias": np.ones(2, np.float32), "conv.weight": np.ones((2, 3), np.float32)}

    weights = weights_in_model_order(MODEL, stored, "file:///c/round-000002")

    assert list(weights) == ["conv.weight", "conv.bias"]


@pytest.mark.parametrize("stored, complaint", [
    ({"conv.weight": np.zeros((2, 3), np.float32)}, "missing ['conv.bias']"),
    ({**MODEL, "extra": np.zeros(1, np.float32)}, "unexpected ['extra']"),
    ({**MODEL, "conv.bias": np.zeros(3, np.float32)}, "other shape or dtype ['conv.bias']"),
    ({**MODEL, "conv.bias": np.zeros(2, np.float64)}, "other shape or dtype ['conv.bias']"),
])
def test_weights_that_do_not_fit_the_model_are_refused_naming_the_checkpoint(
        stored: dict[str, np.ndarray], complaint: str) -> None:
    with pytest.raises(ResumeError) as caught:
        weights_in_model_order(MODEL, stored, "s3://b/job/round-000002")

    message = str(caught.value)
    assert message.startswith("the weights in s3://b/job/round-000002 do not fit this job's model")
    assert complaint in message
