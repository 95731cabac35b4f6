"""The Strategy interface: how a round's updates become the next global model.

A strategy decides what clients receive besides the weights (SCAFFOLD's server control
variate), which accumulator their updates (client deltas, plus any extra tensors) are folded
into as they stream in (a running weighted sum, or every update kept whole for robust rules),
and how the accumulated result becomes the next global weights. State it carries across rounds
(server-optimiser moments, control variates) is exposed for checkpoints by `state()` /
`load_state()` as JSON-able scalars plus named arrays; array names start with the strategy's
own prefix so they never collide with other state in the same checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import WeightedSum
from fedkube.aggregator.stack import UpdateStack
from fedkube.protocol.tensors import TensorSpec

Weights = dict[str, np.ndarray]
Accumulator = WeightedSum | UpdateStack


class Strategy(ABC):
    name: str
    # Sum updates exactly, whatever order they arrive in (spec.strategy.exactSum): bit-identical resume.
    exact_sum = False

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = server_lr

    def broadcast(self, weights: Weights) -> Weights:
        """What each selected client receives this round: the global weights, plus any extra tensors."""
        return weights

    def new_round(self, specs: list[TensorSpec]) -> Accumulator:
        """The accumulator this round's updates (client deltas of tensors `specs`) are folded into."""
        return WeightedSum(specs, self.exact_sum)

    @abstractmethod
    def apply(self, weights: Weights, accumulated: Accumulator) -> Weights:
        """The next global weights from the current ones and the round's accumulated updates."""

    def state(self) -> tuple[dict[str, Any], Weights]:
        """Scalars and arrays to checkpoint; stateless strategies have none."""
        return {}, {}

    def load_state(self, scalars: dict[str, Any], arrays: Weights) -> None:  # noqa: B027 (stateless default)
        """Restore what `state()` returned (after a resume); arrays of other owners are ignored."""


def step(weights: Weights, direction: Weights, lr: float) -> Weights:
    """`weights + lr * direction`, each tensor keeping its dtype."""
    out = {}
    for name, current in weights.items():
        move = direction[name] if lr == 1.0 else direction[name] * lr
        out[name] = (current + move).astype(current.dtype, copy=False)
    return out


def step_into(weights: Weights, direction: Weights, lr: float) -> Weights:
    """`weights + lr * direction`, written over `direction` (which the caller gives up) where dtypes match.

    The round's mean is consumed by its step, so the next global model can take its buffer: the
    step then allocates nothing, and the aggregator never holds three models at once.
    """
    out = {}
    for name, current in weights.items():
        move = direction[name]
        if move.dtype != current.dtype or not move.flags.writeable:
            out[name] = step({name: current}, {name: move}, lr)[name]
            continue
        if lr != 1.0:
            move *= lr
        out[name] = np.add(move, current, out=move)
    return out


def weighted_mean(accumulated: Accumulator) -> Weights:
    """The example-weighted mean of the round's updates, whichever accumulator holds them."""
    if not isinstance(accumulated, WeightedSum):
        raise TypeError(f"a weighted mean needs a WeightedSum, got {type(accumulated).__name__}")
    return accumulated.mean()


def stacked(accumulated: Accumulator) -> UpdateStack:
    if not isinstance(accumulated, UpdateStack):
        raise TypeError(f"a robust rule needs every update (UpdateStack), got {type(accumulated).__name__}")
    if accumulated.count == 0:
        raise ValueError("no update was aggregated")
    return accumulated


def prefixed(prefix: str, arrays: Weights) -> Weights:
    """The arrays whose names start with `prefix`, with the prefix taken off."""
    return {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}
