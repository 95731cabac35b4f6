"""Bounding one participant's influence: the L2 norm of a whole update, across all its tensors.

The scale is computed in float64 and shrunk by a hair, so the float32 result can never land a
rounding error above the bound the accountant assumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

Weights = dict[str, np.ndarray]
# Relative slack under the bound: float32 rounding of a scaled vector stays far inside it.
SHRINK = 1e-6


def l2_norm(arrays: Iterable[np.ndarray]) -> float:
    """The L2 norm of all arrays taken as one vector, accumulated in float64."""
    return math.sqrt(sum(float(np.dot(a.ravel().astype(np.float64), a.ravel().astype(np.float64)))
                         for a in arrays))


def clip_update(update: Mapping[str, np.ndarray], bound: float) -> tuple[Weights, float]:
    """`update` scaled down to L2 norm at most `bound` (unchanged if already within); and its norm before."""
    if not bound > 0:
        raise ValueError(f"the clipping norm must be positive, got {bound}")
    norm = l2_norm(update.values())
    if norm <= bound:
        return {name: a.copy() for name, a in update.items()}, norm
    scale = bound / norm * (1 - SHRINK)
    return {name: (a * scale).astype(a.dtype, copy=False) for name, a in update.items()}, norm
