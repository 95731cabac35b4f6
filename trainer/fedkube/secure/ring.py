"""Fixed point in the ring Z_(2^bits), and the PRG that expands a seed into a mask over it.

A client's weighted update becomes integers so masks can hide it exactly: each coordinate is
clipped to [-clipRange, clipRange], scaled by 2^fractionBits / clipRange and rounded, then
multiplied by the client's integer weight (its example count, at most 2^WEIGHT_BITS - 1); the
weight itself rides along as one more coordinate, so the weighted mean needs no plaintext
weights. The fraction bits are what is left of `bits` after the sign, the weight and
log2(clients): the sum of every client's value can never wrap around, by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

WEIGHT_BITS = 16
MIN_FRACTION_BITS = 8
DEFAULT_BITS = 32
DEFAULT_CLIP_RANGE = 1.0
SEED_BYTES = 32
_PRG_BLOCK = 1 << 18  # elements per keystream block: cache-sized, independent of the model
_ZERO_NONCE = bytes(16)


def fraction_bits(bits: int, clients: int) -> int:
    """Resolution left after the sign, the weight and the headroom for `clients` summands."""
    return bits - 1 - WEIGHT_BITS - math.ceil(math.log2(max(clients, 1)))


def min_bits(clients: int) -> int:
    return MIN_FRACTION_BITS + 1 + WEIGHT_BITS + math.ceil(math.log2(max(clients, 1)))


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
        """weight * fixed_point(clip(update)), then the weight: len(update) + 1 ring elements."""
        weight = min(int(weight), (1 << WEIGHT_BITS) - 1)
        if weight < 1:
            raise ValueError(f"the weight must be a positive example count, got {weight}")
        clipped = np.clip(update.astype(np.float64, copy=False), -self.clip_range, self.clip_range)
        fixed = np.rint(clipped * (1 << self.fraction_bits) / self.clip_range).astype(np.int64)
        fixed *= weight
        out = np.empty(update.size + 1, dtype=self.dtype)
        out[:-1] = fixed.astype(self.dtype)  # two's complement: negatives wrap into the ring
        out[-1] = weight
        return self.reduce(out)

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """The sum of weighted updates (float64) and the sum of weights, from a ring sum."""
        values = self.reduce(total.copy()).astype(np.int64)
        half = 1 << (self.bits - 1)
        values[values >= half] -= 1 << self.bits
        return values[:-1] * self.step, int(values[-1])

    def sum_error_bound(self, total_weight: int) -> float:
        """How far a decoded weighted sum can be from the exact one (rounding only, clipping aside)."""
        return total_weight * self.step / 2


def add_prg(vector: np.ndarray, seed: bytes, sign: int = 1) -> None:
    """vector += sign * PRG(seed), elementwise mod 2^(dtype bits); PRG = AES-256-CTR keystream.

    The keystream is generated block by block into one reused buffer and added in place, so
    masking runs at memory speed and needs no second model-sized array.
    """
    if len(seed) != SEED_BYTES:
        raise ValueError(f"a mask seed is {SEED_BYTES} bytes")
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
    itemsize = vector.dtype.itemsize
    block = min(_PRG_BLOCK, vector.size)
    zeros = memoryview(bytes(block * itemsize))
    buffer = bytearray(block * itemsize + 15)  # update_into wants room for one extra AES block
    for start in range(0, vector.size, block):
        count = min(block, vector.size - start)
        encryptor.update_into(zeros[:count * itemsize], buffer)
        keystream = np.frombuffer(buffer, dtype=vector.dtype, count=count)
        target = vector[start:start + count]
        if sign > 0:
            target += keystream
        else:
            target -= keystream
