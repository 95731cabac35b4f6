"""Model-sized buffers passed from one round to the next: reused only once nothing else refers to them."""

import asyncio

import numpy as np

from fedkube import buffers
from fedkube.aggregator.coordinator import Coordinator
from fedkube.plan import make_plan
from fedkube.protocol.tensors import specs_of
from fedkube.spec import parse_manifest
from fedkube.spec.model import StrategySpec
from fedkube.strategies import build_strategy


def test_a_given_back_buffer_is_reused_zeroed():
    old = np.full(1000, 7.0, np.float32)
    address = old.ctypes.data
    buffers.give_back([old])
    assert buffers.zeros((1000,), np.float32) is not old  # the caller still holds it
    del old
    again = buffers.zeros((1000,), np.float32)
    assert again.ctypes.data == address and not again.any()
    assert buffers.zeros((1000,), np.float32).ctypes.data != address  # handed out once


def test_a_buffer_still_read_through_a_view_or_memoryview_is_left_alone():
    for holder in (lambda a: a[10:], lambda a: a.reshape(10, 100), memoryview):
        old = np.full(1000, 3.0, np.float32)
        kept = holder(old)
        buffers.give_back([old])
        assert buffers.zeros((1000,), np.float32) is not old
        assert np.asarray(kept).min() == 3.0  # not zeroed under its reader
        del kept


def test_views_and_read_only_arrays_are_not_taken():
    base = np.ones(2000, np.float32)
    frozen = np.ones(1000, np.float32)
    frozen.flags.writeable = False
    buffers.give_back([base[:1000], frozen])
    fresh = buffers.zeros((1000,), np.float32)
    assert not np.shares_memory(fresh, base) and fresh is not frozen


async def test_the_next_rounds_sum_takes_the_buffer_of_the_model_it_replaces():
    doc = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "reuse"},
           "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 1}, "rounds": 2,
                    "clients": {"minAvailable": 1}}}
    c = Coordinator(make_plan(parse_manifest(doc, check_entrypoint=False)).aggregator)
    session = await c.join(0)
    strategy = build_strategy(StrategySpec(), 1)
    weights = {"w": np.zeros(4096, np.float32)}

    async def one_round(number: int) -> dict[str, np.ndarray]:
        round_ = asyncio.create_task(c.run_round(number, weights, specs_of(weights), strategy))
        state = await c.next_task(0, session)

        async def update():
            yield memoryview(np.full(4096, number, np.float32).tobytes())

        await c.submit(0, number, state.tickets[0], 1, {}, state.specs, update())
        return strategy.apply(weights, (await round_).accumulator)

    address = weights["w"].ctypes.data
    replaced, weights = weights, await one_round(1)  # round 1's sum became the model
    buffers.give_back(replaced.values())  # as the aggregator does with the model a round replaced
    del replaced
    weights = await one_round(2)
    assert weights["w"].ctypes.data == address  # round 2 summed into the memory of the model round 1 sent
    np.testing.assert_array_equal(weights["w"], np.full(4096, 3.0))  # 1 + 2, nothing of the old values


def test_reserved_buffers_are_mapped_and_taken_by_the_first_round():
    buffers.reserve([((300, 4), np.float32), ((7,), "float64")])
    mapped = {key: array.ctypes.data for key, array in buffers._free.items()}
    taken = buffers.empty((300, 4), np.float32), buffers.zeros((7,), np.float64)
    assert [t.ctypes.data for t in taken] == [mapped[((300, 4), np.dtype(np.float32))],
                                              mapped[((7,), np.dtype(np.float64))]]
    assert buffers.empty((300, 4), np.float32).ctypes.data != taken[0].ctypes.data  # each taken once
    assert not taken[1].any()
