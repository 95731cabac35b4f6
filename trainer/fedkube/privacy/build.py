"""Which mechanism each side of a job runs, from its resolved privacy settings."""

from __future__ import annotations

from fedkube.privacy.base import AggregatorPrivacy
from fedkube.privacy.client import ClippedRelease, DpSgdTraining, LocalPrivacy
from fedkube.privacy.client_level import ClientLevelDP
from fedkube.privacy.sample_level import SampleLevelDP
from fedkube.privacy.settings import PrivacySettings


def aggregator_privacy(settings: PrivacySettings | None) -> AggregatorPrivacy:
    if settings is None:
        return AggregatorPrivacy()
    return SampleLevelDP(settings) if settings.level == "sample" else ClientLevelDP(settings)


def client_privacy(settings: PrivacySettings | None) -> LocalPrivacy:
    if settings is None:
        return LocalPrivacy()
    return DpSgdTraining(settings) if settings.level == "sample" else ClippedRelease(settings)
