"""The exact running sum (`spec.strategy.exactSum`): the same mean whatever order updates arrive in.

Float addition is not associative, so a plain running sum gives every run, and every run resumed
after a crash, different last bits. This sum is kept as a pair of float64 arrays, `hi + lo`
(Knuth's TwoSum): a float32 value times an integer example count is exact in float64, each
addition's rounding error is carried into `lo`, and the pair stays within about 2**-100 of the
exact sum's largest partial sum. That is far below the last bit of the float32 mean, so the
mean rounds to the same bits whatever the order: a resumed job ends bit for bit where an
uninterrupted one does. The price is 16 bytes of sum per parameter and six float64 passes per
chunk, all into buffers reused from chunk to chunk.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.running_sum import RunningSum, sum_dtype
from fedkube.protocol.tensors import TensorSpec


class CompensatedSum(RunningSum):
    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self._hi = [np.zeros(s.shape, dtype=np.float64).reshape(-1) for s in specs]
        self._lo = [np.zeros(s.shape, dtype=np.float64).reshape(-1) for s in specs]
        self._work = np.empty((4, 0), dtype=np.float64)

    def fold(self, index: int, where: slice | np.ndarray, values: np.ndarray, weight: float) -> bool:
        if self._work.shape[1] < values.size:
            self._work = np.empty((4, values.size), dtype=np.float64)
        scaled, total, back, error = (w[:values.size] for w in self._work)
        np.multiply(values, np.float64(weight), out=scaled)  # exact for float32 values and integer weights
        # One reduction finds any NaN or Inf (they propagate into it) before anything reaches the sum.
        if not np.isfinite(scaled.sum()) and not np.isfinite(scaled).all():
            return False
        hi = self._hi[index][where]
        # TwoSum, `error = (hi - (total - back)) + (scaled - back)`: exactly what rounding `hi + scaled`
        # lost, kept in `lo`. Fresh temporaries per chunk would cost more than the arithmetic.
        np.add(hi, scaled, out=total)
        np.subtract(total, hi, out=back)
        np.subtract(total, back, out=error)
        np.subtract(hi, error, out=error)
        np.subtract(scaled, back, out=back)
        np.add(error, back, out=error)
        self._hi[index][where] = total
        self._lo[index][where] += error
        return True

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
