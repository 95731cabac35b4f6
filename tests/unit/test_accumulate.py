"""The streaming weighted sum and FedAvg, checked against hand computations, in both sum modes.

`exact` False is the default float32 running sum, `exact` True the order-independent one
(spec.strategy.exactSum); behaviour that does not depend on the mode is checked in both.
"""

from fractions import Fraction

import numpy as np
import pytest

from fedkube.aggregator.accumulate import UpdateRejected, WeightedSum
from fedkube.aggregator.exact_sum import BLOCK
from fedkube.aggregator.float_sum import block_bytes
from fedkube.protocol.tensors import TensorSpec, iter_chunks, specs_of
from fedkube.strategies.fedavg import FedAvg


def fold_update(acc: WeightedSum, weight: float, update: dict[str, np.ndarray], chunk_bytes: int = 8) -> None:
    fold = acc.begin(weight)
    fold.check_specs(specs_of(update))
    offsets = {}
    for index, spec in enumerate(acc.specs):
        for chunk in iter_chunks([update[spec.name]], chunk_bytes):
            fold.add(index, offsets.get(index, 0), chunk)
            offsets[index] = offsets.get(index, 0) + len(chunk)
    fold.commit()


MODES = pytest.mark.parametrize("exact", [False, True], ids=["float", "exact"])


@MODES
def test_fedavg_with_unequal_example_counts_matches_hand_computation(exact):
    global_w = {"w": np.array([1.0, 2.0, 3.0], np.float32), "b": np.array([0.5], np.float32)}
    deltas = [({"w": np.array([1.0, 0.0, -1.0], np.float32), "b": np.array([2.0], np.float32)}, 10),
              ({"w": np.array([4.0, 4.0, 4.0], np.float32), "b": np.array([-1.0], np.float32)}, 30),
              ({"w": np.array([0.0, 8.0, 0.0], np.float32), "b": np.array([0.0], np.float32)}, 60)]
    acc = WeightedSum(specs_of(global_w), exact)
    for delta, n in deltas:
        fold_update(acc, n, delta)
    new = FedAvg().apply(global_w, acc)
    # By hand: mean delta w = (10*[1,0,-1] + 30*[4,4,4] + 60*[0,8,0]) / 100 = [1.3, 6.0, 1.1]
    #          mean delta b = (10*2 + 30*-1 + 0) / 100 = -0.1
    np.testing.assert_allclose(new["w"], [2.3, 8.0, 4.1], rtol=1e-6)
    np.testing.assert_allclose(new["b"], [0.4], rtol=1e-6)
    assert acc.count == 3 and acc.total_weight == 100


def test_server_learning_rate_scales_the_step():
    acc = WeightedSum([TensorSpec("w", "float32", (2,))])
    fold_update(acc, 1, {"w": np.array([2.0, -2.0], np.float32)})
    new = FedAvg(server_lr=0.5).apply({"w": np.zeros(2, np.float32)}, acc)
    np.testing.assert_allclose(new["w"], [1.0, -1.0])


@MODES
def test_nan_in_a_late_chunk_is_rejected_and_taken_back_out(exact):
    specs = [TensorSpec("w", "float32", (6,))]
    acc = WeightedSum(specs, exact)
    fold_update(acc, 2, {"w": np.ones(6, np.float32)})
    bad = np.arange(6, dtype=np.float32)
    bad[5] = np.nan
    fold = acc.begin(3)
    fold.check_specs(specs)
    fold.add(0, 0, bad[:2].tobytes())
    fold.add(0, 8, bad[2:4].tobytes())
    with pytest.raises(UpdateRejected) as info:
        fold.add(0, 16, bad[4:].tobytes())
    assert info.value.reason == "non_finite"
    fold.abort()
    assert acc.count == 1
    np.testing.assert_array_equal(acc.mean()["w"], np.ones(6, np.float32))


@pytest.mark.parametrize("update, reason", [
    ({"w": np.zeros(5, np.float32)}, "wrong_shape"),
    ({"w": np.zeros(6, np.float64)}, "wrong_dtype"),
    ({"v": np.zeros(6, np.float32)}, "wrong_shape"),
    ({"w": np.zeros(6, np.float32), "x": np.zeros(1, np.float32)}, "wrong_shape"),
])
def test_wrong_tensors_are_refused_before_any_data(update, reason):
    acc = WeightedSum([TensorSpec("w", "float32", (6,))])
    with pytest.raises(UpdateRejected) as info:
        acc.begin(1).check_specs(specs_of(update))
    assert info.value.reason == reason


