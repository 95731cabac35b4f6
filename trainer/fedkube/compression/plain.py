"""No compression: each tensor travels as itself, in the model's dtype."""

from __future__ import annotations

import numpy as np

from fedkube.compression.base import Codec, UpdateDecoder, Weights
from fedkube.protocol.tensors import TensorSpec


class Plain(Codec):
    kind = "none"

    def encode(self, update: Weights, seed: int) -> Weights:
        """The update is its own wire: no random numbers, nor a spec for each tensor, every round."""
        return update

    def parts(self, spec: TensorSpec) -> list[TensorSpec]:
        return [spec]

    def encode_tensor(self, name: str, array: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return [array]

    def decode(self, update: UpdateDecoder, index: int, part: int, start: int, values: np.ndarray) -> None:
        update.fold.add_dense(index, start, values)
