"""Creating a job's pods in bounded batches: the batch plan, the progress to report, the pace.

A 1,000-partition job must not flood the API server with a thousand creates at once, and a job
whose pods the API server refuses should learn it from one refusal, not a thousand. So a pass
creates the missing pods in slow-start batches (1, 2, 4, ... up to spec.scheduling.podCreationBatch,
as the Kubernetes Job controller does), one batch after the other, stopping at the first error;
the operator-wide `PodRate` (--pod-creation-rate) paces creations across all jobs; and between
batches the job's status says how far it got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def batch_sizes(count: int, limit: int) -> list[int]:
    """Sizes of the batches that create `count` pods: doubling from 1, never more than `limit`."""
    sizes: list[int] = []
    size = 1
    while count > 0:
        take = min(size, limit, count)
        sizes.append(take)
        count -= take
        size = min(size * 2, limit)
    return sizes


def progress(created: int, desired: int) -> dict[str, Any]:
    """The status fields written between batches, while a job's pods are still being created."""
    return {"podsCreated": created, "podsDesired": desired,
            "message": f"creating pods: {created} of {desired} created"}


class PodRate:
    """A token bucket: on average `rate` pod creations a second, bursts of up to `rate` (0: no limit).

    `delay(n)` reserves n creations and says how long to wait before making them; callers that
    reserve together are served in turn, so many jobs share the rate fairly.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._stamp = clock()

    def delay(self, n: int) -> float:
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._stamp) * self.rate) - n
        self._stamp = now
        return max(0.0, -self._tokens / self.rate)
