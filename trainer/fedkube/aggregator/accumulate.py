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



@functools.cache
def _largest(dtype: np.dtype) -> float:
    return float(np.finfo(dtype).max)


class UpdateRejected(ValueError):
    """An update that cannot be aggregated; `reason` is a short label for metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(detail)


class WeightedSum:
    """Sum over clients of `weight * update`, kept in float32 (float64 for float64 models)."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self.sums = [np.zeros(s.shape, dtype=np.result_type(s.dtype, np.float32)) for s in specs]
        self._flat = [s.reshape(-1) for s in self.sums]
        self.total_weight = 0.0
        self.count = 0

    def begin(self, weight: float) -> UpdateFold:
        if not np.isfinite(weight) or weight <= 0:
            raise UpdateRejected("bad_weight", f"update weight {weight} is not a positive number")
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
        self._folded: list[tuple[int, int, np.ndarray]] = []

    def check_specs(self, specs: list[TensorSpec]) -> None:
        """The update must announce exactly the model's tensors, names, dtypes and shapes."""
        expected = self.target.specs
        if len(specs) != len(expected):
            raise UpdateRejected("wrong_shape", f"update has {len(specs)} tensors, the model has {len(expected)}")
        for got, want in zip(specs, expected, strict=True):
            if got.name != want.name:
                raise UpdateRejected("wrong_shape", f"tensor {got.name!r} where the model has {want.name!r}")
            if got.dtype != want.dtype:
                raise UpdateRejected("wrong_dtype", f"tensor {got.name!r} is {got.dtype}, expected {want.dtype}")
            if got.shape != want.shape:
                raise UpdateRejected("wrong_shape",
                                     f"tensor {got.name!r} has shape {list(got.shape)}, expected {list(want.shape)}")

    def add(self, index: int, offset: int, chunk: bytes | memoryview) -> None:
        """Fold one chunk of tensor `index` starting at byte `offset`."""
        name = self.target.specs[index].name
        values = np.frombuffer(chunk, dtype=self.target.specs[index].dtype)
        start = offset // values.itemsize
        segment = self.target._flat[index][start:start + values.size]
        if values.dtype != segment.dtype:  # e.g. float16 updates into a float32 sum
            self._check_exactly(name, values, segment.dtype)
            segment += values.astype(segment.dtype) * self.weight
        else:  # two BLAS passes and no temporaries: a screen, then segment += weight * values in place
            dot, axpy = blas.get_blas_funcs(("dot", "axpy"), (segment,))
            # A NaN or Inf makes the sum of squares non-finite, and its root bounds every |value|, so
            # one pass clears a normal chunk; only a chunk that fails it is checked value by value.
            if not math.sqrt(dot(values, values)) * float(self.weight) < _largest(segment.dtype):
                self._check_exactly(name, values, segment.dtype)
            axpy(values, segment, a=self.weight)
        self._folded.append((index, start, values))

    def _check_exactly(self, name: str, values: np.ndarray, dtype: np.dtype) -> None:
        """Reject NaN, Inf and values that overflow when weighted, before any of them reaches the sum."""
        if not np.isfinite(values).all():
            raise UpdateRejected("non_finite", f"tensor {name!r} holds NaN or Inf")
        with np.errstate(over="ignore"):
            if not np.isfinite(values.astype(dtype) * self.weight).all():
                raise UpdateRejected("overflow", f"tensor {name!r} overflows when weighted")

    def commit(self) -> None:
        self.target.total_weight += float(self.weight)
        self.target.count += 1
        self._folded.clear()

    def abort(self) -> None:
        """Take every folded chunk back out of the sum."""
        for index, start, values in reversed(self._folded):
            segment = self.target._flat[index][start:start + values.size]
            segment -= values * self.weight
        self._folded.clear()
