"""fp16: every value rounded to half precision, halving float32 traffic.

Half precision keeps about 3 significant digits, plenty for one round's update; values beyond
65504 become Inf and the aggregator rejects such an update as non-finite rather than guess.
"""

from __future__ import annotations

import numpy as np

from fedkube.compression.base import Codec, UpdateDecoder
from fedkube.protocol.tensors import TensorSpec


class Fp16(Codec):
    kind = "fp16"

    def parts(self, spec: TensorSpec) -> list[TensorSpec]:
        return [TensorSpec(spec.name, "float16", spec.shape)]

    def encode_tensor(self, name: str, array: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        return [array.astype(np.float16)]

    def decode(self, update: UpdateDecoder, index: int, part: int, start: int, values: np.ndarray) -> None:
        update.fold.add_dense(index, start, values.astype(np.float32))
