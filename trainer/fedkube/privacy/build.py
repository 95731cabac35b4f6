"""Which mechanism each side of a job runs, from its resolved privacy settings.

The mechanisms are imported only by a job that uses one: the accountant behind them pulls in
dp-accounting and scipy, a large share of a process's start-up that a job without DP never needs.
"""

from __future__ import annotations

from fedkube.privacy.base import AggregatorPrivacy
from fedkube.privacy.client import LocalPrivacy
from fedkube.privacy.settings import PrivacySettings


def aggregator_privacy(settings: PrivacySettings | None) -> AggregatorPrivacy:
    if settings is None:
        return AggregatorPrivacy()
    if settings.level == "sample":
        from fedkube.privacy.sample_level import SampleLevelDP

        return SampleLevelDP(settings)
    from fedkube.privacy.client_level import ClientLevelDP

    return ClientLevelDP(settings)


def client_privacy(settings: PrivacySettings | None) -> LocalPrivacy:
    if settings is None:
        return LocalPrivacy()
    from fedkube.privacy.client import ClippedRelease, DpSgdTraining

    return DpSgdTraining(settings) if settings.level == "sample" else ClippedRelease(settings)
