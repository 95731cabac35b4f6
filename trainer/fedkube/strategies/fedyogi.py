"""FedYogi (Reddi et al. 2021): like FedAdam, but `v` moves additively towards `d**2`.

`v - (1 - beta2) * d**2 * sign(v - d**2)` changes `v` by at most `(1 - beta2) * d**2` a round,
so a burst of large pseudo-gradients cannot inflate the denominator as fast as in Adam.
"""

from __future__ import annotations

import numpy as np

from fedkube.strategies.fedopt import FedOpt


class FedYogi(FedOpt):
    name = "fedyogi"

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        squared = d * d
        return v - (1 - self.beta2) * squared * np.sign(v - squared)
