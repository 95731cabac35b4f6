"""Update compression: the client encodes its update, the aggregator decodes it chunk by chunk.

A codec turns each tensor of an update into one or more wire tensors (e.g. int8 sends a scale,
then the quantised values) and back. The wire tensors travel like any others, headers first and
in chunks, so the aggregator checks the announced headers against what the codec predicts for
the model, then decodes each chunk as it arrives and folds the decoded values straight into the
strategy's accumulator: compression changes the bytes on the wire, never the aggregator's memory.
Only the uplink is compressed; clients still receive the full-precision global model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Protocol, runtime_checkable

import numpy as np

from fedkube.aggregator.accumulate import UpdateRejected, check_specs
from fedkube.protocol.tensors import TensorSpec

Weights = dict[str, np.ndarray]


class Fold(Protocol):
    """Where decoded values go: one client's update entering an accumulator."""

    def add_dense(self, index: int, start: int, values: np.ndarray) -> None: ...

    def add_sparse(self, index: int, positions: np.ndarray, values: np.ndarray) -> None: ...


@runtime_checkable
class WireDecoder(Protocol):
    """Reads one update's wire stream into a fold; a fold whose wire format is its own (CKKS
    ciphertexts) is its own decoder."""

    fold: Fold

    def check_specs(self, specs: list[TensorSpec]) -> None: ...

    def feed(self, wire_index: int, offset: int, chunk: bytes) -> None: ...


_READS_OWN_WIRE: dict[type, bool] = {}


def reads_own_wire(fold: object) -> bool:
    """Whether `fold` is its own WireDecoder. Asked once per class: an isinstance check against a runtime
    protocol inspects the protocol's members every time, which cost more than folding a small update."""
    kind = type(fold)
    if kind not in _READS_OWN_WIRE:
        _READS_OWN_WIRE[kind] = isinstance(fold, WireDecoder)
    return _READS_OWN_WIRE[kind]


class Codec(ABC):
    kind: str
    carries_state = False  # whether encoding changes the codec (top-k's residuals): a client then keeps copies

    @abstractmethod
    def parts(self, spec: TensorSpec) -> list[TensorSpec]:
        """The wire tensors that carry tensor `spec`, in the order they are sent."""

    @abstractmethod
    def encode_tensor(self, name: str, array: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Client side: the arrays of `parts()` for one tensor (stateful codecs remember what they dropped)."""

    @abstractmethod
    def decode(self, update: UpdateDecoder, index: int, part: int, start: int, values: np.ndarray) -> None:
        """Aggregator side: one chunk (`values`, from element `start`) of wire part `part` of tensor `index`."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Codec:
        """A client keeps a copy of its codec from before each recent round, to train a round again
        (client/rewind.py): a codec that carries nothing between rounds is its own copy."""
        return self

    def wire_specs(self, specs: list[TensorSpec]) -> list[TensorSpec]:
        return [w for s in specs for w in self.parts(s)]

    def encode(self, update: Weights, seed: int) -> Weights:
        """A whole update as its wire tensors, in order; `seed` seeds what the codec draws at random."""
        rng = np.random.default_rng(seed)
        wire: Weights = {}
        for name, array in update.items():
            spec = TensorSpec(name, str(array.dtype), tuple(array.shape))
            for part, encoded in zip(self.parts(spec), self.encode_tensor(name, array, rng), strict=True):
                wire[part.name] = encoded
        return wire


class UpdateDecoder:
    """One update's wire stream turned back into folds of the model's tensors."""

    def __init__(self, codec: Codec, specs: list[TensorSpec], fold: Fold) -> None:
        self.codec, self.specs, self.fold = codec, specs, fold
        self.wire = [(i, j, w) for i, s in enumerate(specs) for j, w in enumerate(codec.parts(s))]
        self._side: dict[int, np.ndarray] = {}

    @property
    def wire_specs(self) -> list[TensorSpec]:
        return [w for _, _, w in self.wire]

    def check_specs(self, specs: list[TensorSpec]) -> None:
        """The announced headers must be exactly what this codec sends for the model."""
        check_specs(specs, self.wire_specs)

    def feed(self, wire_index: int, offset: int, chunk: bytes) -> None:
        """Decode one chunk of wire tensor `wire_index` starting at byte `offset`."""
        index, part, spec = self.wire[wire_index]
        itemsize = np.dtype(spec.dtype).itemsize
        if offset % itemsize or len(chunk) % itemsize:
            raise UpdateRejected("malformed", f"chunk of {len(chunk)} bytes at byte {offset} splits an element "
                                              f"of tensor {spec.name!r} ({spec.dtype})")
        self.codec.decode(self, index, part, offset // itemsize, np.frombuffer(chunk, dtype=spec.dtype))

    def side(self, index: int, size: int, dtype: np.dtype | type) -> np.ndarray:
        """A buffer for side information of tensor `index` (a scale, top-k indices), filled as chunks come."""
        if index not in self._side:
            self._side[index] = np.zeros(size, dtype=dtype)
        return self._side[index]
