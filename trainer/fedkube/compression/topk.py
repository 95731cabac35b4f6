"""top-k sparsification with error feedback (Stich et al. 2018; Karimireddy et al. 2019).

Each tensor sends only its k largest-magnitude entries, `k = ceil(ratio * size)`, as sorted
element indices (`<tensor>/indices`) then their float32 values (`<tensor>/values`). What was not
sent is not lost: the client keeps it as a residual and adds it to the next round's update, so
every coordinate's mass eventually travels and training converges like the uncompressed run. The
residual lives in the client process; a restarted client starts with none.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedkube.aggregator.accumulate import UpdateRejected
from fedkube.compression.base import Codec, UpdateDecoder
from fedkube.protocol.tensors import TensorSpec

DEFAULT_RATIO = 0.05


def index_dtype(size: int) -> str:
    return "int32" if size < 2 ** 31 else "int64"


class TopK(Codec):
    kind = "topk"
    carries_state = True

    def __init__(self, ratio: float = DEFAULT_RATIO) -> None:
        self.ratio = ratio
        self.residuals: dict[str, np.ndarray] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> TopK:
        """The residuals are what this codec carries between rounds."""
        twin = TopK(self.ratio)
        twin.residuals = {name: r.copy() for name, r in self.residuals.items()}
        return twin

    def kept(self, size: int) -> int:
        return min(size, max(1, math.ceil(self.ratio * size)))

    def parts(self, spec: TensorSpec) -> list[TensorSpec]:
        size = int(np.prod(spec.shape, dtype=np.int64))
        k = self.kept(size)
        return [TensorSpec(f"{spec.name}/indices", index_dtype(size), (k,)),
                TensorSpec(f"{spec.name}/values", "float32", (k,))]

    def encode_tensor(self, name: str, array: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        corrected = array.astype(np.float32).reshape(-1)
        if name in self.residuals:
            corrected += self.residuals[name]
        k = self.kept(corrected.size)
        chosen = np.sort(np.argpartition(np.abs(corrected), corrected.size - k)[corrected.size - k:])
        values = corrected[chosen]
        corrected[chosen] = 0.0
        self.residuals[name] = corrected
        return [chosen.astype(index_dtype(corrected.size)), values]

    def decode(self, update: UpdateDecoder, index: int, part: int, start: int, values: np.ndarray) -> None:
        spec = update.specs[index]
        size = int(np.prod(spec.shape, dtype=np.int64))
        k = self.kept(size)
        indices = update.side(index, k, np.int64)
        if part == 0:
            indices[start:start + values.size] = values
            return
        if start == 0 and not (np.all(np.diff(indices) > 0) and (k == 0 or 0 <= indices[0] and indices[-1] < size)):
            raise UpdateRejected("malformed", f"top-k indices of tensor {spec.name!r} are not strictly increasing "
                                              f"element indices below {size}")
        update.fold.add_sparse(index, indices[start:start + values.size], values)
