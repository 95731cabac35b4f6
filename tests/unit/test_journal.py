"""An update's folded chunks, kept to undo a broken stream: in memory up to a budget, then spilled."""

import numpy as np

from fedkube.aggregator.accumulate import WeightedSum
from fedkube.aggregator.journal import FoldJournal
from fedkube.protocol.tensors import specs_of


def test_chunks_beyond_the_budget_spill_and_come_back_newest_first():
    journal = FoldJournal(budget=16)
    dense = np.arange(4, dtype=np.float32)  # 16 bytes: fits the budget
    late = np.arange(5, 9, dtype=np.float32)  # over it: spilled
    positions, sparse = np.array([7, 2], np.int64), np.array([1.5, -2.5], np.float16)
    journal.record(0, slice(0, 4), dense)
    journal.record(0, slice(4, 8), late)
    journal.record(1, positions, sparse)
    assert journal.held == 16 and journal.spilled == late.nbytes + sparse.nbytes + positions.nbytes
    (i3, w3, v3), (i2, w2, v2), (i1, w1, v1) = journal.replay()
    assert (i3, i2, i1) == (1, 0, 0)
    np.testing.assert_array_equal(w3, positions)
    assert v3.dtype == np.float16 and v3.tolist() == [1.5, -2.5]
    assert w2 == slice(4, 8) and v2.tolist() == late.tolist()
    assert v1 is dense  # kept in memory, not copied
    journal.clear()
    assert journal.held == journal.spilled == 0 and list(journal.replay()) == []


def test_an_aborted_update_leaves_the_sum_as_it_was_even_when_spilled():
    acc = WeightedSum(specs_of({"w": np.zeros(6, np.float32)}))
    kept = acc.begin(2.0)
    kept.add_dense(0, 0, np.array([1, 2, 3, 4, 5, 6], np.float32))
    kept.commit()
    broken = acc.begin(3.0)
    broken._folded.budget = 8  # the first chunk stays in memory, the second spills
    broken.add_dense(0, 0, np.array([1, 1], np.float32))
    broken.add_dense(0, 2, np.array([7, 7, 7, 7], np.float32))
    assert broken._folded.spilled == 16
    broken.abort()
    np.testing.assert_array_equal(acc.mean()["w"], [1, 2, 3, 4, 5, 6])
