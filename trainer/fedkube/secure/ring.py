"""Fixed point in the ring Z_(2^bits): what a client's weighted update becomes before it is masked.

A client's weighted update becomes integers so masks can hide it exactly: each coordinate is
clipped to [-clipRange, clipRange], scaled by 2^fractionBits / clipRange and rounded, then
multiplied by the client's integer weight (its example count, at most 2^WEIGHT_BITS - 1); the
weight itself rides along as one more coordinate, so the weighted mean needs no plaintext
weights. The fraction bits are what is left of `bits` after the sign, the weight and
log2(clients): the sum of every client's value can never wrap around, by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedkube.secure import MIN_FRACTION_BITS, WEIGHT_BITS, fraction_bits, min_bits

_BLOCK = 1 << 16  # elements encoded at a time: the float64 scratch stays in cache


@dataclass(frozen=True)
class Ring:
    """Z_(2^bits) with the fixed-point code of one job (`clients`: the most that can ever be summed)."""

    bits: int
    clip_range: float
    clients: int

    def __post_init__(self) -> None:
        if self.fraction_bits < MIN_FRACTION_BITS:
            raise ValueError(f"{self.bits} bits leave {self.fraction_bits} fraction bits for {self.clients} clients; "
                             f"at least {min_bits(self.clients)} bits are needed")

    @property
    def fraction_bits(self) -> int:
        return fraction_bits(self.bits, self.clients)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint32 if self.bits <= 32 else np.uint64)

    @property
    def signed(self) -> np.dtype:
        """The signed integer of the ring's width: a code as two's complement."""
        return np.dtype(np.int32 if self.bits <= 32 else np.int64)

    @property
    def step(self) -> float:
        """The value of one unit in the last place."""
        return self.clip_range / (1 << self.fraction_bits)

    def reduce(self, vector: np.ndarray) -> np.ndarray:
        """In place: vector mod 2^bits (numpy already wraps at the dtype's width, a multiple of it)."""
        if self.bits < 8 * self.dtype.itemsize:
            vector &= self.dtype.type((1 << self.bits) - 1)
        return vector

    def encode(self, update: np.ndarray | Sequence[np.ndarray], weight: int,
               into: np.ndarray | None = None) -> np.ndarray:
        """round(weight * clip(update) * 2^fraction_bits / clipRange), then the weight: len(update) + 1 elements.

        `update` is one array or the model's tensors in order, read in place (no model-sized
        concatenation). The code is added, in the ring, to `into` when given (a precomputed mask:
        encoding and masking become one pass), else to zeros. Weighting before rounding keeps each
        client's error at half a unit whatever its weight. The arithmetic is float64 (exact integers
        up to 2^53) in cache-sized blocks, so no model-sized temporary is ever made: on a busy machine
        fresh model-sized arrays cost more than the arithmetic.
        """
        weight = min(int(weight), (1 << WEIGHT_BITS) - 1)
        if weight < 1:
            raise ValueError(f"the weight must be a positive example count, got {weight}")
        parts = [a.reshape(-1) for a in ([update] if isinstance(update, np.ndarray) else update)]
        size = sum(part.size for part in parts)
        out = np.zeros(size + 1, dtype=self.dtype) if into is None else into
        if out.shape != (size + 1,) or out.dtype != self.dtype:
            raise ValueError(f"an encoded update of {size} parameters is {size + 1} {self.dtype} elements; "
                             f"got {out.size} {out.dtype}")
        scale = weight * float(1 << self.fraction_bits) / self.clip_range
        limit = weight * float(1 << self.fraction_bits)
        fixed = np.empty(_BLOCK, dtype=np.float64)
        signed = np.empty(_BLOCK, dtype=self.signed)  # |code| < 2^(bits - 1): it fits, negatives in two's complement
        offset = 0
        for part in parts:
            for start in range(0, part.size, _BLOCK):
                n = min(_BLOCK, part.size - start)
                np.multiply(part[start:start + n], scale, out=fixed[:n], dtype=np.float64)
                np.clip(fixed[:n], -limit, limit, out=fixed[:n])
                np.rint(fixed[:n], out=signed[:n], casting="unsafe")  # rounded straight into the integers
                target = out[offset + start:offset + start + n]
                target += signed[:n].view(self.dtype)  # wraps mod 2^(dtype bits), as the ring wants
            offset += part.size
        out[-1] += self.dtype.type(weight)
        return self.reduce(out)

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """The sum of weighted updates (float64) and the sum of weights, from a ring sum."""
        values = np.empty(total.size - 1, dtype=np.float64)
        return values, self.decode_into(total, [values])

    def decode_into(self, total: np.ndarray, targets: Sequence[np.ndarray]) -> int:
        """The sum of weighted updates written into `targets` (contiguous float arrays, in order, as many
        elements as the sum has parameters; no model-sized temporary); returns the sum of weights."""
        shift = 8 * self.dtype.itemsize - self.bits
        values = total.view(self.signed)  # two's complement: the centred representative of each sum
        if shift:  # only the low `bits` bits count: sign-extend them
            values = (total << self.dtype.type(shift)).view(self.signed) >> self.signed.type(shift)
        flats = [target.reshape(-1) for target in targets]
        if sum(flat.size for flat in flats) != values.size - 1:
            raise ValueError(f"a ring sum of {values.size - 1} parameters does not fill targets of "
                             f"{sum(flat.size for flat in flats)}")
        start = 0
        for flat in flats:
            np.multiply(values[start:start + flat.size], self.step, out=flat)
            start += flat.size
        return int(values[-1])

    def sum_error_bound(self, total_weight: int) -> float:
        """How far a decoded weighted sum can be from the exact one (rounding only, clipping aside).

        Each client contributes at most half a unit, and there are at most `total_weight` clients.
        """
        return total_weight * self.step / 2
