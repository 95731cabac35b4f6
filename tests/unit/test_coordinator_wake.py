"""Work no client waits for (the status files) runs once the next round's clients are woken, not before."""

import asyncio

import numpy as np

from fedkube.aggregator.coordinator import Coordinator
from fedkube.plan import make_plan
from fedkube.protocol.tensors import specs_of
from fedkube.spec import parse_manifest
from fedkube.spec.model import StrategySpec
from fedkube.strategies import build_strategy

DOC = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "wake"},
       "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 3}, "rounds": 2,
                "clients": {"minAvailable": 3, "roundTimeoutSeconds": 5}}}


async def test_on_wake_runs_once_after_the_woken_clients_have_their_round() -> None:
    c = Coordinator(make_plan(parse_manifest(DOC, check_entrypoint=False)).aggregator)
    sessions = {p: await c.join(p) for p in range(3)}
    events: list[str] = []

    async def client(p: int) -> None:
        await c.next_task(p, sessions[p])  # asleep until the round wakes it
        events.append(f"served {p}")

    clients = [asyncio.create_task(client(p)) for p in range(3)]
    await asyncio.sleep(0)  # every client waits for a round
    c.on_wake = lambda: events.append("published")
    weights = {"w": np.zeros(4, np.float32)}
    round_ = asyncio.create_task(c.run_round(1, weights, specs_of(weights), build_strategy(StrategySpec(), 3)))
    await asyncio.gather(*clients)
    await asyncio.sleep(0)
    assert events == ["served 0", "served 1", "served 2", "published"]
    assert c.on_wake is None  # once: a later wake-up does not publish again
    await c._notify()
    await asyncio.sleep(0)
    assert events.count("published") == 1
    round_.cancel()
