"""Throttled work (the status files' rewrites): at most once an interval, never later than its end."""

from __future__ import annotations

import asyncio
import time

from fedkube.aggregator.throttle import Throttle


def test_calls_within_the_interval_share_one_run_at_its_end_and_run_takes_the_place_of_a_deferred_one() -> None:
    async def scenario() -> list[float]:
        runs: list[float] = []
        throttle = Throttle(lambda: runs.append(time.monotonic()), interval=0.2)
        start = time.monotonic()
        throttle()  # the first call runs at once
        assert len(runs) == 1
        for _ in range(5):  # within the interval: deferred, one run for all of them
            throttle()
            await asyncio.sleep(0.01)
        assert len(runs) == 1
        await asyncio.sleep(0.3)
        assert len(runs) == 2 and runs[1] - start >= 0.19  # at the interval's end, with no call to prompt it
        throttle()  # deferred again ...
        throttle.run()  # ... until an immediate run takes its place
        assert len(runs) == 3
        await asyncio.sleep(0.3)
        assert len(runs) == 3
        throttle()  # the interval since the last run is over: at once
        assert len(runs) == 4
        return runs

    asyncio.run(scenario())
