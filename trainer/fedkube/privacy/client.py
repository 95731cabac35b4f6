"""The client's side: how it trains and what it releases, with or without privacy.

`LocalPrivacy` (no `spec.privacy`) trains as the task does and sends its update as it is.
Client-level DP clips the update to the round's clip norm and, in `distributed` placement,
adds this client's noise share; sample-level DP trains with DP-SGD and reports its epsilon.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from fedkube.plan import TrainSettings
from fedkube.privacy.adaptive import unclipped_indicator
from fedkube.privacy.base import CONFIG_KEY, UNCLIPPED_METRIC
from fedkube.privacy.clipping import clip_update
from fedkube.privacy.noise import add_noise_share, count_share_std, noise_generator
from fedkube.privacy.settings import PrivacySettings
from fedkube.tasks import Task
from fedkube.tasks.base import TrainResult
from fedkube.weights import Weights


class LocalPrivacy:
    """No privacy: the task's own training, the update unchanged."""

    def train(self, task: Task, model: torch.nn.Module, data: Dataset[Any], train: TrainSettings,
              device: torch.device, seed: int, config: dict[str, Any]) -> TrainResult:
        return task.train(model, data, train, device, seed)

    def release(self, update: Weights, config: dict[str, Any]) -> tuple[Weights, dict[str, float]]:
        """The update to send and the metrics to add to it."""
        return update, {}

    def weight(self, num_examples: int) -> int:
        """The update's weight in a sum the aggregator cannot reweight (secure aggregation)."""
        return num_examples


def round_settings(config: dict[str, Any]) -> dict[str, Any]:
    try:
        settings: dict[str, Any] = config[CONFIG_KEY]
    except KeyError:
        raise ValueError("the round config has no privacy settings: the aggregator runs a manifest without "
                         "spec.privacy") from None
    return settings


class ClippedRelease(LocalPrivacy):
    """Client-level DP: clip to the round's C; when distributed, add this client's noise shares."""

    def __init__(self, settings: PrivacySettings) -> None:
        self.settings = settings
        self.rng = noise_generator()

    def release(self, update: Weights, config: dict[str, Any]) -> tuple[Weights, dict[str, float]]:
        bound = float(round_settings(config)["clippingNorm"])
        clipped, norm = clip_update(update, bound)
        metrics = {}
        if self.settings.adaptive is not None:
            metrics[UNCLIPPED_METRIC] = unclipped_indicator(norm, bound) + float(
                self.rng.normal(0.0, count_share_std(self.settings)))
        add_noise_share(clipped, self.settings, bound, self.rng)
        return clipped, metrics

    def weight(self, num_examples: int) -> int:
        """1: an example count would be unbounded, and private; the clipped sum's sensitivity assumes 1."""
        return 1


class DpSgdTraining(LocalPrivacy):
    """Sample-level DP: Opacus DP-SGD, then the update as it is with this client's epsilon."""

    def __init__(self, settings: PrivacySettings) -> None:
        self.settings = settings
        self.last: tuple[float, int] = (0.0, 0)

    def train(self, task: Task, model: torch.nn.Module, data: Dataset[Any], train: TrainSettings,
              device: torch.device, seed: int, config: dict[str, Any]) -> TrainResult:
        from fedkube.privacy.sample_level import train_dp_sgd  # dp-accounting only for jobs that use it

        result, rate, steps = train_dp_sgd(task, model, data, train, device, self.settings)
        self.last = (rate, steps)
        return result

    def release(self, update: Weights, config: dict[str, Any]) -> tuple[Weights, dict[str, float]]:
        from fedkube.privacy.sample_level import client_report

        return update, client_report(self.settings, config, *self.last)

