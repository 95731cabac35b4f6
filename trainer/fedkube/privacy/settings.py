"""What the privacy mechanisms need from the spec, resolved once in the plan (pure, no I/O).

Both sides derive their numbers from the same manifest: the aggregator for its central noise
and accounting, each client for its clipping and, in `distributed` placement, its noise share,
so a client never relies on the aggregator to tell it how much noise protects it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedkube.spec.model import PrivacySpec


@dataclass(frozen=True)
class AdaptiveSettings:
    """Andrew et al. 2021: geometric updates of the clip norm towards a quantile of update norms."""

    target_quantile: float
    learning_rate: float
    count_noise_multiplier: float  # std of the noise on the clipped count / its sensitivity (1/2)


@dataclass(frozen=True)
class PrivacySettings:
    """`spec.privacy` plus the sampling facts its accounting depends on."""

    level: str
    placement: str
    noise_multiplier: float        # z: what the accountant charges per round
    clipping_norm: float           # C (the initial C with adaptive clipping)
    delta: float
    target_epsilon: float | None
    accountant: str
    sampling: str                  # client sampling: fixed | poisson
    population: int                # N: partitions, the clients that can be sampled
    expected_clients: int          # m: clients sampled per round (expected, for poisson)
    min_reports: int               # t: fewest updates summed in a completed round
    adaptive: AdaptiveSettings | None = None
    masked: bool = False           # secure aggregation hides each update from the aggregator

    @property
    def update_noise_multiplier(self) -> float:
        """Noise multiplier on the update sum: all of z, or what the clipped count leaves of it.

        The sum and the count are one Gaussian query of noise multiplier z when
        z^-2 = z_update^-2 + z_count^-2 (Andrew et al. 2021, section 3.1).
        """
        if self.adaptive is None:
            return self.noise_multiplier
        return (self.noise_multiplier ** -2 - self.adaptive.count_noise_multiplier ** -2) ** -0.5

    @property
    def count_noise_std(self) -> float:
        """Std of the noise on the count of unclipped updates (sensitivity 1/2 once centred)."""
        return 0.0 if self.adaptive is None else self.adaptive.count_noise_multiplier / 2

    def share_fraction(self) -> float:
        """Each client's share of the noise variance: 1/t when distributed, none when central.

        With t shares the sum carries exactly the configured noise; more reports only add more.
        """
        return 1.0 / self.min_reports if self.placement == "distributed" else 0.0


def default_count_noise_multiplier(noise_multiplier: float, expected_clients: int) -> float:
    """The paper's sigma_b = m/20 (multiplier m/10), but at least 2z so the update keeps most of z."""
    return max(expected_clients / 10, 2 * noise_multiplier)


def privacy_settings(spec: PrivacySpec, sampling: str, population: int, expected_clients: int,
                     min_reports: int, masked: bool = False) -> PrivacySettings:
    adaptive = None
    if spec.adaptive_clipping is not None:
        a = spec.adaptive_clipping
        count = a.count_noise_multiplier
        if count is None:
            count = default_count_noise_multiplier(spec.noise_multiplier, expected_clients)
        adaptive = AdaptiveSettings(a.target_quantile, a.learning_rate, count)
    return PrivacySettings(
        level=spec.level, placement=spec.placement, noise_multiplier=spec.noise_multiplier,
        clipping_norm=spec.clipping_norm, delta=spec.delta, target_epsilon=spec.target_epsilon,
        accountant=spec.accountant, sampling=sampling, population=population,
        expected_clients=expected_clients, min_reports=max(1, min_reports), adaptive=adaptive, masked=masked)


def share_std(total_std: float, fraction: float) -> float:
    """Std of one share when `fraction` of the variance `total_std**2` is added per client."""
    return total_std * math.sqrt(fraction)
