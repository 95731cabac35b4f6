"""A test task option for robustness: chosen clients send poisoned updates instead of honest ones.

`fedkube.tasks.byzantine:task` wraps any task. Clients of the listed `partitions` train honestly,
then replace their update `u` (local minus global weights) by `-scale * u` (`signflip`, pushing
the model uphill) or `scale * u` (`scale`, drowning out everyone else); the other clients and
the aggregator's evaluation are the wrapped task's own. It exists to show what robust
aggregators are for: FedAvg's mean follows the attackers, the median does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from fedkube.plan import TrainSettings
from fedkube.spec.model import PartitionerSpec, TaskSpec
from fedkube.tasks.base import Task, TrainResult, load_task, parse_config
from fedkube.weights import get_weights, set_weights

ATTACKS = ("signflip", "scale")


@dataclass(frozen=True)
class ByzantineConfig:
    """`task`: the honest task (`entrypoint`, `config`); `partitions`: who attacks; `attack`, `scale`."""

    task: TaskSpec
    partitions: tuple[int, ...] = ()
    attack: str = "signflip"
    scale: float = 10.0

    def __post_init__(self) -> None:
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {list(ATTACKS)}, got {self.attack!r}")
        if not isinstance(self.scale, float) or self.scale <= 0:
            raise ValueError(f"scale must be a positive number, got {self.scale!r}")


class ByzantineTask(Task):
    name = "byzantine"

    def __init__(self, config: ByzantineConfig) -> None:
        self.honest = load_task(config.task)
        self.attackers = set(config.partitions)
        self.factor = -config.scale if config.attack == "signflip" else config.scale
        self.partition = -1

    def build_model(self) -> torch.nn.Module:
        return self.honest.build_model()

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> Dataset[Any]:
        self.partition = partition
        return self.honest.load_partition(partition, num_partitions, partitioner)

    def load_test(self) -> Dataset[Any] | None:
        return self.honest.load_test()

    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        start = get_weights(model)
        result = self.honest.train(model, data, settings, device, seed)
        if self.partition in self.attackers:
            trained = get_weights(model)
            set_weights(model, {n: start[n] + self.factor * (trained[n] - start[n]) for n in start})
        return result

    def evaluate(self, model: torch.nn.Module, data: Dataset[Any], device: torch.device) -> dict[str, float]:
        return self.honest.evaluate(model, data, device)


def task(config: dict[str, Any]) -> ByzantineTask:
    """Entrypoint `fedkube.tasks.byzantine:task`; config keys `task`, `partitions`, `attack`, `scale`."""
    return ByzantineTask(parse_config(ByzantineConfig, config, ByzantineTask.name))