@pytest.mark.parametrize("weight", [0, -3, float("nan")])
def test_non_positive_weight_is_refused(weight):
    with pytest.raises(UpdateRejected):
        WeightedSum([TensorSpec("w", "float32", (1,))]).begin(weight)


def test_the_exact_mean_does_not_depend_on_the_order_updates_arrive_in():
    rng = np.random.default_rng(7)
    specs = [TensorSpec("w", "float32", (2000,))]
    # Magnitudes spread over ten orders, mixed signs: plain float32 sums differ between orders.
    updates = [(int(rng.integers(1, 500)),
                (rng.choice([-1.0, 1.0], 2000) * 10.0 ** rng.uniform(-8, 2, 2000)).astype(np.float32))
               for _ in range(8)]

    means, naive = [], []
    for _ in range(6):
        order = rng.permutation(len(updates))
        acc = WeightedSum(specs, exact=True)
        plain = np.zeros(2000, np.float32)
        for i in order:
            n, values = updates[i]
            fold_update(acc, n, {"w": values}, chunk_bytes=4096)
            plain += values * np.float32(n)
        means.append(acc.mean()["w"])
        naive.append(plain)

    assert any(not np.array_equal(naive[0], other) for other in naive[1:])  # the hazard is real
    for other in means[1:]:
        assert other.tobytes() == means[0].tobytes()
    total = sum(n for n, _ in updates)
    exact = [float(sum(Fraction(n) * Fraction(float(v[j])) for n, v in updates) / total) for j in range(50)]
    np.testing.assert_array_equal(means[0][:50], np.array(exact, np.float32))


@MODES
def test_an_aborted_update_leaves_what_one_never_sent_leaves(exact):
    """Bit for bit in the exact mode; within float32 rounding of the update taken back otherwise."""
    specs = [TensorSpec("w", "float32", (100,))]
    rng = np.random.default_rng(3)
    good = [rng.standard_normal(100).astype(np.float32) for _ in range(3)]
    clean, dirty = WeightedSum(specs, exact), WeightedSum(specs, exact)
    for values in good:
        fold_update(clean, 5, {"w": values})
    fold_update(dirty, 5, {"w": good[0]})
    fold = dirty.begin(7)
    fold.add(0, 0, (rng.standard_normal(50) * 1e3).astype(np.float32).tobytes())
    fold.abort()
    for values in good[1:]:
        fold_update(dirty, 5, {"w": values})

    expected, actual = clean.mean()["w"], dirty.mean()["w"]
    if exact:
        assert actual.tobytes() == expected.tobytes()
    else:  # the taken-back chunk (|values| up to ~4e3, weight 7) leaves float32 rounding of its size
        np.testing.assert_allclose(actual, expected, rtol=0, atol=7 * 4e3 * 2.0 ** -23 / 15)


@MODES
def test_huge_but_finite_values_are_folded(exact):
    acc = WeightedSum([TensorSpec("w", "float32", (3,))], exact)
    fold_update(acc, 2, {"w": np.array([1e30, -1e30, 3.0], np.float32)})
    np.testing.assert_allclose(acc.mean()["w"], [1e30, -1e30, 3.0], rtol=1e-6)


@pytest.mark.parametrize("values, dtype, weight, reason", [
    ([1.0, np.inf, 2.0], "float32", 1, "non_finite"),
    ([1.0, -np.inf, 2.0], "float32", 1, "non_finite"),
    ([1e308, 1.0, 1.0], "float64", 10, "overflow"),
])
@MODES
def test_non_finite_or_overflowing_chunks_never_reach_the_sum(values, dtype, weight, reason, exact):
    acc = WeightedSum([TensorSpec("w", dtype, (3,))], exact)
    fold_update(acc, 1, {"w": np.ones(3, dtype)})
    fold = acc.begin(weight)
    with pytest.raises(UpdateRejected) as info, np.errstate(over="ignore"):
        fold.add(0, 0, np.array(values, dtype).tobytes())
    assert info.value.reason == reason
    fold.abort()
    np.testing.assert_array_equal(acc.mean()["w"], np.ones(3))


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@MODES
def test_every_float_dtype_is_weighted_and_averaged(dtype, exact):
    acc = WeightedSum([TensorSpec("w", dtype, (4,))], exact)
    fold_update(acc, 1, {"w": np.array([1, 2, 3, 4], dtype)}, chunk_bytes=8)
    fold_update(acc, 3, {"w": np.array([4, 3, 2, 1], dtype)}, chunk_bytes=8)
    mean = acc.mean()["w"]
    assert mean.dtype == np.result_type(dtype, np.float32)
    np.testing.assert_allclose(mean, [3.25, 2.75, 2.25, 1.75])


