"""Work that may run at most so often, such as rewriting the status files after a round.

A small model's round takes a few milliseconds, and writing metrics.json and status.json (two new
files, swapped in, the old ones unlinked) cost its aggregator a tenth of that, hundreds of times a
second, for readers that look a few times a second at most. Rounds that end faster than the
interval share one write at its end, so the files are never older than the interval; rounds
slower than it are each written as they end.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable


class Throttle:
    """Runs `action` on the running event loop at most once every `interval` seconds."""

    def __init__(self, action: Callable[[], None], interval: float) -> None:
        self.action, self.interval = action, interval
        self._last = -math.inf
        self._deferred: asyncio.TimerHandle | None = None

    def __call__(self) -> None:
        """Run now if the interval since the last run is over, else once at its end (one run for every call
        until then)."""
        if self._deferred is not None:
            return
        wait = self._last + self.interval - time.monotonic()
        if wait <= 0:
            self.run()
        else:
            self._deferred = asyncio.get_running_loop().call_later(wait, self.run)

    def run(self) -> None:
        """Run now, whatever the interval, in place of a deferred run."""
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        self._last = time.monotonic()
        self.action()
