"""Tasks used only by the integration tests (imported by the aggregator and client processes).

`big` has a model of about 20M float32 parameters, to push real megabytes through the protocol;
`straggler` is digits where one partition sleeps in chosen rounds, to test deadlines and drops;
`broken_partition` is digits where one partition's client crashes at start.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from fedkube.plan import TrainSettings
from fedkube.spec.model import PartitionerSpec
from fedkube.tasks.base import ClassificationTask, TrainResult
from fedkube.tasks.digits import DigitsConfig, DigitsTask


class BigTask(ClassificationTask):
    """One linear layer of width x width (4472**2 + 4472 is about 20.0M parameters), random data."""

    name = "big"

    def __init__(self, width: int) -> None:
        self.width = width

    def build_model(self) -> torch.nn.Module:
        return torch.nn.Linear(self.width, self.width)

    def _data(self, seed: int) -> TensorDataset:
        g = torch.Generator().manual_seed(seed)
        return TensorDataset(torch.randn(8, self.width, generator=g), torch.randint(0, self.width, (8,), generator=g))

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> Dataset[Any]:
        return self._data(100 + partition)

    def load_test(self) -> Dataset[Any]:
        return self._data(0)


def big(config: dict[str, Any]) -> BigTask:
    return BigTask(int(config.get("width", 4472)))


class StragglerTask(DigitsTask):
    """Digits where partition `slowPartition` sleeps `seconds` before training on its listed calls."""

    def __init__(self, slow_partition: int, slow_calls: list[int], seconds: float) -> None:
        super().__init__(DigitsConfig())
        self.slow_partition, self.slow_calls, self.seconds = slow_partition, slow_calls, seconds
        self.partition = -1
        self.calls = 0

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> TensorDataset:
        self.partition = partition
        return super().load_partition(partition, num_partitions, partitioner)

    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        self.calls += 1
        if self.partition == self.slow_partition and self.calls in self.slow_calls:
            time.sleep(self.seconds)
        return super().train(model, data, settings, device, seed)


def straggler(config: dict[str, Any]) -> StragglerTask:
    return StragglerTask(int(config["slowPartition"]), list(config["slowCalls"]), float(config["seconds"]))


class KnownUpdateTask(BigTask):
    """Each partition's local model is a known function of the partition, and so is its weight.

    Training sets every parameter of partition p to `target(p)` and reports 10 * (p + 1)
    examples, so a test knows exactly what the weighted FedAvg of any set of clients must be.
    """

    name = "known-update"

    def __init__(self, seconds: float) -> None:
        super().__init__(width=6)
        self.partition, self.seconds = -1, seconds

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> Dataset[Any]:
        self.partition = partition
        return super().load_partition(partition, num_partitions, partitioner)

    @staticmethod
    def target(partition: int, numel: int) -> torch.Tensor:
        return torch.linspace(-0.4, 0.4, numel) * (partition + 1) / 8 + 0.01 * partition

    @staticmethod
    def examples(partition: int) -> int:
        return 10 * (partition + 1)

    @torch.no_grad()
    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        time.sleep(self.seconds)
        for param in model.parameters():
            param.copy_(self.target(self.partition, param.numel()).reshape(param.shape))
        return TrainResult(self.examples(self.partition), {"loss": 0.0, "accuracy": 0.0})


def known_update(config: dict[str, Any]) -> KnownUpdateTask:
    return KnownUpdateTask(float(config.get("seconds", 0.0)))


class BrokenPartitionTask(DigitsTask):
    """Digits whose partition `brokenPartition` cannot load its data: that client crashes at start."""

    def __init__(self, broken_partition: int) -> None:
        super().__init__(DigitsConfig())
        self.broken_partition = broken_partition

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> TensorDataset:
        if partition == self.broken_partition:
            raise RuntimeError(f"partition {partition}'s disk is unreadable")
        return super().load_partition(partition, num_partitions, partitioner)


def broken_partition(config: dict[str, Any]) -> BrokenPartitionTask:
    return BrokenPartitionTask(int(config["brokenPartition"]))
