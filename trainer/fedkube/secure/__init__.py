"""Security mechanisms: per-job mutual TLS material and SecAgg+ secure aggregation.

This file stays free of heavy imports (no numpy, no `cryptography`): the CLI and the spec rules
use its constants in a base install.
"""

from __future__ import annotations

import math
from pathlib import Path

DEFAULT_TLS_DIR = Path("/etc/fedkube/tls")

# SecAgg+ fixed point: a coordinate is weight * round(clip(x) * 2^fraction_bits / clipRange).
WEIGHT_BITS = 16          # example counts up to 65535 weight an update; larger ones count as 65535
MIN_FRACTION_BITS = 8     # below this the quantisation error would dwarf a typical update
DEFAULT_BITS = 32
DEFAULT_CLIP_RANGE = 1.0


def fraction_bits(bits: int, clients: int) -> int:
    """Resolution left in a `bits`-bit ring after the sign, the weight and log2(clients) of headroom."""
    return bits - 1 - WEIGHT_BITS - math.ceil(math.log2(max(clients, 1)))


def min_bits(clients: int) -> int:
    """The smallest ring that sums `clients` weighted updates without wrapping, at MIN_FRACTION_BITS."""
    return MIN_FRACTION_BITS + 1 + WEIGHT_BITS + math.ceil(math.log2(max(clients, 1)))


def default_bits(clients: int) -> int:
    return max(DEFAULT_BITS, min_bits(clients))


def safe_min_threshold(neighbourhood: int) -> int:
    """A strict majority of a client's share holders: its `neighbourhood` neighbours and itself.

    Shares of a client's self-mask seed and of its masking key go to the same holders; with t
    above half of them, two disjoint groups of holders cannot each rebuild one of the two
    secrets, so no split view of who dropped can make the aggregator learn both.
    """
    return max(2, (neighbourhood + 1) // 2 + 1)


def default_neighbours(clients: int) -> int:
    """SecAgg+'s O(log n) neighbourhood (Bell et al. 2020): 2 ceil(log2 n), or everyone else when that is not fewer.

    Masks follow a Harary graph, which is k-connected: while fewer than k of a round's clients drop
    out before sending their masked vectors, the survivors stay connected through their pairwise
    masks and the aggregator learns only their total, as with the complete graph, at O(log n)
    instead of O(n) masks, shares and messages per client.
    """
    return max(1, min(clients - 1, 2 * math.ceil(math.log2(max(clients, 2)))))


def neighbourhood(neighbours: int | None, clients: int) -> int:
    """Each client's neighbours in a round of `clients`: `neighbours` (default_neighbours unset), at most n - 1."""
    return min(default_neighbours(clients) if neighbours is None else neighbours, max(clients - 1, 1))
