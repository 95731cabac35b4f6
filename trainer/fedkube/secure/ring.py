"""Fixed point in the ring Z_(2^bits): what a client's weighted update becomes before it is masked.

A client's weighted update becomes integers so masks can hide it exactly: each coordinate is
clipped to [-clipRange, clipRange], scaled by 2^fractionBits / clipRange and rounded, then
multiplied by the client's integer weight (its example count, at most 2^WEIGHT_BITS - 1); the
weight itself rides along as one more coordinate, so the weighted mean needs no plaintext
weights. The fraction bits are what is left of `bits` after the sign, the weight and
log2(clients): the sum of every client's value can never wrap around, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedkube.secure import MIN_FRACTION_BITS, WEIGHT_BITS, fraction_bits, min_bits


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
    def step(self) -> float:
        """The value of one unit in the last place."""
        return self.clip_range / (1 << self.fraction_bits)

    def reduce(self, vector: np.ndarray) -> np.ndarray:
        """In place: vector mod 2^bits (numpy already wraps at the dtype's width, a multiple of it)."""
        if self.bits < 8 * self.dtype.itemsize:
            vector &= self.dtype.type((1 << self.bits) - 1)
        return vector

    def encode(self, update: np.ndarray, weight: int) -> np.ndarray:
        """round(weight * clip(update) * 2^fraction_bits / clipRange), then the weight: len(update) + 1 elements.

        Weighting before rounding keeps each client's error at half a unit whatever its weight.
        Done in float64 (exact integers up to 2^53) in place, with one buffer per dtype, because
        on a busy machine fresh model-sized arrays cost more than the arithmetic.
        """
        weight = min(int(weight), (1 << WEIGHT_BITS) - 1)
        if weight < 1:
            raise ValueError(f"the weight must be a positive example count, got {weight}")
        scale = weight * float(1 << self.fraction_bits) / self.clip_range
        limit = weight * float(1 << self.fraction_bits)
        fixed = np.multiply(update.reshape(-1), scale, dtype=np.float64)
        np.clip(fixed, -limit, limit, out=fixed)
        np.rint(fixed, out=fixed)
        out = np.empty(update.size + 1, dtype=self.dtype)
        out[:-1] = fixed.astype(np.int64)  # negatives wrap into the ring as two's complement
        out[-1] = weight
        return self.reduce(out)

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """The sum of weighted updates (float64) and the sum of weights, from a ring sum."""
        values = self.reduce(total.copy()).astype(np.int64)
        half = 1 << (self.bits - 1)
        values[values >= half] -= 1 << self.bits
        return values[:-1] * self.step, int(values[-1])

    def sum_error_bound(self, total_weight: int) -> float:
        """How far a decoded weighted sum can be from the exact one (rounding only, clipping aside).

        Each client contributes at most half a unit, and there are at most `total_weight` clients.
        """
        return total_weight * self.step / 2