def test_the_float_sum_matches_float64_within_float32_rounding_and_the_exact_sum():
    rng = np.random.default_rng(11)
    specs = [TensorSpec("a", "float32", (300, 40)), TensorSpec("b", "float32", (7,))]
    updates = [(int(rng.integers(1, 1000)), {s.name: rng.standard_normal(s.shape).astype(np.float32) for s in specs})
               for _ in range(24)]
    fast, exact = WeightedSum(specs), WeightedSum(specs, exact=True)
    for n, update in updates:
        fold_update(fast, n, update, chunk_bytes=4096)
        fold_update(exact, n, update, chunk_bytes=4096)
    fast_mean, exact_mean = fast.mean(), exact.mean()

    total = sum(n for n, _ in updates)
    for spec in specs:
        by_hand = sum(np.float64(n) * u[spec.name].astype(np.float64) for n, u in updates) / total
        # Each of the 24 additions and the division round once to float32, relative to the magnitudes summed.
        scale = sum(n * np.abs(u[spec.name].astype(np.float64)) for n, u in updates) / total
        bound = 26 * 2.0 ** -24 * scale
        got = fast_mean[spec.name]
        assert got.dtype == np.float32 and got.shape == spec.shape
        assert np.all(np.abs(got - by_hand) <= bound)
        if spec.name == "a":  # 12,000 elements: rounding does show, so the bound is not idle
            assert not np.array_equal(got, by_hand.astype(np.float32))
        # The exact mean is the float64 computation rounded once, and agrees with the float sum within the bound.
        np.testing.assert_allclose(exact_mean[spec.name], by_hand.astype(np.float32), rtol=2.0 ** -23, atol=0)
        assert np.all(np.abs(got - exact_mean[spec.name]) <= bound + 2.0 ** -24 * np.abs(by_hand))


@MODES
def test_empty_and_unaligned_chunks_fold(exact):
    acc = WeightedSum([TensorSpec("w", "float32", (4,))], exact)
    fold = acc.begin(2)
    fold.add(0, 0, b"")
    raw = b"x" + np.array([1, 2, 3, 4], np.float32).tobytes()
    fold.add(0, 0, memoryview(raw)[1:])  # a view that starts off a 4-byte boundary
    fold.commit()
    np.testing.assert_array_equal(acc.mean()["w"], [1, 2, 3, 4])


def test_exact_sum_takes_chunks_longer_than_its_blocks_whole_or_not_at_all():
    size = 3 * BLOCK + 5
    rng = np.random.default_rng(5)
    dense, sparse = (rng.standard_normal(size).astype(np.float32) for _ in range(2))
    positions = rng.permutation(size)
    acc = WeightedSum([TensorSpec("w", "float32", (size,))], exact=True)
    fold = acc.begin(3)
    fold.add_dense(0, 0, dense)
    fold.add_sparse(0, positions, sparse)
    bad = dense.copy()
    bad[2 * BLOCK + 1] = np.inf  # in the third block: nothing of the chunk may reach the sum
    with pytest.raises(UpdateRejected):
        fold.add_dense(0, 0, bad)
    fold.commit()

    by_hand = 3 * dense.astype(np.float64)
    by_hand[positions] += 3 * sparse.astype(np.float64)
    np.testing.assert_array_equal(acc.mean()["w"], (by_hand / 3).astype(np.float32))


def test_float_sum_takes_a_chunk_back_when_a_later_block_of_it_fails():
    """The float sum screens and adds a long chunk block by block: a bad block's predecessors come back out."""
    step = block_bytes(1) // 4
    rng = np.random.default_rng(6)
    dense = rng.standard_normal(2 * step + 5).astype(np.float32)
    acc = WeightedSum([TensorSpec("w", "float32", dense.shape)])
    fold_update(acc, 3, {"w": dense}, chunk_bytes=dense.nbytes)
    for position in (step + 7, 2 * step + 1):  # in the second block, in the last one
        bad = rng.standard_normal(dense.size).astype(np.float32) * 1e3
        bad[position] = np.nan
        fold = acc.begin(5)
        with pytest.raises(UpdateRejected) as info:
            fold.add_dense(0, 0, bad)
        assert info.value.reason == "non_finite"
        fold.abort()
    mean = acc.mean()["w"]
    # Blocks taken back (|values| up to ~5e3, weight 5) leave float32 rounding of their size, nothing more.
    np.testing.assert_allclose(mean, dense, rtol=0, atol=2 * 5 * 5e3 * 2.0 ** -23 / 3)
