"""Gaussian noise for the update sum: all of it at the aggregator, or one share per client.

`add_noise_share` is the client half of `distributed` placement, and the function a secure
aggregation client calls on its update before masking: each of at least t summed updates adds
variance (sigma C)^2 / t, so the unmasked sum carries at least the accounted noise and nobody,
the aggregator included, sees an un-noised sum. If more than t clients report, the sum is only
noisier; fewer than t never completes a round.

Noise comes from fresh OS entropy, never from the job's seed, which is in the manifest.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from fedkube.privacy.settings import PrivacySettings, share_std


def noise_generator() -> np.random.Generator:
    """A generator seeded from the OS: noise nobody can reproduce from the job's public seed."""
    return np.random.default_rng()


def add_gaussian(arrays: Iterable[np.ndarray], std: float, rng: np.random.Generator) -> None:
    """Add N(0, std^2) to every element, in place, one tensor at a time (no model-sized copy)."""
    if std == 0:
        return
    for array in arrays:
        array += rng.normal(0.0, std, size=array.shape).astype(array.dtype, copy=False)


def noise_share_std(settings: PrivacySettings, clipping_norm: float) -> float:
    """Std of one client's share of the update noise (0 when the aggregator adds it centrally)."""
    return share_std(settings.update_noise_multiplier * clipping_norm, settings.share_fraction())


def count_share_std(settings: PrivacySettings) -> float:
    """Std of one client's share of the noise on the count of unclipped updates."""
    return share_std(settings.count_noise_std, settings.share_fraction())


def add_noise_share(update: Mapping[str, np.ndarray], settings: PrivacySettings, clipping_norm: float,
                    rng: np.random.Generator | None = None) -> None:
    """Add this client's share of the `distributed` noise to its clipped update, in place."""
    add_gaussian(update.values(), noise_share_std(settings, clipping_norm), rng or noise_generator())
