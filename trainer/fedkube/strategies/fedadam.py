"""FedAdam (Reddi et al. 2021): the second moment is an exponential average of squared pseudo-gradients."""

from __future__ import annotations

import numpy as np

from fedkube.strategies.fedopt import FedOpt


class FedAdam(FedOpt):
    name = "fedadam"

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1 - self.beta2) * d * d
