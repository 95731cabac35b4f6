"""Adaptive server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization").

The round's weighted-mean delta is treated as a pseudo-gradient `d` and fed to an adaptive
optimiser on the server: `m = beta1*m + (1-beta1)*d`, a second moment `v` updated by the
subclass's rule (Adagrad, Adam or Yogi), then `x = x + eta * m / (sqrt(v) + tau)`. As in the
paper there is no bias correction and `v` starts at `tau**2`. `m` and `v` carry across rounds,
so they are checkpointed.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from fedkube.strategies.base import Accumulator, Strategy, Weights, prefixed, weighted_mean

# Reddi et al.'s defaults; eta is much smaller than FedAvg's 1.0 because each coordinate moves by
# about eta whatever the size of its pseudo-gradient.
DEFAULT_ETA = 0.01
DEFAULT_BETA1 = 0.9
DEFAULT_BETA2 = 0.99
DEFAULT_TAU = 1e-3


class FedOpt(Strategy):
    """The shared first moment and step; subclasses give the second-moment rule."""

    def __init__(self, server_lr: float = DEFAULT_ETA, beta1: float = DEFAULT_BETA1,
                 beta2: float = DEFAULT_BETA2, tau: float = DEFAULT_TAU) -> None:
        super().__init__(server_lr)
        self.beta1, self.beta2, self.tau = beta1, beta2, tau
        self.m: Weights = {}
        self.v: Weights = {}

    @abstractmethod
    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The next `v` from the current one and the pseudo-gradient `d`."""

    def apply(self, weights: Weights, accumulated: Accumulator) -> Weights:
        out = {}
        for name, d in weighted_mean(accumulated).items():
            current = weights[name]
            m = self.m.get(name, np.zeros_like(d))
            v = self.v.get(name, np.full_like(d, self.tau ** 2))
            self.m[name] = m = self.beta1 * m + (1 - self.beta1) * d
            self.v[name] = v = self.second_moment(v, d)
            out[name] = (current + self.server_lr * m / (np.sqrt(v) + self.tau)).astype(current.dtype, copy=False)
        return out

    def state(self) -> tuple[dict[str, Any], Weights]:
        arrays = {f"{self.name}.m/{n}": a for n, a in self.m.items()}
        arrays.update({f"{self.name}.v/{n}": a for n, a in self.v.items()})
        return {}, arrays

    def load_state(self, scalars: dict[str, Any], arrays: Weights) -> None:
        self.m = prefixed(f"{self.name}.m/", arrays)
        self.v = prefixed(f"{self.name}.v/", arrays)
