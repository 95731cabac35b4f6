"""What the Byzantine-robust rules share: every update kept whole, and a rule over them.

Robust rules ignore example counts on purpose: a client that lies about its count must not buy
itself more say. They need each update in plaintext and all of them at once (see
`fedkube.aggregator.stack` for the memory this costs), so validation refuses them together with
secure aggregation.
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np

from fedkube.aggregator.stack import UpdateStack
from fedkube.protocol.tensors import TensorSpec
from fedkube.strategies.base import Accumulator, Strategy, Weights, stacked, step


class RobustStrategy(Strategy):
    def new_round(self, specs: list[TensorSpec]) -> Accumulator:
        return UpdateStack(specs)

    @abstractmethod
    def aggregate(self, updates: UpdateStack) -> np.ndarray:
        """The round's robust aggregate of the updates, as one flat float32 vector."""

    def apply(self, weights: Weights, accumulated: Accumulator) -> Weights:
        updates = stacked(accumulated)
        return step(weights, updates.to_weights(self.aggregate(updates)), self.server_lr)


class CoordinateWise(RobustStrategy):
    """Rules that take each coordinate on its own; computed tensor by tensor to bound the copies."""

    @abstractmethod
    def combine(self, column_values: np.ndarray) -> np.ndarray:
        """(clients, elements) -> (elements,)"""

    def aggregate(self, updates: UpdateStack) -> np.ndarray:
        return np.concatenate([self.combine(updates.tensor(i)).astype(np.float32)
                               for i in range(len(updates.specs))])
