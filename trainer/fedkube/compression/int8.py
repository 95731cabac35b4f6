"""int8: one float32 scale per tensor, then each value quantised to 8 bits by stochastic rounding.

`scale = max|x| / 127` and `q = floor(x / scale + u)` with `u` uniform in [0, 1): the decoded
`q * scale` equals `x` in expectation, so the quantisation error averages out over clients and
rounds instead of biasing the model (plain rounding would always drop small coordinates).
The scale travels first (`<tensor>/scale`), then the int8 values under the tensor's own name:
about 4x less traffic than float32.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.accumulate import UpdateRejected
from fedkube.compression.base import Codec, UpdateDecoder
from fedkube.protocol.tensors import TensorSpec

LEVELS = 127


class Int8(Codec):
    kind = "int8"

    def parts(self, spec: TensorSpec) -> list[TensorSpec]:
        return [TensorSpec(f"{spec.name}/scale", "float32", (1,)), TensorSpec(spec.name, "int8", spec.shape)]

    def encode_tensor(self, name: str, array: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        x = array.astype(np.float32)
        peak = float(np.abs(x).max()) if x.size else 0.0
        scale = peak / LEVELS if peak > 0 else 1.0
        q = np.floor(x / scale + rng.random(x.shape, dtype=np.float32))
        return [np.array([scale], np.float32), np.clip(q, -LEVELS, LEVELS).astype(np.int8)]

    def decode(self, update: UpdateDecoder, index: int, part: int, start: int, values: np.ndarray) -> None:
        if part == 0:
            scale = float(values[0])
            if not np.isfinite(scale) or scale < 0:
                raise UpdateRejected("non_finite", f"tensor {update.specs[index].name!r} has scale {scale}")
            update.side(index, 1, np.float32)[0] = scale
            return
        scale = update.side(index, 1, np.float32)[0]
        update.fold.add_dense(index, start, values.astype(np.float32) * scale)
