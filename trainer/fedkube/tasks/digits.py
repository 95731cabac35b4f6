"""Handwritten digits (scikit-learn's `load_digits`, 1,797 8x8 images): the quickstart task.

It ships with scikit-learn, so the demo needs no download, and a small CNN trains on it on a CPU
in milliseconds per client and round while still showing the effect of non-IID partitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits

from fedkube.tasks.base import InMemoryClassificationTask, InMemoryConfig, check_widths, parse_config

NUM_CLASSES = 10
IMAGE_SIZE = 8
MAX_PIXEL = 16.0  # load_digits pixels are integers in [0, 16]


@dataclass(frozen=True)
class DigitsConfig(InMemoryConfig):
    """`channels`: output channels of each 3x3 convolution, before one 2x2 max-pool and a linear layer."""

    channels: tuple[int, ...] = (16, 32)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_widths("channels", self.channels, allow_empty=False)


class DigitsTask(InMemoryClassificationTask):
    name = "digits"

    def __init__(self, config: DigitsConfig) -> None:
        super().__init__(config.test_fraction)
        self.channels = config.channels

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        features, labels = load_digits(return_X_y=True)
        return features, labels

    def to_tensor(self, features: np.ndarray) -> torch.Tensor:
        """Images as 1x8x8 in [0, 1]: a fixed per-pixel scale, so no statistics are shared."""
        images = torch.as_tensor(features / MAX_PIXEL, dtype=torch.float32)
        return images.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)

    def build_model(self) -> torch.nn.Module:
        layers: list[torch.nn.Module] = []
        in_channels = 1
        for out_channels in self.channels:
            layers += [torch.nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), torch.nn.ReLU()]
            in_channels = out_channels
        pooled = (IMAGE_SIZE // 2) ** 2
        return torch.nn.Sequential(*layers, torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                   torch.nn.Linear(in_channels * pooled, NUM_CLASSES))


def task(config: dict[str, Any]) -> DigitsTask:
    """Entrypoint `fedkube.tasks.digits:task`.

    Config keys: `testFraction` (default 0.2), `channels` (default [16, 32]).
    """
    return DigitsTask(parse_config(DigitsConfig, config, DigitsTask.name))
