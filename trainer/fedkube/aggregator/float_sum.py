"""The default running sum: the model's dtype, folded in place by BLAS as chunks arrive.

A dense float32 chunk is folded block by block, two single-threaded BLAS passes per block over a
zero-copy view of the received bytes and no temporary: a screen (the root of the sum of squares
bounds every |value| and is not finite if any value is not), then `sum += weight * values`
(axpy). Blocks are sized so that they and the sum's slice fit in a core's L2 cache together, so
the axpy reads the block the screen just brought in: the memory traffic is the chunk once and the
sum's slice read and written, against a copy's read and write. Memory: the sum, 1x the model.

Chunks of the same elements from several updates streaming at once fold together
(`fold_together`): each block of the sum is read and written once for all of them, which is most
of the traffic a fold adds to a copy's. The blocks shrink so that all of them still fit in L2.

The sum starts as memory a round was done with (fedkube.buffers), not zeros: each tensor's
elements below a frontier hold the sum, and the first chunk past it writes `weight * values`
there rather than adding to zeros, which saves zeroing the sum and reading it once (a gap a
chunk skips is zeroed). Updates stream in element order, so the frontier only moves forward.

A non-finite value never reaches the sum: the blocks of its chunk already added are taken back
out, as an aborted update's chunks are, which leaves the sum as it was within float32 rounding.

Float addition is not associative, so the result's last bits depend on the order updates arrive
in: two runs agree within float32 rounding (relative error of a few units in 2**-24 per tensor
element, growing at most linearly with the number of updates), not bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import threadpoolctl
from scipy.linalg import blas

from fedkube import buffers
from fedkube.aggregator.running_sum import RunningSum, all_finite, sum_dtype
from fedkube.protocol.tensors import TensorSpec

# A chunk's fold is bound by memory, not arithmetic: extra BLAS threads only fight the event loop
# for cores (and spin-wait on a busy node), which made folds up to ten times slower.
threadpoolctl.threadpool_limits(1, user_api="blas")


def l2_cache_bytes(caches: Path = Path("/sys/devices/system/cpu/cpu0/cache"), default: int = 1 << 20) -> int:
    """A core's L2 cache as Linux reports it, else 1 MiB (the smallest of current server cores)."""
    units = {"K": 1 << 10, "M": 1 << 20}
    for index in sorted(caches.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip()
                return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
        except (OSError, ValueError):
            continue
    return default


# Bytes of blocks and sum slice folded at once: they stay together in the core's L2 cache.
CACHE_BYTES = l2_cache_bytes()


def block_bytes(parts: int) -> int:
    """The most bytes per block when `parts` updates' blocks and the sum's slice share CACHE_BYTES."""
    return CACHE_BYTES // (parts + 1)


class FloatSum(RunningSum):
    folds_together = True

    def __init__(self, specs: list[TensorSpec]) -> None:
        self._sums = [buffers.empty(s.shape, sum_dtype(s.dtype)) for s in specs]
        self._flat = [a.reshape(-1) for a in self._sums]
        self._frontier = [0] * len(specs)  # elements below it hold the sum; those above, anything
        self._blas = [blas.get_blas_funcs(("dot", "axpy", "copy", "scal"), (flat,)) for flat in self._flat]
        self._largest = [float(np.finfo(flat.dtype).max) for flat in self._flat]

    def fold(self, index: int, where: slice | np.ndarray, values: np.ndarray, weight: float) -> bool:
        flat = self._flat[index]
        if not values.size:  # BLAS refuses empty vectors, and there is nothing to add
            return True
        if isinstance(where, slice) and values.dtype == flat.dtype:
            return self.fold_together(index, where.start, [(values, weight)])[0]
        if not all_finite(values, weight, flat.dtype):  # sparse positions, or a narrower dtype (float16)
            return False
        self._zero_up_to(index, flat.size)
        flat[where] += values.astype(flat.dtype, copy=False) * flat.dtype.type(weight)
        return True

    def fold_together(self, index: int, start: int, parts: list[tuple[np.ndarray, float]]) -> list[bool]:
        flat = self._flat[index]
        size = parts[0][0].size
        if any(values.dtype != flat.dtype for values, _ in parts) or not size:
            return super().fold_together(index, start, parts)
        # Elements past the frontier: zero the gap before the chunk, or all of a chunk that straddles it.
        self._zero_up_to(index, start if self._frontier[index] <= start else start + size)
        first = self._frontier[index] == start  # the chunk lies past the frontier: its first part writes
        self._frontier[index] = max(self._frontier[index], start + size)
        dot, axpy, copy, scal = self._blas[index]
        largest = self._largest[index]
        ok = [True] * len(parts)
        blocks = -(-size * flat.itemsize // block_bytes(len(parts)))
        step = -(-size // blocks)  # equal blocks: no short one costing a call for a few elements
        # BLAS reads and writes at offsets into the chunk and the sum: no view to make per block.
        for at in range(0, size, step):
            n = min(step, size - at)
            write = first
            for k, (values, weight) in enumerate(parts):
                if not ok[k]:
                    continue
                # One pass clears a normal block; only one that fails the screen is checked value by value.
                if not (math.sqrt(dot(values, values, n=n, offx=at, offy=at)) * abs(weight) < largest
                        or all_finite(values[at:at + n], weight, flat.dtype)):
                    if at:
                        axpy(values, flat, n=at, a=-weight, offy=start)
                    ok[k] = False
                    continue
                if write:  # the block is in L2 after the copy: scaling it there reads no memory
                    copy(values, flat, n=n, offx=at, offy=start + at)
                    scal(weight, flat, n=n, offx=start + at)
                    write = False
                else:
                    axpy(values, flat, n=n, a=weight, offx=at, offy=start + at)
            if write:  # every part failed this block: it holds nothing yet
                flat[start + at:start + at + n] = 0
        return ok

    def _zero_up_to(self, index: int, end: int) -> None:
        """Zero the elements from the frontier to `end`, which becomes the frontier."""
        frontier = self._frontier[index]
        if frontier < end:
            self._flat[index][frontier:end] = 0
            self._frontier[index] = end

    @property
    def sums(self) -> list[np.ndarray]:
        for index, flat in enumerate(self._flat):
            self._zero_up_to(index, flat.size)
        return self._sums

    def mean(self, total_weight: float) -> list[np.ndarray]:
        for flat in self.sums:
            flat /= total_weight
        return self._sums
