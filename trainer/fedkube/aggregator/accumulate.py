"""A running weighted sum of client updates, fed chunk by chunk as the bytes arrive.

The aggregator never holds one array per client: each chunk is checked and folded into the
sum at once, so memory is the sum itself plus the chunks of updates still in flight. An
update that breaks off part-way is taken back out: its chunks are kept until it is committed,
the first ones as the bytes the transport already allocated, the rest in a spill file (see
journal.py). How the sum itself is kept (the model's dtype, or exact whatever the arrival
order) is a RunningSum the plan chooses.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.exact_sum import CompensatedSum
from fedkube.aggregator.float_sum import FloatSum
from fedkube.aggregator.journal import FoldJournal
from fedkube.aggregator.running_sum import RunningSum
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
    """Sum over clients of `weight * update`; `exact` makes it independent of the arrival order."""

    def __init__(self, specs: list[TensorSpec], exact: bool = False) -> None:
        self.specs = specs
        self.exact = exact
        self.store: RunningSum = CompensatedSum(specs) if exact else FloatSum(specs)
        self.total_weight = 0.0
        self.count = 0

    @property
    def sums(self) -> list[np.ndarray]:
        """The running sums in the tensors' shapes, for in-place additions such as central noise."""
        return self.store.sums

    def begin(self, weight: float) -> UpdateFold:
        check_weight(weight)
        return UpdateFold(self, weight)

    def mean(self) -> dict[str, np.ndarray]:
        """The weighted mean of the committed updates, in float32 (float64 for float64 models).

        Computed in place, so the sum is consumed.
        """
        if self.count == 0:
            raise ValueError("no update was aggregated")
        means = self.store.mean(self.total_weight)
        return {spec.name: mean for spec, mean in zip(self.specs, means, strict=True)}


class UpdateFold:
    """One client's update entering a WeightedSum; commit() or abort() ends it."""

    def __init__(self, target: WeightedSum, weight: float) -> None:
        self.target = target
        self.weight = float(weight)
        self._folded = FoldJournal()

    def check_specs(self, specs: list[TensorSpec]) -> None:
        check_specs(specs, self.target.specs)

    def add(self, index: int, offset: int, chunk: bytes | memoryview) -> None:
        """Fold one raw chunk of tensor `index` (in the model's dtype) starting at byte `offset`."""
        values = np.frombuffer(chunk, dtype=self.target.specs[index].dtype)
        self.add_dense(index, offset // values.itemsize, values)

    def _fold(self, index: int, where: slice | np.ndarray, values: np.ndarray) -> None:
        if not self.target.store.fold(index, where, values, self.weight):
            name = self.target.specs[index].name
            reject_non_finite(name, values)
            raise UpdateRejected("overflow", f"tensor {name!r} overflows when weighted")
        self._folded.record(index, where, values)

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        """Fold decoded values of tensor `index` into elements `start`, `start + 1`, ..."""
        self._fold(index, slice(start, start + values.size), values)

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        """Fold values at `positions` (distinct element indices) of tensor `index`; the rest are zero."""
        self._fold(index, positions, values)

    def commit(self) -> None:
        self.target.total_weight += self.weight
        self.target.count += 1
        self._folded.clear()

    def take_back(self, scale: float) -> None:
        """Subtract `scale` times every chunk folded so far (its weight: all of it) from the sum."""
        for index, where, values in self._folded.replay():
            self.target.store.fold(index, where, values, -scale)

    def abort(self) -> None:
        """Take every folded chunk back out of the sum."""
        self.take_back(self.weight)
        self._folded.clear()
