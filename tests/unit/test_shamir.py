"""Shamir t-of-n over GF(2^521 - 1): any t shares recover the secret, fewer never do."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedkube.secure import shamir


@st.composite
def sharings(draw: st.DrawFn) -> tuple[bytes, int, dict[int, bytes]]:
    n = draw(st.integers(2, 9))
    t = draw(st.integers(1, n))
    secret = draw(st.binary(min_size=1, max_size=64))
    xs = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    return secret, t, shamir.split(secret, t, xs)


@settings(max_examples=60, deadline=None)
@given(sharings(), st.randoms(use_true_random=False))
def test_any_t_shares_recover_the_secret(sharing, random) -> None:
    secret, t, shares = sharing
    chosen = dict(random.sample(sorted(shares.items()), t))
    assert shamir.combine(chosen, t, len(secret)) == secret


@settings(max_examples=60, deadline=None)
@given(sharings(), st.randoms(use_true_random=False))
def test_fewer_than_t_shares_are_refused(sharing, random) -> None:
    secret, t, shares = sharing
    chosen = dict(random.sample(sorted(shares.items()), t - 1))
    with pytest.raises(ValueError, match="cannot recover"):
        shamir.combine(chosen, t, len(secret))


def test_t_minus_one_shares_fit_every_secret() -> None:
    """Information-theoretic hiding: t-1 shares plus any guess at f(0) make a valid polynomial."""
    secret = bytes(range(32))
    shares = shamir.split(secret, 3, [1, 2, 3, 4])
    two = {x: int.from_bytes(y, "big") for x, y in list(shares.items())[:2]}
    for guess in (0, 1, int.from_bytes(secret, "big") + 1):
        points = {**two, 0: guess}
        assert shamir.interpolate_at_zero(points) == guess  # a degree-2 polynomial through all three exists
    assert shamir.interpolate_at_zero(two) != int.from_bytes(secret, "big")


def test_every_t_subset_agrees() -> None:
    secret = b"\x01" * 32
    shares = shamir.split(secret, 3, range(1, 6))
    for subset in itertools.combinations(shares.items(), 3):
        assert shamir.combine(dict(subset), 3, 32) == secret


@pytest.mark.parametrize("secret, t, xs, message", [
    (b"x" * 65, 2, [1, 2], "does not fit"),
    (b"x", 3, [1, 2], "threshold 3"),
    (b"x", 0, [1, 2], "threshold 0"),
    (b"x", 2, [1, 1], "distinct and non-zero"),
    (b"x", 2, [0, 1], "distinct and non-zero"),
])
def test_bad_parameters_are_refused(secret: bytes, t: int, xs: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shamir.split(secret, t, xs)
