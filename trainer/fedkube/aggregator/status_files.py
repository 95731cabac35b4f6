"""Status files rewritten every round, replaced whole so that a reader never sees half of one.

Replacing a file with `os.replace` makes ext4 start writing the new file's data out first (its
safeguard for files replaced without fsync), and truncating one does the same: 0.1 to 0.3 ms
each here, twice a round on the aggregator's serial path, where a small model's round takes a
few milliseconds. Linux's renameat2(RENAME_EXCHANGE) swaps the new file in just as atomically
without that write-out; the old text, left under the temporary name, is then unlinked. A power
cut may leave such a file empty, which costs nothing: it is rewritten every round, and the job's
state lives in its checkpoints (stores/file.py replaces those with os.replace). Where the system
or filesystem cannot exchange, or the file does not exist yet, this falls back to os.replace.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable
from pathlib import Path

AT_FDCWD, RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


def _renameat2() -> Callable[..., int] | None:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc 2.28+ on Linux
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


RENAMEAT2 = _renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where that cannot be done (nothing changes)."""
    return RENAMEAT2 is not None and RENAMEAT2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b),
                                               RENAME_EXCHANGE) == 0


def write_atomic(path: Path, parts: Iterable[bytes | memoryview]) -> None:
    """Readers (the launcher, benchmarks, a user's tail) see the old content or the new, never part of one.

    The parts go out one after another, so a long history's kept text is written as it lies
    rather than first copied into one string (see History.parts).
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # a crash's leftover: truncating it would write it out first
    with tmp.open("wb") as file:
        file.writelines(parts)
    if exchange(tmp, path):
        tmp.unlink()
    else:
        os.replace(tmp, path)


def write_text_atomic(path: Path, text: str) -> None:
    write_atomic(path, [text.encode()])
