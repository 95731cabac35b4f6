"""The default running sum: the model's dtype, folded in place by BLAS as chunks arrive.

Per chunk of a dense float32 update, two single-threaded BLAS passes over a zero-copy view of the
received bytes and no temporary: a screen (the root of the sum of squares bounds every |value| and
is not finite if any value is not), then `sum += weight * values` (axpy). The chunk is still in
cache for the second pass, so the memory traffic is the chunk once and the sum's slice read and
written, against a copy's read and write. Memory: the sum, 1x the model.

Float addition is not associative, so the result's last bits depend on the order updates arrive
in: two runs agree within float32 rounding (relative error of a few units in 2**-24 per tensor
element, growing at most linearly with the number of updates), not bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import threadpoolctl
from scipy.linalg import blas

from fedkube.aggregator.running_sum import RunningSum, all_finite, sum_dtype
from fedkube.protocol.tensors import TensorSpec

# A chunk's fold is bound by memory, not arithmetic: extra BLAS threads only fight the event loop
# for cores (and spin-wait on a busy node), which made folds up to ten times slower.
threadpoolctl.threadpool_limits(1, user_api="blas")


class FloatSum(RunningSum):
    def __init__(self, specs: list[TensorSpec]) -> None:
        self._sums = [np.zeros(s.shape, dtype=sum_dtype(s.dtype)) for s in specs]
        self._flat = [a.reshape(-1) for a in self._sums]
        self._blas = [blas.get_blas_funcs(("dot", "axpy"), (flat,)) for flat in self._flat]
        self._largest = [float(np.finfo(flat.dtype).max) for flat in self._flat]

    def fold(self, index: int, where: slice | np.ndarray, values: np.ndarray, weight: float) -> bool:
        flat = self._flat[index]
        if not values.size:  # BLAS refuses empty vectors, and there is nothing to add
            return True
        if isinstance(where, slice) and values.dtype == flat.dtype:
            dot, axpy = self._blas[index]
            # One pass clears a normal chunk; only one that fails the screen is checked value by value.
            if not math.sqrt(dot(values, values)) * abs(weight) < self._largest[index] and \
                    not all_finite(values, weight, flat.dtype):
                return False
            axpy(values, flat[where], a=weight)
            return True
        if not all_finite(values, weight, flat.dtype):  # sparse positions, or a narrower dtype (float16)
            return False
        flat[where] += values.astype(flat.dtype, copy=False) * flat.dtype.type(weight)
        return True

    @property
    def sums(self) -> list[np.ndarray]:
        return self._sums

    def mean(self, total_weight: float) -> list[np.ndarray]:
        for flat in self._flat:
            flat /= total_weight
        return self._sums
