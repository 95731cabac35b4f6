"""A running weighted sum of client updates, fed chunk by chunk as the bytes arrive.

The aggregator never holds one array per client: each chunk is checked and folded into the
sum at once, so memory is the sum itself plus the chunks of updates still in flight. An
update found bad part-way (a NaN in a late chunk) is taken back out, up to float rounding: its
chunks are kept, as the bytes objects the transport already allocated, until it is committed.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import threadpoolctl
from scipy.linalg import blas

from fedkube.protocol.tensors import TensorSpec

# Folding a 1 MiB chunk is bound by memory, not arithmetic: extra BLAS threads only fight the
# event loop for cores (and spin-wait on a busy node), which made folds ten times slower.
threadpoolctl.threadpool_limits(1, user_api="blas")


class UpdateRejected(ValueError):
    """An update that cannot be aggregated; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


def check_weight(weight: float) -> None:
    if not np.isfinite(weight) or weight <= 0:
        raise UpdateRejected("bad_weight", f"update weight {weight} is not a positive number")


def check_specs(specs: list[TensorSpec], expected: list[TensorSpec]) -> None:
    """An update must announce exactly the expected tensors, names, dtypes and shapes."""
    if len(specs) != len(expected):
        raise UpdateRejected("wrong_shape", f"update has {len(specs)} tensors, expected {len(expected)}")
    for got, want in zip(specs, expected, strict=True):
        if got.name != want.name:
            raise UpdateRejected("wrong_shape", f"tensor {got.name!r} where {want.name!r} was expected")
        if got.dtype != want.dtype:
            raise UpdateRejected("wrong_dtype", f"tensor {got.name!r} is {got.dtype}, expected {want.dtype}")
        if got.shape != want.shape:
            raise UpdateRejected("wrong_shape",
                                 f"tensor {got.name!r} has shape {list(got.shape)}, expected {list(want.shape)}")


@functools.cache
def _largest(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).max)


def reject_non_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise UpdateRejected("non_finite", f"tensor {name!r} holds NaN or Inf")


class WeightedSum:
    """Sum over clients of `weight * update`, kept in float32 (float64 for float64 models)."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self.sums = [np.zeros(s.shape, dtype=np.result_type(s.dtype, np.float32)) for s in specs]
        self._flat = [s.reshape(-1) for s in self.sums]
        self.total_weight = 0.0
        self.count = 0

    def begin(self, weight: float) -> UpdateFold:
        check_weight(weight)
        return UpdateFold(self, weight)

    def mean(self) -> dict[str, np.ndarray]:
        """The weighted mean of the committed updates (in place: the sum is consumed)."""
        if self.count == 0:
            raise ValueError("no update was aggregated")
        for flat in self._flat:
            flat /= self.total_weight
        return {s.name: a for s, a in zip(self.specs, self.sums, strict=True)}


class UpdateFold:
    """One client's update entering a WeightedSum; commit() or abort() ends it."""

    def __init__(self, target: WeightedSum, weight: float) -> None:
        self.target = target
        self.weight = np.float32(weight)
        self._folded: list[tuple[int, slice | np.ndarray, np.ndarray]] = []
        self._scratch = np.empty(0, dtype=np.float32)

    def check_specs(self, specs: list[TensorSpec]) -> None:
        check_specs(specs, self.target.specs)

    def add(self, index: int, offset: int, chunk: bytes | memoryview) -> None:
        """Fold one raw chunk of tensor `index` (in the model's dtype) starting at byte `offset`."""
        values = np.frombuffer(chunk, dtype=self.target.specs[index].dtype)
        self.add_dense(index, offset // values.itemsize, values)

    def _scaled(self, index: int, values: np.ndarray) -> np.ndarray:
        flat = self.target._flat[index]
        if self._scratch.size < values.size or self._scratch.dtype != flat.dtype:
            self._scratch = np.empty(values.size, dtype=flat.dtype)
        scaled = self._scratch[:values.size]
        np.multiply(values, self.weight, out=scaled)
        # One reduction over the scaled chunk finds any NaN or Inf (they propagate into the sum).
        if not np.isfinite(scaled.sum(dtype=np.float64)):
            reject_non_finite(self.target.specs[index].name, values)
            raise UpdateRejected("overflow", f"tensor {self.target.specs[index].name!r} overflows when weighted")
        return scaled

    def _clean(self, values: np.ndarray) -> bool:
        """True if `weight * values` holds no NaN, Inf or overflow, shown by one BLAS pass: a NaN or Inf
        makes the sum of squares non-finite, and its root bounds every |value|. A chunk that fails
        (huge finite values can) goes through the exact check of `_scaled`."""
        dot = blas.get_blas_funcs("dot", (values,))
        return math.sqrt(dot(values, values)) * float(self.weight) < _largest(values.dtype)

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        """Fold decoded values of tensor `index` into elements `start`, `start + 1`, ..."""
        where = slice(start, start + values.size)
        segment = self.target._flat[index][where]
        if values.dtype == segment.dtype and segment.dtype.char in "fd" and self._clean(values):
            # segment += weight * values in one BLAS pass, in place, with no temporary
            blas.get_blas_funcs("axpy", (segment,))(values, segment, a=self.weight)
        else:
            segment += self._scaled(index, values)
        self._folded.append((index, where, values))

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        """Fold values at `positions` (distinct element indices) of tensor `index`; the rest are zero."""
        self.target._flat[index][positions] += self._scaled(index, values)
        self._folded.append((index, positions, values))

    def commit(self) -> None:
        self.target.total_weight += float(self.weight)
        self.target.count += 1
        self._folded.clear()

    def abort(self) -> None:
        """Take every folded chunk back out of the sum."""
        for index, where, values in reversed(self._folded):
            self.target._flat[index][where] -= values * self.weight
        self._folded.clear()
