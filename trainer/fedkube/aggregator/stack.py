"""Every update of a round kept whole, for robust aggregators (median, trimmed mean, Krum).

A robust rule compares updates with each other coordinate by coordinate or by distance, so no
running sum can stand in for them: memory is O(clients x model) in float32 (8 clients of a
20M-parameter model hold 640 MB), against O(model) for the streaming WeightedSum. That is why
robust strategies are opt-in and refused with secure aggregation, which only ever reveals a sum.
Chunks still arrive one at a time and are checked as they land; an update is kept only once its
stream is complete and committed.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.accumulate import check_specs, check_weight, rejection
from fedkube.protocol.tensors import TensorSpec


class UpdateStack:
    """The committed updates of one round, each as one flat float32 vector, plus their weights."""

    def __init__(self, specs: list[TensorSpec]) -> None:
        self.specs = specs
        sizes = [int(np.prod(s.shape, dtype=np.int64)) for s in specs]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.updates: list[np.ndarray] = []
        self.weights: list[float] = []

    @property
    def count(self) -> int:
        return len(self.updates)

    def begin(self, weight: float) -> StackFold:
        check_weight(weight)
        return StackFold(self, weight)

    def tensor(self, index: int) -> np.ndarray:
        """Tensor `index` of every update stacked: shape (clients, elements). A copy per call."""
        if not self.updates:
            raise ValueError("no update was aggregated")
        start, end = self.offsets[index], self.offsets[index + 1]
        return np.stack([u[start:end] for u in self.updates])

    def to_weights(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """A flat vector cut back into the model's named tensors."""
        return {s.name: flat[self.offsets[i]:self.offsets[i + 1]].reshape(s.shape)
                for i, s in enumerate(self.specs)}


class StackFold:
    """One client's update being written into its own vector; kept only on commit()."""

    def __init__(self, target: UpdateStack, weight: float) -> None:
        self.target, self.weight = target, weight
        self.flat = np.zeros(int(target.offsets[-1]), dtype=np.float32)

    def check_specs(self, specs: list[TensorSpec]) -> None:
        check_specs(specs, self.target.specs)

    def _checked(self, index: int, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values.sum(dtype=np.float64)):
            raise rejection(self.target.specs[index].name, values)
        return values

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None:
        base = self.target.offsets[index] + start
        self.flat[base:base + values.size] = self._checked(index, values)

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None:
        self.flat[self.target.offsets[index] + positions] = self._checked(index, values)

    def add(self, index: int, offset: int, chunk: bytes) -> None:
        values = np.frombuffer(chunk, dtype=self.target.specs[index].dtype)
        self.add_dense(index, offset // values.itemsize, values)

    def commit(self) -> None:
        self.target.updates.append(self.flat)
        self.target.weights.append(self.weight)

    def abort(self) -> None:
        """Nothing was shared with other updates, so dropping the vector is enough."""
