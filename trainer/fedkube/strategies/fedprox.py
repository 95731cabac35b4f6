"""FedProx (Li et al. 2020): FedAvg on the server, a proximal term in each client's objective.

The client minimises `loss + mu/2 * ||w - w_global||^2`, which keeps local models from drifting
far from the global one on heterogeneous data. The term is added on the client (see
`fedkube.client.corrections`); the server side is FedAvg's weighted mean.
"""

from __future__ import annotations

from fedkube.strategies.fedavg import FedAvg

DEFAULT_MU = 0.01


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, server_lr: float = 1.0, mu: float = DEFAULT_MU) -> None:
        super().__init__(server_lr)
        self.mu = mu
