"""Coordinate-wise trimmed mean (Yin et al. 2018): drop the largest and smallest values, average the rest.

`trimBeta` is the fraction cut at each end: with n updates, floor(beta * n) values go from the top
and as many from the bottom of every coordinate. It tolerates up to that many Byzantine clients
and keeps more of the honest information than the median.
"""

from __future__ import annotations

import math

import numpy as np

from fedkube.strategies.robust import CoordinateWise

DEFAULT_TRIM_BETA = 0.2


class TrimmedMean(CoordinateWise):
    name = "trimmedmean"

    def __init__(self, server_lr: float = 1.0, beta: float = DEFAULT_TRIM_BETA) -> None:
        super().__init__(server_lr)
        self.beta = beta

    def combine(self, column_values: np.ndarray) -> np.ndarray:
        n = len(column_values)
        cut = min(math.floor(self.beta * n), (n - 1) // 2)  # always leave at least one value
        ordered = np.sort(column_values, axis=0)
        return ordered[cut:n - cut].mean(axis=0)
