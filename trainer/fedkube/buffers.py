"""Model-sized buffers handed from one round to the next, so a round does not start on fresh memory.

The kernel maps a fresh model-sized array page by page as it is first written, and with
transparent huge pages it may first compact memory to find them: on a 1 GB model that made the
aggregator's fold take about 2 s (0.3 s into mapped memory, which takes about 0.15 s to zero), and
the client's receive about as long. The arrays a round is done with are such buffers:
the aggregator gives back the model a round replaced, for the next round's sum, and the client the
weights it received, for the next round's. A buffer is taken again only once nothing else refers
to it (a checkpoint still being written, a view, a stream still sending it): CPython's reference
count says so, since every view and memoryview holds a reference. Before round 1, `reserve` maps
the first buffers while the process waits for its peers anyway.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import numpy as np

Key = tuple[tuple[int, ...], np.dtype]

_free: dict[Key, np.ndarray] = {}  # one buffer per shape and dtype, at most


def give_back(arrays: Iterable[np.ndarray]) -> None:
    """Offer arrays the caller is done with (views and read-only arrays are not taken)."""
    for array in arrays:
        if isinstance(array, np.ndarray) and array.base is None and array.flags.writeable \
                and array.flags.c_contiguous:
            _free[(array.shape, array.dtype)] = array


def empty(shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """An array to overwrite whole: a buffer given back if one of this shape is no longer used, else a new one."""
    key = (tuple(shape), np.dtype(dtype))
    buffer = _free.get(key)
    # References: the pool's, `buffer` and getrefcount's argument. Any more, and someone still reads it.
    if buffer is not None and sys.getrefcount(buffer) <= 3:
        del _free[key]
        return buffer
    return np.empty(key[0], dtype=key[1])


def zeros(shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """`empty`, zeroed: a SecAgg+ mask's start, and how `reserve` writes every page once."""
    buffer = empty(shape, dtype)
    np.copyto(buffer, 0)
    return buffer


def reserve(shapes: Iterable[tuple[tuple[int, ...], np.dtype | str]]) -> None:
    """Map buffers of these shapes now (each page written once), for the first round to take."""
    give_back([zeros(shape, dtype) for shape, dtype in shapes])
