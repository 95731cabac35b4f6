"""The Strategy interface: how a round's updates become the next global model.

A strategy chooses the accumulator updates are folded into as they stream in (FedAvg needs
only a running weighted sum) and turns the accumulated result into the next global weights.
State it carries across rounds (server-optimiser moments, control variates) is exposed for
checkpoints as JSON-able scalars plus named arrays.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import WeightedSum
from fedkube.protocol.tensors import TensorSpec

Weights = dict[str, np.ndarray]


class Strategy(ABC):
    name: str

    def new_round(self, specs: list[TensorSpec]) -> WeightedSum:
        """The accumulator this round's updates (client deltas) are folded into."""
        return WeightedSum(specs)

    @abstractmethod
    def apply(self, weights: Weights, accumulated: WeightedSum) -> Weights:
        """The next global weights from the current ones and the round's accumulated updates."""

    def state(self) -> tuple[dict[str, Any], Weights]:
        """Scalars and arrays to checkpoint; stateless strategies have none."""
        return {}, {}

    def load_state(self, scalars: dict[str, Any], arrays: Weights) -> None:  # noqa: B027 (stateless default)
        """Restore what `state()` returned (after a resume)."""
