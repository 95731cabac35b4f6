"""Credit-risk classification for the finance example, on SYNTHETIC data.

No real loan book ships with an open library, so the borrowers are generated with
scikit-learn's `make_classification`: `features` columns of which half carry signal and a
quarter are linear mixes of those (as income, debt and utilisation ratios are), with
`defaultRate` of borrowers in the positive "defaults" class and 1% of labels flipped as noise.
Each partition stands for a bank that keeps its customers; like the medical example, every party
standardises with its own statistics only. The data set is fixed by `dataSeed`, so every client
generates the same borrowers and keeps its own slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.datasets import make_classification

from fedkube.tasks.base import InMemoryClassificationTask, InMemoryConfig, check_widths, parse_config
from fedkube.tasks.breast_cancer import standardise
from fedkube.tasks.layers import mlp

NUM_CLASSES = 2


@dataclass(frozen=True)
class CreditRiskConfig(InMemoryConfig):
    """Size and shape of the synthetic loan book, and the MLP's hidden layer widths."""

    samples: int = 6000
    features: int = 20
    default_rate: float = 0.2
    data_seed: int = 0
    hidden_sizes: tuple[int, ...] = (32, 16)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_widths("hiddenSizes", self.hidden_sizes, allow_empty=True)
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 100:
            raise ValueError(f"samples must be an integer of at least 100, got {self.samples!r}")
        if isinstance(self.features, bool) or not isinstance(self.features, int) or self.features < 4:
            raise ValueError(f"features must be an integer of at least 4, got {self.features!r}")
        if not isinstance(self.default_rate, float) or not 0 < self.default_rate < 1:
            raise ValueError(f"defaultRate must be a number between 0 and 1, got {self.default_rate!r}")


class CreditRiskTask(InMemoryClassificationTask):
    name = "credit-risk"

    def __init__(self, config: CreditRiskConfig) -> None:
        super().__init__(config.test_fraction)
        self.config = config

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        features, labels = make_classification(
            n_samples=c.samples, n_features=c.features, n_informative=c.features // 2,
            n_redundant=c.features // 4, weights=[1 - c.default_rate], flip_y=0.01, random_state=c.data_seed)
        return features, labels

    def to_tensor(self, features: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(standardise(features), dtype=torch.float32)

    def build_model(self) -> torch.nn.Module:
        return mlp(self.config.features, self.config.hidden_sizes, NUM_CLASSES)


def task(config: dict[str, Any]) -> CreditRiskTask:
    """Entrypoint `fedkube.tasks.credit_risk:task`.

    Config keys: `testFraction` (0.2), `samples` (6000), `features` (20), `defaultRate` (0.2),
    `dataSeed` (0), `hiddenSizes` ([32, 16]).
    """
    return CreditRiskTask(parse_config(CreditRiskConfig, config, CreditRiskTask.name))
