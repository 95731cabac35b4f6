"""partition_indices: every client must derive the same disjoint, covering, non-empty split."""

from __future__ import annotations

import numpy as np
import pytest

from fedkube.spec.model import PartitionerSpec
from fedkube.tasks.partition import DIRICHLET_MIN_SAMPLES, partition_indices

# 10 classes of 100 samples each, in a fixed shuffled order.
LABELS = np.random.default_rng(123).permutation(np.repeat(np.arange(10), 100))

SPLITS = [
    # (name, labels, num_partitions, spec)
    ("iid", LABELS, 7, PartitionerSpec("iid", seed=3)),
    ("iid one partition", LABELS, 1, PartitionerSpec("iid")),
    ("iid one sample each", LABELS[:20], 20, PartitionerSpec("iid")),
    ("dirichlet skewed", LABELS, 10, PartitionerSpec("dirichlet", alpha=0.1, seed=1)),
    ("dirichlet mild", LABELS, 8, PartitionerSpec("dirichlet", alpha=0.5, seed=0)),
    ("dirichlet tiny data", LABELS[:30], 6, PartitionerSpec("dirichlet", alpha=1.0, seed=2)),
    ("shards two per client", LABELS, 10, PartitionerSpec("shards", shards_per_client=2, seed=5)),
    ("shards uneven", LABELS[:997], 9, PartitionerSpec("shards", shards_per_client=3, seed=5)),
]


@pytest.mark.parametrize(("name", "labels", "num_partitions", "spec"), SPLITS, ids=[s[0] for s in SPLITS])
def test_partitions_are_disjoint_covering_non_empty_and_sorted(
        name: str, labels: np.ndarray, num_partitions: int, spec: PartitionerSpec) -> None:
    parts = partition_indices(labels, num_partitions, spec)

    assert len(parts) == num_partitions
    assert all(len(p) > 0 for p in parts)
    assert all(np.array_equal(p, np.sort(p)) for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels)
    assert np.array_equal(np.sort(joined), np.arange(len(labels)))


@pytest.mark.parametrize(("name", "labels", "num_partitions", "spec"), SPLITS, ids=[s[0] for s in SPLITS])
def test_partitions_depend_only_on_the_seed(
        name: str, labels: np.ndarray, num_partitions: int, spec: PartitionerSpec) -> None:
    first = partition_indices(labels, num_partitions, spec)
    again = partition_indices(labels.copy(), num_partitions, spec)
    reseeded = partition_indices(labels, num_partitions, PartitionerSpec(
        spec.kind, spec.alpha, spec.shards_per_client, spec.seed + 1))

    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    if num_partitions > 1:
        assert any(not np.array_equal(a, b) for a, b in zip(first, reseeded, strict=True))


def test_iid_sizes_differ_by_at_most_one() -> None:
    sizes = [len(p) for p in partition_indices(LABELS, 7, PartitionerSpec("iid"))]

    assert max(sizes) - min(sizes) <= 1


def _dominant_class_share(alpha: float) -> float:
    """Mean, over partitions, of the fraction of a partition's samples in its largest class."""
    parts = partition_indices(LABELS, 10, PartitionerSpec("dirichlet", alpha=alpha, seed=0))
    return float(np.mean([np.bincount(LABELS[p]).max() / len(p) for p in parts]))


def test_dirichlet_skew_grows_as_alpha_shrinks() -> None:
    # IID would give about 0.1 (10 balanced classes); alpha 0.1 concentrates each client on few labels.
    assert _dominant_class_share(0.1) > 0.45
    assert _dominant_class_share(1000.0) < 0.15


def test_dirichlet_gives_every_partition_the_minimum() -> None:
    parts = partition_indices(LABELS, 10, PartitionerSpec("dirichlet", alpha=0.1, seed=4))

    assert min(len(p) for p in parts) >= DIRICHLET_MIN_SAMPLES


def test_shards_give_each_client_its_shards_of_few_labels() -> None:
    # 20 shards of 50 samples over classes of 100: every shard holds exactly one label.
    parts = partition_indices(LABELS, 10, PartitionerSpec("shards", shards_per_client=2, seed=0))

    assert [len(p) for p in parts] == [100] * 10
    assert all(len(np.unique(LABELS[p])) <= 2 for p in parts)
    assert len(np.unique(np.concatenate([np.unique(LABELS[p]) for p in parts]))) == 10


ERRORS = [
    # (name, labels, num_partitions, spec, words the message must contain)
    ("more partitions than samples", LABELS[:5], 6, PartitionerSpec("iid"), "spec.data.partitions"),
    ("no partitions", LABELS, 0, PartitionerSpec("iid"), "spec.data.partitions"),
    ("unknown kind", LABELS, 2, PartitionerSpec("random"), "spec.data.partitioner.kind"),
    ("more shards than samples", LABELS[:5], 3, PartitionerSpec("shards", shards_per_client=2),
     "spec.data.partitions"),
    ("no shards", LABELS, 3, PartitionerSpec("shards", shards_per_client=0), "shardsPerClient"),
    ("alpha not positive", LABELS, 3, PartitionerSpec("dirichlet", alpha=0.0), "alpha"),
    ("dirichlet cannot fill every partition", np.repeat([0, 1], 6), 10,
     PartitionerSpec("dirichlet", alpha=0.01), "spec.data.partitions"),
    ("labels not 1-d", LABELS.reshape(100, 10), 2, PartitionerSpec("iid"), "one-dimensional"),
]


@pytest.mark.parametrize(("name", "labels", "num_partitions", "spec", "words"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_impossible_splits_raise_naming_the_field(
        name: str, labels: np.ndarray, num_partitions: int, spec: PartitionerSpec, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        partition_indices(labels, num_partitions, spec)
