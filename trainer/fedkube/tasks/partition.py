"""Split a labelled data set into client partitions, deterministically, from the seed alone.

Every client runs this same pure function on the same labels and keeps only its own slice, so
no data and no index list ever crosses the wire: the spec's partitioner and seed are the whole
agreement between clients. The partitions are disjoint and together cover every sample.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fedkube.spec.model import PartitionerSpec

# Dirichlet draws are repeated until every partition holds at least this many samples, or half
# its equal share when the data set is too small for that (but always at least one).
DIRICHLET_MIN_SAMPLES = 10
DIRICHLET_MAX_DRAWS = 1000


def _iid(labels: np.ndarray, num_partitions: int, spec: PartitionerSpec) -> list[np.ndarray]:
    """A shuffled split into partitions whose sizes differ by at most one."""
    order = np.random.default_rng(spec.seed).permutation(len(labels))
    return np.array_split(order, num_partitions)


def _dirichlet_draw(labels: np.ndarray, num_partitions: int, alpha: float,
                    rng: np.random.Generator) -> list[np.ndarray]:
    """Each class is shared out in proportions drawn from Dirichlet(alpha): label skew."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        proportions = rng.dirichlet(np.full(num_partitions, alpha))
        cuts = (np.cumsum(proportions)[:-1] * len(members)).astype(int)
        for part, chunk in zip(parts, np.split(members, cuts), strict=True):
            part.append(chunk)
    return [np.concatenate(chunks) for chunks in parts]


def _dirichlet(labels: np.ndarray, num_partitions: int, spec: PartitionerSpec) -> list[np.ndarray]:
    """The standard label-skew scheme (Hsu et al. 2019), redrawn until no partition is too small.

    Draw `k` uses its own generator seeded by `(seed, k)`, so the result depends on the seed only.
    """
    if spec.alpha <= 0:
        raise ValueError(f"spec.data.partitioner.alpha must be positive, got {spec.alpha}")
    minimum = max(1, min(DIRICHLET_MIN_SAMPLES, len(labels) // (2 * num_partitions)))
    for draw in range(DIRICHLET_MAX_DRAWS):
        parts = _dirichlet_draw(labels, num_partitions, spec.alpha, np.random.default_rng([spec.seed, draw]))
        if min(len(p) for p in parts) >= minimum:
            return parts
    raise ValueError(
        f"spec.data.partitions: no Dirichlet(alpha={spec.alpha}) split of {len(labels)} samples into "
        f"{num_partitions} partitions gave each at least {minimum} samples in {DIRICHLET_MAX_DRAWS} "
        f"draws; use fewer partitions or a larger spec.data.partitioner.alpha")


def _shards(labels: np.ndarray, num_partitions: int, spec: PartitionerSpec) -> list[np.ndarray]:
    """McMahan et al.'s pathological non-IID split: each client gets a few label-sorted shards."""
    if spec.shards_per_client < 1:
        raise ValueError(
            f"spec.data.partitioner.shardsPerClient must be at least 1, got {spec.shards_per_client}")
    num_shards = num_partitions * spec.shards_per_client
    if num_shards > len(labels):
        raise ValueError(
            f"spec.data.partitions: {num_partitions} partitions x {spec.shards_per_client} shards per "
            f"client need {num_shards} samples, the data set has {len(labels)}")
    rng = np.random.default_rng(spec.seed)
    # Shuffle first so that which samples of a class land in which shard depends on the seed.
    shuffled = rng.permutation(len(labels))
    by_label = shuffled[np.argsort(labels[shuffled], kind="stable")]
    shards = np.array_split(by_label, num_shards)
    dealt = rng.permutation(num_shards).reshape(num_partitions, spec.shards_per_client)
    return [np.concatenate([shards[s] for s in hand]) for hand in dealt]


PARTITIONERS: dict[str, Callable[[np.ndarray, int, PartitionerSpec], list[np.ndarray]]] = {
    "iid": _iid,
    "dirichlet": _dirichlet,
    "shards": _shards,
}


def partition_indices(labels: np.ndarray, num_partitions: int, spec: PartitionerSpec) -> list[np.ndarray]:
    """Indices into `labels` for each of `num_partitions` partitions, each sorted and non-empty.

    Raises ValueError, naming the spec field, when the split is impossible or the kind unknown.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    if num_partitions < 1:
        raise ValueError(f"spec.data.partitions must be at least 1, got {num_partitions}")
    if num_partitions > len(labels):
        raise ValueError(
            f"spec.data.partitions: {num_partitions} partitions exceed the {len(labels)} samples to split")
    partitioner = PARTITIONERS.get(spec.kind)
    if partitioner is None:
        raise ValueError(f"spec.data.partitioner.kind {spec.kind!r} is not one of {sorted(PARTITIONERS)}")
    return [np.sort(p).astype(np.int64) for p in partitioner(labels, num_partitions, spec)]
