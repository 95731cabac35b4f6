"""The exact running sum (`spec.strategy.exactSum`): the same mean whatever order updates arrive in.

Float addition is not associative, so a plain running sum gives every run, and every run resumed
after a crash, different last bits. This sum is kept as a pair of float64 arrays, `hi + lo`
(Knuth's TwoSum): a float32 value times an integer example count is exact in float64, each
addition's rounding error is carried into `lo`, and the pair stays within about 2**-100 of the
exact sum's largest partial sum. That is far below the last bit of the float32 mean, so the
mean rounds to the same bits whatever the order: a resumed job ends bit for bit where an
uninterrupted one does. The price is 16 bytes of sum per parameter and seven float64 passes over
each block of a chunk, in reused buffers small enough to stay in cache between passes.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.running_sum import RunningSum, sum_dtype
from fedkube.protocol.tensors import TensorSpec

# Elements per TwoSum block: its four float64 work arrays and the sum's slices fit in a core's L2 cache.
BLOCK = 16384


class CompensatedSum(RunningSum):
    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self._hi = [np.zeros(s.shape, dtype=np.float64).reshape(-1) for s in specs]
        self._lo = [np.zeros(s.shape, dtype=np.float64).reshape(-1) for s in specs]
        self._work = np.empty((4, 0), dtype=np.float64)

    def fold(self, index: int, where: slice | np.ndarray, values: np.ndarray, weight: float) -> bool:
        if self._work.shape[1] < min(values.size, BLOCK):
            self._work = np.empty((4, min(values.size, BLOCK)), dtype=np.float64)
        scaled = self._work[0]
        for start in range(0, values.size, BLOCK):  # one check of the whole chunk before any of it is added
            part = values[start:start + BLOCK]
            np.multiply(part, np.float64(weight), out=scaled[:part.size])
            # One reduction finds any NaN or Inf (they propagate into it).
            if not np.isfinite(scaled[:part.size].sum()) and not np.isfinite(scaled[:part.size]).all():
                return False
        for start in range(0, values.size, BLOCK):
            part = values[start:start + BLOCK]
            if isinstance(where, slice):
                at: slice | np.ndarray = slice(where.start + start, where.start + start + part.size)
            else:
                at = where[start:start + BLOCK]
            self._add(index, at, part, weight)
        return True

    def _add(self, index: int, where: slice | np.ndarray, values: np.ndarray, weight: float) -> None:
        """TwoSum on one block, `error = (hi - (total - back)) + (scaled - back)`: exactly what rounding
        `hi + scaled` lost, kept in `lo`. Blocks small enough to stay in cache across the six passes."""
        scaled, total, back, error = (w[:values.size] for w in self._work)
        np.multiply(values, np.float64(weight), out=scaled)  # exact for float32 values and integer weights
        hi = self._hi[index][where]
        np.add(hi, scaled, out=total)
        np.subtract(total, hi, out=back)
        np.subtract(total, back, out=error)
        np.subtract(hi, error, out=error)
        np.subtract(scaled, back, out=back)
        np.add(error, back, out=error)
        self._hi[index][where] = total
        self._lo[index][where] += error

    @property
    def sums(self) -> list[np.ndarray]:
        """What is added here lands in the high part only: exact to float64 rounding, plenty for noise."""
        return [hi.reshape(spec.shape) for spec, hi in zip(self.specs, self._hi, strict=True)]

    def mean(self, total_weight: float) -> list[np.ndarray]:
        out = []
        for spec, hi, lo in zip(self.specs, self._hi, self._lo, strict=True):
            hi += lo
            hi /= total_weight
            out.append(hi.astype(sum_dtype(spec.dtype)).reshape(spec.shape))
        return out
