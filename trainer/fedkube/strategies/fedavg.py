"""FedAvg (McMahan et al. 2017): the example-weighted mean of client updates.

Clients send deltas (local minus global weights), so the step is
`global + serverLr * mean(delta)`; with serverLr = 1 that is the weighted mean of the
clients' local models.
"""

from __future__ import annotations

from fedkube.strategies.base import Accumulator, Strategy, Weights, step_into, weighted_mean


class FedAvg(Strategy):
    name = "fedavg"

    def apply(self, weights: Weights, accumulated: Accumulator) -> Weights:
        return step_into(weights, weighted_mean(accumulated), self.server_lr)
