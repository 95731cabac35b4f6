"""The default running sum: the model's dtype, folded in place by BLAS as chunks arrive.

A dense float32 chunk is folded block by block, two single-threaded BLAS passes per block over a
zero-copy view of the received bytes and no temporary: a screen (the root of the sum of squares
bounds every |value| and is not finite if any value is not), then `sum += weight * values`
(axpy). A block and the sum's slice fit in a core's L2 cache together, so the axpy reads the block
the screen just brought in: the memory traffic is the chunk once and the sum's slice read and
written, against a copy's read and write. (A whole 1 MiB wire chunk and its slice overflow L2, so
the axpy would fetch much of the chunk again.) Memory: the sum, 1x the model.

A non-finite value never reaches the sum: the blocks of its chunk already added are taken back
out, as an aborted update's chunks are, which leaves the sum as it was within float32 rounding.

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

# Bytes per screened block: the block and the sum's slice (2 x 512 KiB) stay in a 2 MiB L2 cache.
BLOCK_BYTES = 512 * 1024


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
            return self._fold_dense(index, where.start, values, weight)
        if not all_finite(values, weight, flat.dtype):  # sparse positions, or a narrower dtype (float16)
            return False
        flat[where] += values.astype(flat.dtype, copy=False) * flat.dtype.type(weight)
        return True

    def _fold_dense(self, index: int, start: int, values: np.ndarray, weight: float) -> bool:
        flat = self._flat[index]
        dot, axpy = self._blas[index]
        largest, scale = self._largest[index], abs(weight)
        step = BLOCK_BYTES // values.itemsize
        for at in range(0, values.size, step):
            block = values[at:at + step]
            # One pass clears a normal block; only one that fails the screen is checked value by value.
            if not math.sqrt(dot(block, block)) * scale < largest and not all_finite(block, weight, flat.dtype):
                if at:
                    axpy(values[:at], flat[start:start + at], a=-weight)
                return False
            axpy(block, flat[start + at:start + at + block.size], a=weight)
        return True

    @property
    def sums(self) -> list[np.ndarray]:
        return self._sums

    def mean(self, total_weight: float) -> list[np.ndarray]:
        for flat in self._flat:
            flat /= total_weight
        return self._sums
