"""A running weighted sum of client updates, fed chunk by chunk as the bytes arrive.

The aggregator never holds one array per client: each chunk is checked and folded into the
sum at once, so memory is the sum itself plus the chunks of updates still in flight. An
update found bad part-way (a NaN in a late chunk) is taken back out: its chunks are kept, as
the bytes objects the transport already allocated, until it is committed.

Updates arrive in whatever order the network delivers them, and float addition is not
associative, so a plain running sum would give every run, and every run resumed after a crash,
different last bits. The sum is therefore kept as a pair of float64 arrays, `hi + lo`
(Knuth's TwoSum): a float32 value times an integer example count is exact in float64, each
addition's rounding error is carried into `lo`, and the pair stays within about 2**-100 of the
exact sum's largest partial sum. That is far below the last bit of the float32 mean, so the
mean rounds to the same bits whatever the order: a resumed job ends bit for bit where an
uninterrupted one does. The price is 16 bytes of sum per parameter.
"""

from __future__ import annotations

import numpy as np

from fedkube.protocol.tensors import TensorSpec


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


def reject_non_finite(name: str, values: np.ndarray) -> None:
    if not np.isfinite(values).all():
        raise UpdateRejected("non_finite", f"tensor {name!r} holds NaN or Inf")


class WeightedSum:
    """Sum over clients of `weight * update`, independent of the order updates arrive in."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        self._hi = [np.zeros(s.shape, dtype=np.float64).reshape(-1) for s in specs]
        self._lo = [np.zeros(s.shape, dtype=np.float64).reshape(-1) for s in specs]
        self.total_weight = 0.0
        self.count = 0
        self._work = np.empty((3, 0), dtype=np.float64)

    def _fold(self, index: int, where: slice | np.ndarray, scaled: np.ndarray) -> None:
        """Add float64 `scaled` at elements `where` (a slice or distinct positions) of tensor `index`.

        TwoSum: `error` is exactly what rounding `hi + scaled` lost, and it is kept in `lo`.
        """
        hi = self._hi[index][where]
        if self._work.shape[1] < scaled.size:
            self._work = np.empty((3, scaled.size), dtype=np.float64)
        # The same operations in the same order as `error = (hi - (total - back)) + (scaled - back)`,
        # written into reused buffers: fresh temporaries per chunk cost more than the arithmetic.
        total, back, error = (w[:scaled.size] for w in self._work)
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
        """The running sums in the tensors' shapes, for in-place additions such as central noise.

        What is added lands in the high part only: exact to float64 rounding, plenty for noise.
        """
        return [hi.reshape(spec.shape) for spec, hi in zip(self.specs, self._hi, strict=True)]

    def begin(self, weight: float) -> UpdateFold:
        check_weight(weight)
        return UpdateFold(self, weight)

    def mean(self) -> dict[str, np.ndarray]:
        """The weighted mean of the committed updates, in float32 (float64 for float64 models).

        Computed in place in the float64 buffers, so the sum is consumed.
        """
        if self.count == 0:
            raise ValueError("no update was aggregated")
        out = {}
        for spec, hi, lo in zip(self.specs, self._hi, self._lo, strict=True):
            hi += lo
            hi /= self.total_weight
            out[spec.name] = hi.astype(np.result_type(spec.dtype, np.float32)).reshape(spec.shape)
        return out


class UpdateFold:
    """One client's update entering a WeightedSum; commit() or abort() ends it."""

    def __init__(self, target: WeightedSum, weight: float) -> None:
        self.target = target
        self.weight = np.float64(weight)
        self._folded: list[tuple[int, slice | np.ndarray, np.ndarray]] = []
        self._scratch = np.empty(0, dtype=np.float64)

    def check_specs(self, specs: list[TensorSpec]) -> None:
        check_specs(specs, self.target.specs)

    def add(self, index: int, offset: int, chunk: bytes | memoryview) -> None:
        """Fold one raw chunk of tensor `index` (in the model's dtype) starting at byte `offset`."""
        values = np.frombuffer(chunk, dtype=self.target.specs[index].dtype)
        self.add_dense(index, offset // values.itemsize, values)

    def _scaled(self, index: int, values: np.ndarray) -> np.ndarray:
        """`values * weight` in float64: exact for float32 values and integer example counts."""
        if self._scratch.size < values.size:
            self._scratch = np.empty(values.size, dtype=np.float64)
        scaled = self._scratch[:values.size]
        np.multiply(values, self.weight, out=scaled)
        # One reduction over the scaled chunk finds any NaN or Inf (they propagate into the sum).
        if not np.isfinite(scaled.sum()):
            reject_non_finite(self.target.specs[index].name, values)
            raise UpdateRejected("overflow", f"tensor {self.target.specs[index].name!r} overflows when weighted")
        return scaled

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        """Fold decoded values of tensor `index` into elements `start`, `start + 1`, ..."""
        where = slice(start, start + values.size)
        self.target._fold(index, where, self._scaled(index, values))
        self._folded.append((index, where, values))

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        """Fold values at `positions` (distinct element indices) of tensor `index`; the rest are zero."""
        self.target._fold(index, positions, self._scaled(index, values))
        self._folded.append((index, positions, values))

    def commit(self) -> None:
        self.target.total_weight += float(self.weight)
        self.target.count += 1
        self._folded.clear()

    def take_back(self, scale: float) -> None:
        """Subtract `scale` times every chunk folded so far (its weight: all of it) from the sum."""
        for index, where, values in reversed(self._folded):
            self.target._fold(index, where, -(values * np.float64(scale)))

    def abort(self) -> None:
        """Take every folded chunk back out of the sum."""
        self.take_back(self.weight)
        self._folded.clear()
