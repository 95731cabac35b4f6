"""Adaptive clipping (Andrew et al. 2021): the clip norm follows a quantile of the update norms.

Each client reports whether its update's norm was within the current clip norm C (a bit, centred
to sensitivity 1/2); the aggregator sees only the noised count and moves C geometrically:
C <- C * exp(-eta * (noised fraction unclipped - gamma)). At the fixed point a fraction gamma of
updates is unclipped, so C is the gamma-quantile of the norms. The count is part of the round's
Gaussian query, so its privacy cost is in the accounted noise multiplier (see `settings`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedkube.privacy.settings import AdaptiveSettings


@dataclass
class AdaptiveClipNorm:
    """The current clip norm and its update rule; `norm` is checkpointed."""

    settings: AdaptiveSettings
    norm: float

    def update(self, noised_unclipped: float, denominator: float) -> float:
        """Move the norm towards the target quantile given the noised count of unclipped updates."""
        fraction = noised_unclipped / denominator
        self.norm *= math.exp(-self.settings.learning_rate * (fraction - self.settings.target_quantile))
        return self.norm


def unclipped_indicator(norm: float, clipping_norm: float) -> float:
    """A client's contribution to the count: 1 if its update needed no clipping."""
    return 1.0 if norm <= clipping_norm else 0.0
