"""Where a WeightedSum keeps its running sum: one mechanism per file behind this interface.

`FloatSum` (the default) sums in the model's dtype, in place, with 1x the model as memory; its
last bits depend on the order updates arrive in. `CompensatedSum` (`spec.strategy.exactSum`)
does not: a resumed or repeated job ends bit for bit where an uninterrupted one does, for 16
bytes per parameter and several times the time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class RunningSum(ABC):
    """Per-tensor sums of `weight * values`, folded chunk by chunk."""

    # Whether fold_together() costs less than one fold() per part: worth holding a chunk back for.
    folds_together = False

    @abstractmethod
    def fold(self, index: int, where: slice | np.ndarray, values: np.ndarray, weight: float) -> bool:
        """Add `weight * values` at elements `where` (a slice or distinct positions) of tensor `index`.

        Returns False when a weighted value is NaN or infinite, before any such value reaches the
        sum: it could never be taken back out. The sum is left as it was (within the rounding of
        any part of the chunk a sum added and took back out, as FloatSum does block by block).
        """

    def fold_together(self, index: int, start: int, parts: list[tuple[np.ndarray, float]]) -> list[bool]:
        """Fold several updates' chunks of the same elements (`start`, `start + 1`, ...) of tensor `index`.

        Returns, per part, what fold() would have: a part that fails leaves nothing in the sum.
        """
        return [self.fold(index, slice(start, start + values.size), values, weight) for values, weight in parts]

    @property
    @abstractmethod
    def sums(self) -> list[np.ndarray]:
        """The running sums in the tensors' shapes, writable in place (central noise, SecAgg+'s sum)."""

    @abstractmethod
    def mean(self, total_weight: float) -> list[np.ndarray]:
        """The sums divided by `total_weight`, in the model's dtype (float32 at least); consumes the sums."""


def sum_dtype(dtype: str | np.dtype) -> np.dtype:
    """The dtype a mean comes out in: the model's, but never narrower than float32."""
    return np.result_type(dtype, np.float32)


def all_finite(values: np.ndarray, weight: float, dtype: np.dtype) -> bool:
    """Whether every `weight * value` is finite in `dtype`: the value-by-value check a fast screen falls back to."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(values).all() and np.isfinite(values.astype(dtype) * weight).all())
