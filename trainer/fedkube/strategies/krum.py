"""Krum and Multi-Krum (Blanchard et al. 2017): keep the updates closest to their neighbours.

Each update scores the sum of squared distances to its n - f - 2 nearest others (f, `byzantine`,
is the number of Byzantine clients tolerated); Krum moves by the best-scoring update alone,
Multi-Krum (`multiKrum` = m) by the plain mean of the m best. An outlier is far from every honest
update, so it scores badly and is left out. Guarantees need n > 2f + 2, which validation checks
against `spec.clients.minAvailable`; a round that still ends up smaller uses at least one neighbour.
"""

from __future__ import annotations

import numpy as np

from fedkube.aggregator.stack import UpdateStack
from fedkube.strategies.robust import RobustStrategy


def pairwise_sq_distances(updates: UpdateStack) -> np.ndarray:
    """(n, n) squared Euclidean distances, accumulated tensor by tensor in float64."""
    n = updates.count
    dist = np.zeros((n, n))
    for i in range(len(updates.specs)):
        x = updates.tensor(i).astype(np.float64)
        sq = np.einsum("ij,ij->i", x, x)
        dist += sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(dist, 0.0)
    return np.maximum(dist, 0.0)


def krum_scores(dist: np.ndarray, byzantine: int) -> np.ndarray:
    n = len(dist)
    neighbours = min(max(1, n - byzantine - 2), n - 1)
    if neighbours == 0:  # a single update is its own best
        return np.zeros(n)
    others = np.sort(dist + np.diag(np.full(n, np.inf)), axis=1)[:, :neighbours]
    return others.sum(axis=1)


class Krum(RobustStrategy):
    name = "krum"

    def __init__(self, server_lr: float = 1.0, byzantine: int = 0, select: int = 1) -> None:
        super().__init__(server_lr)
        self.byzantine, self.select = byzantine, select

    def aggregate(self, updates: UpdateStack) -> np.ndarray:
        scores = krum_scores(pairwise_sq_distances(updates), self.byzantine)
        chosen = np.argsort(scores, kind="stable")[:min(self.select, updates.count)]
        return np.mean([updates.updates[i] for i in chosen], axis=0, dtype=np.float32)
