"""SCAFFOLD (Karimireddy et al. 2020): control variates correct client drift on non-IID data.

The server keeps a control variate `c` (an estimate of the global gradient) and sends it with the
weights, as extra tensors named `scaffold.c/<tensor>`. Each client keeps its own variate `c_i`
across rounds and trains with every gradient corrected by `c - c_i`, so its steps follow the
global direction rather than its own data's. After training it sets `c_i+` to the mean raw
gradient it saw during the round (the paper's option II, computed exactly rather than from the
weight change, so it holds for any local optimiser) and returns its weight delta together with
`c_i+ - c_i` under the same `scaffold.c/` names. The server then steps
`x += serverLr * mean(delta)` and `c += (|S| / N) * mean(c_i+ - c_i)`, means weighted by
example count like FedAvg's.

Only sums of updates are needed, so SCAFFOLD streams like FedAvg (O(model) memory). A client
that restarts starts again from `c_i = 0`, the paper's initial value. Float buffers (e.g.
BatchNorm statistics) carry a variate too; it is never used in training and costs little.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import WeightedSum
from fedkube.protocol.tensors import TensorSpec
from fedkube.strategies.base import Accumulator, Strategy, Weights, prefixed, step, weighted_mean

VARIATE = "scaffold.c/"


def split_variates(tensors: Weights) -> tuple[Weights, Weights]:
    """Received tensors split into (model weights, server control variate by tensor name)."""
    weights = {n: a for n, a in tensors.items() if not n.startswith(VARIATE)}
    return weights, prefixed(VARIATE, tensors)


def with_variates(update: Weights, variates: Weights) -> Weights:
    """A client's update with its variate change appended under the wire names."""
    return {**update, **{VARIATE + n: a for n, a in variates.items()}}


class Scaffold(Strategy):
    name = "scaffold"

    def __init__(self, num_clients: int, server_lr: float = 1.0) -> None:
        super().__init__(server_lr)
        self.num_clients = num_clients
        self.c: Weights = {}

    def broadcast(self, weights: Weights) -> Weights:
        if not self.c:
            self.c = {n: np.zeros_like(a) for n, a in weights.items()}
        return with_variates(weights, self.c)

    def new_round(self, specs: list[TensorSpec]) -> Accumulator:
        return WeightedSum(specs + [TensorSpec(VARIATE + s.name, s.dtype, s.shape) for s in specs], self.exact_sum)

    def apply(self, weights: Weights, accumulated: Accumulator) -> Weights:
        participation = accumulated.count / self.num_clients
        delta, variate_change = split_variates(weighted_mean(accumulated))
        self.c = step(self.c, variate_change, participation)
        return step(weights, delta, self.server_lr)

    def state(self) -> tuple[dict[str, Any], Weights]:
        return {}, with_variates({}, self.c)

    def load_state(self, scalars: dict[str, Any], arrays: Weights) -> None:
        self.c = prefixed(VARIATE, arrays)
