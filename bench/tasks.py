"""Tasks that do (almost) no work, so a benchmark times the framework and nothing else.

`tiny`: a one-weight model whose training returns at once, for per-round orchestration overhead.
`blob`: one float32 tensor of `params` values and no training, to push a large model through
the wire. Neither has a test set, so the aggregator evaluates nothing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from fedkube.plan import TrainSettings
from fedkube.spec.model import PartitionerSpec
from fedkube.tasks.base import ClassificationTask, TrainResult


class NoWorkTask(ClassificationTask):
    """A model of `params` float32 values; training leaves it unchanged and reports one example."""

    def __init__(self, name: str, params: int) -> None:
        self.name, self.params = name, params

    def build_model(self) -> torch.nn.Module:
        model = torch.nn.Module()
        model.weight = torch.nn.Parameter(torch.zeros(self.params))
        return model

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> Dataset[Any]:
        return TensorDataset(torch.zeros(1, 1), torch.zeros(1, dtype=torch.long))

    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        return TrainResult(1, {})


def tiny(config: dict[str, Any]) -> NoWorkTask:
    return NoWorkTask("tiny", 1)


def blob(config: dict[str, Any]) -> NoWorkTask:
    return NoWorkTask("blob", int(config.get("params", 250_000_000)))
