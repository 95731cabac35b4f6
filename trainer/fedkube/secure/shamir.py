"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

A secret of up to 64 bytes (an X25519 private key, a mask seed) is the constant term of a
random polynomial of degree t - 1; party x holds the point (x, f(x)). Any t points give f(0)
back by Lagrange interpolation; t - 1 points are consistent with every possible secret, so
they reveal nothing. The Mersenne prime 2^521 - 1 is larger than any 64-byte secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # 521 bits
MAX_SECRET_BYTES = 64


def split(secret: bytes, threshold: int, xs: Iterable[int]) -> dict[int, bytes]:
    """Shares of `secret` for the parties at the non-zero points `xs`; any `threshold` of them recover it."""
    xs = list(xs)
    if len(secret) > MAX_SECRET_BYTES:
        raise ValueError(f"a secret of {len(secret)} bytes does not fit the field (at most {MAX_SECRET_BYTES})")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} needs between 1 and {len(xs)} (the number of shares)")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    return {x: _evaluate(coefficients, x).to_bytes(SHARE_BYTES, "big") for x in xs}


def _evaluate(coefficients: list[int], x: int) -> int:
    value = 0
    for c in reversed(coefficients):
        value = (value * x + c) % PRIME
    return value


def interpolate_at_zero(points: Mapping[int, int]) -> int:
    """f(0) of the lowest-degree polynomial through `points` (Lagrange)."""
    total = 0
    for xi, yi in points.items():
        numerator, denominator = 1, 1
        for xj in points:
            if xj != xi:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        total = (total + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    return total


def combine(shares: Mapping[int, bytes], threshold: int, length: int) -> bytes:
    """The `length`-byte secret from at least `threshold` shares; fewer is refused, never guessed."""
    if len(shares) < threshold:
        raise ValueError(f"{len(shares)} shares cannot recover a {threshold}-of-n secret")
    chosen = dict(list(shares.items())[:threshold])
    value = interpolate_at_zero({x: int.from_bytes(y, "big") for x, y in chosen.items()})
    if value >= 1 << (8 * length):
        raise ValueError("the shares are inconsistent: they do not recover a secret of the expected size")
    return value.to_bytes(length, "big")
