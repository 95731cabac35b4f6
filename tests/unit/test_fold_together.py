"""Updates streaming side by side: chunks of the same elements wait for each other and fold together.

Every case checks the sum against the plain computation, so a chunk folded twice, lost while
waiting, or refused on the wrong update's turn shows as a wrong mean or a missing error.
"""

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest

from fedkube.aggregator import accumulate
from fedkube.aggregator.accumulate import UpdateRejected, WeightedSum
from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.float_sum import FloatSum, l2_cache_bytes
from fedkube.plan import make_plan
from fedkube.protocol.tensors import TensorSpec, specs_of
from fedkube.spec import parse_manifest
from fedkube.spec.model import StrategySpec
from fedkube.strategies import build_strategy

SIZE, CHUNK = 1000, 100  # elements: ten chunks per update
SPECS = [TensorSpec("w", "float32", (SIZE,))]


def updates(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(SIZE).astype(np.float32) for _ in range(count)]


def chunks(values: np.ndarray) -> list[tuple[int, np.ndarray]]:
    return [(start, values[start:start + CHUNK]) for start in range(0, SIZE, CHUNK)]


def test_blocks_are_sized_to_the_l2_cache_linux_reports(tmp_path):
    for index, (level, size) in enumerate([("1", "48K"), ("2", "2048K"), ("3", "480M")]):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "level").write_text(level + "\n")
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    assert l2_cache_bytes(tmp_path) == 2 << 20
    assert l2_cache_bytes(tmp_path / "missing") == 1 << 20  # not Linux, or no sysfs: 1 MiB


