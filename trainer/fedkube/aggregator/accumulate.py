"""A running weighted sum of client updates, fed chunk by chunk as the bytes arrive.

The aggregator never holds one array per client: each chunk is checked and folded into the
sum at once, so memory is the sum itself plus the chunks of updates still in flight. An
update that breaks off part-way is taken back out: its chunks are kept until it is committed,
the first ones as the bytes the transport already allocated, the rest in a spill file (see
journal.py). How the sum itself is kept (the model's dtype, or exact whatever the arrival
order) is a RunningSum the plan chooses.

Updates stream in side by side (spec.transport.maxConcurrentStreams), so the same elements of
the model arrive from two of them moments apart. When the sum can fold chunks together for less
than apart (FloatSum: each block of the sum is read and written once for both), a chunk waits,
up to WAIT_BYTES in all, for the other update's chunk of the same elements; one that waits too
long, or whose update ends, is folded alone. A chunk that fails its screen while folded on
another update's turn fails its own update at that update's next step.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.exact_sum import CompensatedSum
from fedkube.aggregator.float_sum import FloatSum
from fedkube.aggregator.journal import FoldJournal
from fedkube.aggregator.running_sum import RunningSum
from fedkube.protocol.tensors import TensorSpec

# Chunks held back for a partner, in all: they are the transport's own buffers, not copies.
WAIT_BYTES = 32 << 20

Region = tuple[int, int, int]  # tensor index, first element, element count


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


def rejection(name: str, values: np.ndarray) -> UpdateRejected:
    """Why a chunk that failed the sum's screen is refused."""
    if not np.isfinite(values).all():
        return UpdateRejected("non_finite", f"tensor {name!r} holds NaN or Inf")
    return UpdateRejected("overflow", f"tensor {name!r} overflows when weighted")


class WeightedSum:
    """Sum over clients of `weight * update`; `exact` makes it independent of the arrival order."""

    def __init__(self, specs: list[TensorSpec], exact: bool = False) -> None:
        self.specs = specs
        self.exact = exact
        self.store: RunningSum = CompensatedSum(specs) if exact else FloatSum(specs)
        self.total_weight = 0.0
        self.count = 0
        self.open = 0  # updates begun and neither committed nor aborted
        self._waiting: dict[Region, tuple[UpdateFold, np.ndarray]] = {}
        self._waiting_bytes = 0

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

    def add_dense(self, fold: UpdateFold, index: int, start: int, values: np.ndarray) -> None:
        """Fold a chunk now, or with another update's chunk of the same elements (see the module)."""
        region = (index, start, values.size)
        if not (self.store.folds_together and self.open > 1 and values.size):
            self._fold_one(fold, values, region)
            return
        waiting = self._waiting.get(region)
        if waiting is None:
            self._waiting[region] = (fold, values)
            fold.waiting.add(region)
            self._waiting_bytes += values.nbytes
            while self._waiting_bytes > WAIT_BYTES:
                self.fold_alone(next(iter(self._waiting)))
            return
        other, held = self._release(region)
        ok = self.store.fold_together(index, start, [(held, other.weight), (values, fold.weight)])
        other.folded(region, held, ok[0])
        fold.folded(region, values, ok[1])

    def fold_alone(self, region: Region) -> None:
        """Fold a waiting chunk without its partner."""
        self._fold_one(*self._release(region), region)

    def _fold_one(self, fold: UpdateFold, values: np.ndarray, region: Region) -> None:
        index, start, size = region
        fold.folded(region, values, self.store.fold(index, slice(start, start + size), values, fold.weight))

    def drop(self, region: Region) -> None:
        """Forget a waiting chunk: its update is being taken back, and it never reached the sum."""
        self._release(region)

    def _release(self, region: Region) -> tuple[UpdateFold, np.ndarray]:
        fold, values = self._waiting.pop(region)
        fold.waiting.discard(region)
        self._waiting_bytes -= values.nbytes
        return fold, values


class UpdateFold:
    """One client's update entering a WeightedSum; commit() or abort() ends it."""

    def __init__(self, target: WeightedSum, weight: float) -> None:
        self.target = target
        self.weight = float(weight)
        self._folded = FoldJournal()
        self.waiting: set[Region] = set()  # chunks the sum holds back for a partner
        self.failure: UpdateRejected | None = None  # a refused chunk, not yet reported
        self.ended = False
        target.open += 1

    def check_specs(self, specs: list[TensorSpec]) -> None:
        check_specs(specs, self.target.specs)

    def add(self, index: int, offset: int, chunk: bytes | memoryview) -> None:
        """Fold one raw chunk of tensor `index` (in the model's dtype) starting at byte `offset`."""
        values = np.frombuffer(chunk, dtype=self.target.specs[index].dtype)
        self.add_dense(index, offset // values.itemsize, values)

    def folded(self, region: Region, values: np.ndarray, ok: bool) -> None:
        """The sum's verdict on one chunk: kept to be taken back out later, or the update's failure."""
        if ok:
            self._folded.record(region[0], slice(region[1], region[1] + region[2]), values)
        elif self.failure is None:
            self.failure = rejection(self.target.specs[region[0]].name, values)

    def _check(self) -> None:
        """Raise a refused chunk's error once (the refused chunk is not in the sum, the rest stays)."""
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        """Fold decoded values of tensor `index` into elements `start`, `start + 1`, ..."""
        self._check()
        self.target.add_dense(self, index, start, values)
        self._check()

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        """Fold values at `positions` (distinct element indices) of tensor `index`; the rest are zero."""
        self._check()
        if not self.target.store.fold(index, positions, values, self.weight):
            raise rejection(self.target.specs[index].name, values)
        self._folded.record(index, positions, values)

    def flush(self) -> None:
        """Fold the chunks still waiting for a partner, in element order (the sum's frontier moves forward);
        raises if any chunk of the update failed."""
        for region in sorted(self.waiting):
            self.target.fold_alone(region)
        self._check()

    def commit(self) -> None:
        self.flush()
        self.target.total_weight += self.weight
        self.target.count += 1
        self._end()

    def take_back(self, scale: float) -> None:
        """Subtract `scale` times the whole update (its weight: all of it) from the sum."""
        self.flush()
        self._subtract(scale)

    def abort(self) -> None:
        """Take every folded chunk back out of the sum, and forget those still waiting."""
        for region in list(self.waiting):
            self.target.drop(region)
        self._subtract(self.weight)
        self._end()

    def _subtract(self, scale: float) -> None:
        for index, where, values in self._folded.replay():
            self.target.store.fold(index, where, values, -scale)

    def _end(self) -> None:
        if not self.ended:  # an update aborted twice (by its stream and by its round) ends once
            self.ended = True
            self.target.open -= 1
        self._folded.clear()
