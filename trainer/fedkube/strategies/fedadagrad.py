"""FedAdagrad (Reddi et al. 2021): the second moment sums every squared pseudo-gradient."""

from __future__ import annotations

import numpy as np

from fedkube.strategies.fedopt import FedOpt


class FedAdagrad(FedOpt):
    name = "fedadagrad"

    def second_moment(self, v: np.ndarray, d: np.ndarray) -> np.ndarray:
        return v + d * d