def test_interleaved_updates_fold_in_pairs_and_sum_as_apart(monkeypatch):
    calls: list[int] = []
    original = FloatSum.fold_together

    def counted(self, index, start, parts):
        calls.append(len(parts))
        return original(self, index, start, parts)

    monkeypatch.setattr(FloatSum, "fold_together", counted)
    a, b = updates(2)
    acc = WeightedSum(SPECS)
    fa, fb = acc.begin(3), acc.begin(5)
    for (start, ca), (_, cb) in zip(chunks(a), chunks(b), strict=True):
        fa.add_dense(0, start, ca)
        assert fa.waiting == {(0, start, CHUNK)}  # held for b's chunk of the same elements
        fb.add_dense(0, start, cb)
        assert not fa.waiting and not fb.waiting
    fa.commit()
    fb.commit()
    assert calls == [2] * (SIZE // CHUNK)
    np.testing.assert_allclose(acc.mean()["w"], (3 * a.astype(np.float64) + 5 * b) / 8, rtol=1e-5, atol=1e-6)


def test_a_bad_chunk_found_on_the_other_updates_turn_fails_only_its_own_update():
    good, bad = updates(2, seed=1)
    bad[250] = np.nan
    acc = WeightedSum(SPECS)
    fb, fg = acc.begin(2), acc.begin(7)
    for (start, cb), (_, cg) in zip(chunks(bad)[:3], chunks(good)[:3], strict=True):
        fb.add_dense(0, start, cb)
        fg.add_dense(0, start, cg)  # folds both: the NaN chunk (200..300) is refused, the good one is not
    with pytest.raises(UpdateRejected) as info:
        fb.add_dense(0, 300, bad[300:400])
    assert info.value.reason == "non_finite"
    fb.abort()  # what the coordinator does with a refused update
    for start, cg in chunks(good)[3:]:
        fg.add_dense(0, start, cg)  # alone now: b is gone
    fg.commit()
    assert acc.count == 1
    # b's two good chunks came back out again: float32 rounding of their size remains, nothing more.
    np.testing.assert_allclose(acc.mean()["w"], good, rtol=0, atol=1e-6)


def test_an_aborted_updates_waiting_chunks_never_reach_the_sum():
    a, b = updates(2, seed=2)
    acc = WeightedSum(SPECS)
    fa, fb = acc.begin(1), acc.begin(1)
    for start, ca in chunks(a)[:4]:
        fa.add_dense(0, start, ca)  # all four wait for b
    assert len(fa.waiting) == 4
    fa.abort()
    for start, cb in chunks(b):
        fb.add_dense(0, start, cb)
    fb.commit()
    np.testing.assert_array_equal(acc.mean()["w"], b)


def test_commit_folds_what_still_waits_and_an_update_alone_never_waits():
    a, b = updates(2, seed=3)
    acc = WeightedSum(SPECS)
    fa, fb = acc.begin(2), acc.begin(2)
    for start, ca in chunks(a):
        fa.add_dense(0, start, ca)
    assert len(fa.waiting) == SIZE // CHUNK  # b has sent nothing yet
    fa.commit()  # folds every waiting chunk alone
    assert not fa.waiting
    for start, cb in chunks(b):
        fb.add_dense(0, start, cb)
        assert not fb.waiting  # the only update open: nothing to wait for
    fb.commit()
    np.testing.assert_allclose(acc.mean()["w"], (a.astype(np.float64) + b) / 2, rtol=1e-5, atol=1e-6)


def test_waiting_chunks_are_bounded_by_folding_the_oldest_alone(monkeypatch):
    monkeypatch.setattr(accumulate, "WAIT_BYTES", 3 * CHUNK * 4)
    a, b = updates(2, seed=4)
    acc = WeightedSum(SPECS)
    fa, fb = acc.begin(1), acc.begin(3)
    for start, ca in chunks(a):
        fa.add_dense(0, start, ca)
        assert len(fa.waiting) <= 3
    assert fa.waiting == {(0, start, CHUNK) for start in (700, 800, 900)}
    for start, cb in chunks(b):  # 700..900 fold in pairs, the rest alone
        fb.add_dense(0, start, cb)
    fa.commit()
    fb.commit()
    np.testing.assert_allclose(acc.mean()["w"], (a.astype(np.float64) + 3 * b) / 4, rtol=1e-5, atol=1e-6)


def test_the_exact_sum_never_holds_a_chunk_back():
    a, b = updates(2, seed=5)
    acc = WeightedSum(SPECS, exact=True)
    fa, fb = acc.begin(1), acc.begin(1)
    fa.add_dense(0, 0, a[:CHUNK])
    assert not fa.waiting  # folded at once although b is open
    fb.add_dense(0, 0, b[:CHUNK])
    fa.commit()
    fb.commit()
    np.testing.assert_array_equal(acc.mean()["w"][:CHUNK], ((a[:CHUNK].astype(np.float64) + b[:CHUNK]) / 2)
                                  .astype(np.float32))


async def test_an_update_whose_call_is_cancelled_midway_is_taken_back_out() -> None:
    """A client that goes away mid-update cancels its call: what it folded must leave the sum."""
    doc = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "cut"},
           "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 2}, "rounds": 1,
                    "clients": {"minAvailable": 1, "roundTimeoutSeconds": 1}}}
    c = Coordinator(make_plan(parse_manifest(doc, check_entrypoint=False)).aggregator)
    sessions = {p: await c.join(p) for p in range(2)}
    weights = {"w": np.zeros(SIZE, np.float32)}
    round_ = asyncio.create_task(c.run_round(1, weights, specs_of(weights), build_strategy(StrategySpec(), 2)))
    for p in range(2):
        await c.next_task(p, sessions[p])
    state = c.round
    a, b = updates(2, seed=6)
    halfway, go = asyncio.Event(), asyncio.Event()

    async def stream(values: np.ndarray, pause: asyncio.Event | None) -> AsyncIterator[memoryview]:
        for number, (_, chunk) in enumerate(chunks(values)):
            if number == 5:
                halfway.set()
                await (pause or asyncio.Event()).wait()  # a never goes on: its client is gone
            yield memoryview(chunk.tobytes())
            await asyncio.sleep(0)  # as a network read does, so the two streams interleave

    cut = asyncio.create_task(c.submit(0, 1, state.tickets[0], 1, {}, state.specs, stream(a, None)))
    whole = asyncio.create_task(c.submit(1, 1, state.tickets[1], 1, {}, state.specs, stream(b, go)))
    await halfway.wait()
    for _ in range(10):
        await asyncio.sleep(0)
    assert state.bytes_in == 2 * 5 * CHUNK * 4  # both halves in, folded in pairs
    cut.cancel()
    go.set()
    await whole
    with pytest.raises(asyncio.CancelledError):
        await cut
    outcome = await round_
    assert outcome.reported == [1] and outcome.dropped == [0]
    np.testing.assert_allclose(outcome.accumulator.mean()["w"], b, rtol=1e-6, atol=1e-7)
