"""The coordinator with 1,000 joined clients: a round wakes only those it samples, and folds a
bounded number of update streams at once (spec.transport.maxConcurrentStreams)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import numpy as np

from fedkube.aggregator.coordinator import Coordinator, JobEnd, RoundState
from fedkube.plan import make_plan
from fedkube.protocol.tensors import specs_of
from fedkube.spec import parse_manifest
from fedkube.spec.model import StrategySpec
from fedkube.strategies import build_strategy

CLIENTS, PER_ROUND, STREAMS = 1000, 100, 8


def coordinator() -> Coordinator:
    doc = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "many"},
           "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": CLIENTS},
                    "rounds": 1, "clients": {"minAvailable": PER_ROUND, "perRound": PER_ROUND},
                    "transport": {"maxConcurrentStreams": STREAMS}}}
    return Coordinator(make_plan(parse_manifest(doc, check_entrypoint=False)).aggregator)


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def held_update(release: asyncio.Event) -> AsyncIterator[memoryview]:
    await release.wait()
    yield memoryview(np.full(4, 0.5, dtype=np.float32).tobytes())


async def test_a_round_wakes_only_its_sample_and_folds_a_bounded_number_of_streams() -> None:
    c = coordinator()
    sessions = {p: await c.join(p) for p in range(CLIENTS)}
    idle = {p: asyncio.create_task(c.next_task(p, sessions[p])) for p in range(CLIENTS)}
    await until(lambda: sum(c.waiting.values()) == CLIENTS)
    weights = {"w": np.zeros(4, dtype=np.float32)}

    round_ = asyncio.create_task(c.run_round(1, weights, specs_of(weights), build_strategy(StrategySpec(), CLIENTS)))
    await until(lambda: sum(t.done() for t in idle.values()) == PER_ROUND)
    state = c.round
    assert isinstance(state, RoundState) and len(state.selected) == PER_ROUND
    assert {p for p, t in idle.items() if t.done()} == set(state.selected)
    assert set(c._alarms) == set(range(CLIENTS)) - set(state.selected)  # the other 900 were never woken

    release, most = asyncio.Event(), 0
    submits = [asyncio.create_task(c.submit(p, 1, state.tickets[p], 1, {}, state.specs, held_update(release)))
               for p in state.selected]
    await until(lambda: len(state.inflight) == STREAMS)
    for _ in range(100):  # the rest wait for a slot, however long the first streams take
        await asyncio.sleep(0)
        most = max(most, len(state.inflight))
    release.set()
    await asyncio.gather(*submits)
    outcome = await round_

    assert most == STREAMS and len(outcome.reported) == PER_ROUND and outcome.dropped == []
    await c.finish(JobEnd(True, "done"))
    assert all(isinstance(r, JobEnd) for r in await asyncio.gather(*(t for t in idle.values() if not t.done())))
