"""Coordinate-wise median (Yin et al. 2018): each coordinate moves by the median of the clients' values.

With fewer than half the clients Byzantine, the median of every coordinate lies within the range
of honest values, however large the outliers.
"""

from __future__ import annotations

import numpy as np

from fedkube.strategies.robust import CoordinateWise


class Median(CoordinateWise):
    name = "median"

    def combine(self, column_values: np.ndarray) -> np.ndarray:
        return np.median(column_values, axis=0)
