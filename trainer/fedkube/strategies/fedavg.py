"""FedAvg (McMahan et al. 2017): the example-weighted mean of client updates.

Clients send deltas (local minus global weights), so the step is
`global + serverLr * mean(delta)`; with serverLr = 1 that is the weighted mean of the
clients' local models.
"""

from __future__ import annotations

from fedkube.aggregator.accumulate import WeightedSum
from fedkube.strategies.base import Strategy, Weights


class FedAvg(Strategy):
    name = "fedavg"

    def __init__(self, server_lr: float = 1.0) -> None:
        self.server_lr = server_lr

    def apply(self, weights: Weights, accumulated: WeightedSum) -> Weights:
        mean = accumulated.mean()
        out = {}
        for name, current in weights.items():
            step = mean[name]
            if self.server_lr != 1.0:
                step *= self.server_lr
            out[name] = (current + step).astype(current.dtype, copy=False)
        return out
