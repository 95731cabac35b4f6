"""FloatSum starts on memory a round was done with, not zeros: nothing of the old contents may show.

Each case gives back a buffer full of junk (NaN, huge values) of the sum's shape first, so the
sum takes it; then checks the mean against float64 whatever order, alignment or failure the
chunks come with.
"""

import numpy as np
import pytest

from fedkube import buffers
from fedkube.aggregator.accumulate import UpdateRejected, WeightedSum
from fedkube.aggregator.float_sum import FloatSum
from fedkube.protocol.tensors import TensorSpec

SIZE = 1000
SPECS = [TensorSpec("a", "float32", (SIZE,)), TensorSpec("b", "float32", (10, 30))]


@pytest.fixture(autouse=True)
def junk_buffers():
    """Buffers of the sums' shapes full of junk, which the next FloatSum takes."""
    for spec in SPECS:
        junk = np.full(spec.shape, np.nan, dtype=np.float32)
        junk.reshape(-1)[::3] = 3e38
        buffers.give_back([junk])
    yield
    for spec in SPECS:
        buffers.empty(spec.shape, spec.dtype)  # leave no junk to other tests


def updates(count: int, seed: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s.shape).astype(np.float32).reshape(-1) for s in SPECS] for _ in range(count)]


def expected(values: list[list[np.ndarray]], weights: list[float]) -> list[np.ndarray]:
    total = sum(weights)
    return [sum(w * u[i].astype(np.float64) for u, w in zip(values, weights, strict=True)) / total
            for i in range(len(SPECS))]


def test_the_sum_takes_a_given_back_buffer_and_shows_none_of_its_contents():
    acc = WeightedSum(SPECS)
    assert np.isnan(acc.store._flat[0]).any()  # the junk buffer, not fresh zeros
    values = updates(2, seed=0)
    folds = [acc.begin(w) for w in (2.0, 5.0)]
    for fold, update in zip(folds, values, strict=True):
        for index, flat in enumerate(update):
            fold.add_dense(index, 0, flat)
    for fold in folds:
        fold.commit()
    means = acc.mean()
    for got, want in zip(means.values(), expected(values, [2.0, 5.0]), strict=True):
        np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
def test_chunks_in_any_order_and_alignment_sum_as_float64(seed):
    """Random chunk sizes per update (so chunks straddle each other's ends), arriving in a random
    order that skips ahead and comes back, some in pairs: gaps are zeroed, straddled elements added to."""
    rng = np.random.default_rng(100 + seed)
    values = updates(3, seed)
    weights = [1.0, 2.5, 4.0]
    store = FloatSum(SPECS)
    pieces = []
    for update, weight in zip(values, weights, strict=True):
        for index, flat in enumerate(update):
            cuts = np.unique(np.concatenate([[0, flat.size], rng.integers(0, flat.size, 4)]))
            pieces += [(index, int(a), flat[a:b], weight) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    order = list(rng.permutation(len(pieces)))
    while order:
        index, start, chunk, weight = pieces[order.pop()]
        partner = next((k for k in order if pieces[k][:2] == (index, start) and pieces[k][2].size == chunk.size), None)
        if partner is None:
            assert store.fold(index, slice(start, start + chunk.size), chunk, weight)
        else:
            order.remove(partner)
            assert store.fold_together(index, start, [(chunk, weight), (pieces[partner][2], pieces[partner][3])]) \
                == [True, True]
    for got, want in zip(store.mean(sum(weights)), expected(values, weights), strict=True):
        np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-5, atol=1e-5)


def test_a_block_every_part_fails_holds_zero_and_later_updates_add_to_it():
    values = updates(2, seed=3)
    bad = [v.copy() for v in values[0]]
    bad[0][:] = np.nan  # every block of update 0's tensor a fails, on the chunk that writes first
    acc = WeightedSum(SPECS)
    first = acc.begin(1.0)
    with pytest.raises(UpdateRejected):
        first.add_dense(0, 0, bad[0])
    first.abort()
    second = acc.begin(3.0)
    for index, flat in enumerate(values[1]):
        second.add_dense(index, 0, flat)
    second.commit()
    for got, want in zip(acc.mean().values(), expected([values[1]], [3.0]), strict=True):
        np.testing.assert_allclose(got.reshape(-1), want, rtol=1e-6)


def test_a_writing_part_that_fails_late_is_taken_back_and_its_partner_kept():
    store = FloatSum(SPECS)
    good, bad = (np.arange(SIZE, dtype=np.float32) for _ in range(2))
    bad[-1] = np.inf  # the last block: the earlier ones were written by this part, then the good one added
    assert store.fold_together(0, 0, [(bad, 2.0), (good, 3.0)]) == [False, True]
    np.testing.assert_allclose(store.sums[0], 3.0 * good, rtol=1e-6, atol=1e-3)


def test_sparse_updates_and_sums_read_before_any_chunk_see_zeros():
    acc = WeightedSum(SPECS)
    assert all((s == 0).all() for s in acc.sums)  # central noise may be added to a sum no chunk reached
    fold = acc.begin(2.0)
    fold.add_sparse(0, np.array([5, 700]), np.array([1.0, -4.0], dtype=np.float32))
    fold.add_dense(1, 0, np.ones(300, dtype=np.float32))
    fold.commit()
    means = acc.mean()
    want = np.zeros(SIZE)
    want[[5, 700]] = [1.0, -4.0]
    np.testing.assert_array_equal(means["a"], want)
    np.testing.assert_array_equal(means["b"], np.ones((10, 30)))
