"""What an update streaming in has folded so far, kept until it commits so it can be taken back out.

Each chunk is screened (shape, NaN/Inf, overflow) before it reaches the sum, so only an update
that breaks off part-way (a dropped connection, a malformed late chunk, the round closing under
it, or central DP scaling it down) needs its folded chunks again. Holding them all in memory
would cost one more model's size per stream in flight; instead the first `budget` bytes of a
stream stay in memory (small models never touch the disk) and the rest go to an unlinked spill
file, read back only to undo. So the aggregator's memory is about the global model, the running
sum, `budget` per concurrent stream and the runtime, whatever the model's size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

SPILL_AFTER_BYTES = 128 << 20  # per update stream: 128 MiB of chunks stay in memory, the rest spill

Where = slice | np.ndarray  # a run of elements, or distinct positions (sparse updates)


@dataclass(frozen=True)
class _Spilled:
    """Where one folded chunk's values (and positions, when sparse) lie in the spill file."""

    offset: int
    dtype: np.dtype
    count: int
    positions: np.dtype | None  # the positions' dtype, stored right after the values; None for a slice


class FoldJournal:
    """The chunks one update folded, newest last; `replay` gives them back newest first."""

    def __init__(self, budget: int = SPILL_AFTER_BYTES) -> None:
        self.budget = budget
        self.held = 0  # bytes kept in memory
        self.spilled = 0  # bytes written to the spill file
        self._entries: list[tuple[int, Where, np.ndarray | _Spilled]] = []
        self._file: BinaryIO | None = None

    def record(self, index: int, where: Where, values: np.ndarray) -> None:
        size = values.nbytes + (where.nbytes if isinstance(where, np.ndarray) else 0)
        if self.held + size <= self.budget:
            self._entries.append((index, where, values))
            self.held += size
            return
        sparse = isinstance(where, np.ndarray)
        spilled = _Spilled(self.spilled, values.dtype, values.size, where.dtype if sparse else None)
        self._write(values)
        if sparse:
            self._write(where)
        self._entries.append((index, slice(0, 0) if sparse else where, spilled))

    def replay(self) -> Iterator[tuple[int, Where, np.ndarray]]:
        """Every recorded chunk, newest first, spilled ones read back one at a time."""
        for index, where, values in reversed(self._entries):
            if isinstance(values, _Spilled):
                data = self._read(values.offset, values.count, values.dtype)
                if values.positions is not None:
                    where = self._read(values.offset + data.nbytes, values.count, values.positions)
                values = data
            yield index, where, values

    def clear(self) -> None:
        self._entries.clear()
        self.held = self.spilled = 0
        if self._file is not None:
            self._file.close()  # unlinked at creation: closing frees its space
            self._file = None

    def _write(self, array: np.ndarray) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="fedkube-inflight-", buffering=0)
        view = memoryview(np.ascontiguousarray(array)).cast("B")
        while view:
            written = os.pwrite(self._file.fileno(), view, self.spilled)
            self.spilled += written
            view = view[written:]

    def _read(self, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        assert self._file is not None
        out = np.empty(count, dtype)
        view = memoryview(out).cast("B")
        while view:
            got = os.preadv(self._file.fileno(), [view], offset)
            if got == 0:
                raise OSError(f"spill file {self._file.name} ended early")
            offset += got
            view = view[got:]
        return out
