"""FedAvg over CKKS ciphertexts: the aggregator adds encrypted updates it cannot read.

`CiphertextSum` has the accumulator interface of `WeightedSum` (begin / check_specs / add /
commit / abort), so the coordinator streams encrypted updates exactly like plaintext ones.
Memory is one running sum plus the ciphertext being received: a ciphertext's chunks are
buffered only until it is whole, then added and dropped (kept by reference for abort()).
"""

from __future__ import annotations

import math

import numpy as np
import tenseal as ts

from fedkube.aggregator.accumulate import UpdateRejected
from fedkube.he.params import CkksParams
from fedkube.he.wire import LAYOUT, TOTAL_WEIGHT, ciphertext_name, encode_layout
from fedkube.protocol.tensors import TensorSpec
from fedkube.strategies.base import Strategy, Weights

# Serialised ciphertexts are compressed, so sizes vary; none exceeds two uncompressed
# polynomials (8 bytes per coefficient per modulus) plus framing.
FRAMING_BYTES = 4096


def max_ciphertext_bytes(params: CkksParams) -> int:
    return 2 * params.poly_modulus_degree * len(params.coeff_mod_bits) * 8 + FRAMING_BYTES


class CiphertextSum:
    """Sum of the clients' encrypted, example-weighted updates, and of their example counts."""

    def __init__(self, context: ts.Context, params: CkksParams, layout: list[TensorSpec]) -> None:
        if context.is_private():
            raise ValueError("the aggregator must hold a public CKKS context, not the secret key")
        self.context, self.params, self.layout = context, params, layout
        num_values = sum(math.prod(s.shape) for s in layout)
        count = -(-num_values // params.slots)
        self.specs = [TensorSpec(ciphertext_name(i), "uint8", (0,)) for i in range(count)]
        # How many values each ciphertext packs: full ones, then the remainder.
        self.lengths = [min(params.slots, num_values - i * params.slots) for i in range(count)]
        self.sums: list[ts.CKKSVector | None] = [None] * count
        self.total_weight = 0.0
        self.count = 0

    def begin(self, weight: float) -> CiphertextFold:
        if not np.isfinite(weight) or weight <= 0:
            raise UpdateRejected("bad_weight", f"update weight {weight} is not a positive number")
        return CiphertextFold(self, weight)

    def encrypted(self) -> Weights:
        """The aggregate as it travels and is checkpointed: ciphertext bytes plus the total weight."""
        if self.count == 0:
            raise ValueError("no update was aggregated")
        out = {spec.name: np.frombuffer(total.serialize(), dtype=np.uint8)
               for spec, total in zip(self.specs, self.sums, strict=True) if total is not None}
        out[TOTAL_WEIGHT] = np.array([self.total_weight])
        out[LAYOUT] = encode_layout(self.layout)
        return out


class CiphertextFold:
    """One client's encrypted update entering a CiphertextSum."""

    def __init__(self, target: CiphertextSum, weight: float) -> None:
        self.target, self.weight = target, weight
        self._buffer = bytearray()
        self._added: list[tuple[int, ts.CKKSVector]] = []

    def check_specs(self, specs: list[TensorSpec]) -> None:
        expected = self.target.specs
        if len(specs) != len(expected):
            raise UpdateRejected("wrong_shape", f"update has {len(specs)} ciphertexts, the model needs {len(expected)}")
        limit = max_ciphertext_bytes(self.target.params)
        for got, want in zip(specs, expected, strict=True):
            if got.name != want.name:
                raise UpdateRejected("wrong_shape", f"tensor {got.name!r} where a CKKS update has {want.name!r}")
            if got.dtype != "uint8" or len(got.shape) != 1:
                raise UpdateRejected("wrong_dtype", f"ciphertext {got.name!r} must be a 1-D uint8 tensor")
            if not 0 < got.nbytes <= limit:
                raise UpdateRejected("wrong_shape", f"ciphertext {got.name!r} has {got.nbytes} bytes, "
                                                    f"expected 1 to {limit} for these CKKS parameters")
        self.specs = specs

    @property
    def fold(self) -> CiphertextFold:
        """Ciphertexts need no codec: this fold reads its own wire stream (see WireDecoder)."""
        return self

    def feed(self, index: int, offset: int, chunk: bytes) -> None:
        self._buffer += chunk
        if offset + len(chunk) < self.specs[index].nbytes:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        ciphertext = self._parse(index, data)
        if ciphertext.size() != self.target.lengths[index]:
            raise UpdateRejected("wrong_shape", f"ciphertext {self.specs[index].name!r} packs {ciphertext.size()} "
                                                f"values, expected {self.target.lengths[index]}")
        sums = self.target.sums
        try:
            if sums[index] is None:  # the sum starts as its own copy, so abort() can still subtract
                sums[index] = self._parse(index, data)
            else:
                sums[index].add_(ciphertext)
        except (ValueError, RuntimeError) as exc:  # other parameters, scale or size
            raise UpdateRejected("malformed", f"ciphertext {self.specs[index].name!r} cannot be added: {exc}") from exc
        self._added.append((index, ciphertext))

    def _parse(self, index: int, data: bytes) -> ts.CKKSVector:
        try:
            return ts.ckks_vector_from(self.target.context, data)
        except (ValueError, RuntimeError) as exc:
            raise UpdateRejected("malformed", f"ciphertext {self.specs[index].name!r} does not parse: {exc}") from exc

    def commit(self) -> None:
        self.target.total_weight += self.weight
        self.target.count += 1
        self._added.clear()

    def abort(self) -> None:
        for index, ciphertext in reversed(self._added):
            self.target.sums[index].sub_(ciphertext)
        self._added.clear()


class CkksFedAvg(Strategy):
    """FedAvg whose global model exists on the server only as the encrypted sum of a round."""

    name = "fedavg"

    def __init__(self, context: ts.Context, params: CkksParams, layout: list[TensorSpec]) -> None:
        self.context, self.params, self.layout = context, params, layout

    def new_round(self, specs: list[TensorSpec]) -> CiphertextSum:  # type: ignore[override]
        return CiphertextSum(self.context, self.params, self.layout)

    def apply(self, weights: Weights, accumulated: CiphertextSum) -> Weights:  # type: ignore[override]
        return accumulated.encrypted()
