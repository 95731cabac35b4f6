"""Traffic-flow forecasting for the traffic example, on SYNTHETIC data.

Sensors (e.g. road loops) count vehicles per hour; each partition stands for a road authority that
keeps its own sensors' counts. The series are generated: every sensor has its own volume, a
morning and an evening peak at sensor-specific hours on weekdays, a flatter midday hump at
weekends, and 5% multiplicative noise. The model sees the last `window` hours of one sensor plus
the hour of day and a weekend flag of the hour to predict, and forecasts that hour's flow with a
small MLP. The last `testDays` days of every sensor are held out for the aggregator's evaluation,
so the test lies in the future of all training data.

Partitions are cut over sensors: the partitioner's "labels" are sensor ids, so `shards` gives each
client whole sensors (the natural split between authorities), `dirichlet` a skewed mix, `iid`
random windows. Flows are divided by a fixed 1000 vehicles/hour, so no statistics are shared.
Besides the MSE loss (on that scale), evaluation reports the mean absolute error in vehicles per
hour, `mae`, next to `naive_mae`, the error of repeating the same hour of the previous day.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fedkube.plan import TrainSettings
from fedkube.spec.model import PartitionerSpec
from fedkube.tasks.base import EVAL_BATCH_SIZE, Task, TrainResult, check_widths, make_optimizer, parse_config
from fedkube.tasks.layers import mlp
from fedkube.tasks.partition import partition_indices

HOURS_PER_DAY = 24
FLOW_SCALE = 1000.0   # vehicles per hour
CALENDAR_FEATURES = 3  # sin and cos of the hour of day, weekend flag


@dataclass(frozen=True)
class TrafficConfig:
    """Shape of the synthetic sensor network and of the model."""

    sensors: int = 16
    days: int = 35
    test_days: int = 7
    window: int = 24
    data_seed: int = 0
    hidden_sizes: tuple[int, ...] = (64, 32)

    def __post_init__(self) -> None:
        check_widths("hiddenSizes", self.hidden_sizes, allow_empty=True)
        for key, value, least in (("sensors", self.sensors, 1), ("window", self.window, HOURS_PER_DAY),
                                  ("testDays", self.test_days, 1), ("days", self.days, self.test_days + 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{key} must be an integer of at least {least}, got {value!r}")


def generate_flows(sensors: int, days: int, seed: int) -> np.ndarray:
    """Hourly vehicle counts, shape (sensors, days * 24): daily and weekly periodic, with noise."""
    rng = np.random.default_rng(seed)
    hours = np.arange(days * HOURS_PER_DAY)
    hour_of_day, weekend = hours % HOURS_PER_DAY, (hours // HOURS_PER_DAY) % 7 >= 5
    volume = rng.uniform(200, 1200, (sensors, 1))
    morning, evening = rng.uniform(7, 9, (sensors, 1)), rng.uniform(16.5, 18.5, (sensors, 1))

    def peak(centre: np.ndarray | float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((hour_of_day - centre) / width) ** 2)

    weekday_profile = 0.2 + peak(morning, 1.2) + 0.8 * peak(evening, 1.5)
    weekend_profile = 0.2 + 0.6 * peak(13.0, 3.0) * np.ones((sensors, 1))
    profile = np.where(weekend, weekend_profile, weekday_profile)
    noise = 1 + 0.05 * rng.standard_normal((sensors, len(hours)))
    return np.clip(volume * profile * noise, 0, None)


def windows(flows: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Model inputs, targets (both scaled), the sensor and the hour index of every forecast."""
    sensors, length = flows.shape
    targets_at = np.arange(window, length)
    index = targets_at[:, None] + np.arange(-window, 0)[None, :]
    hour = targets_at % HOURS_PER_DAY
    calendar = np.stack([np.sin(2 * np.pi * hour / HOURS_PER_DAY), np.cos(2 * np.pi * hour / HOURS_PER_DAY),
                         ((targets_at // HOURS_PER_DAY) % 7 >= 5).astype(float)], axis=1)
    inputs = np.concatenate([np.concatenate([flows[s][index] / FLOW_SCALE, calendar], axis=1)
                             for s in range(sensors)])
    targets = np.concatenate([flows[s][targets_at] / FLOW_SCALE for s in range(sensors)])
    sensor = np.repeat(np.arange(sensors), len(targets_at))
    return inputs, targets, sensor, np.tile(targets_at, sensors)


def as_dataset(inputs: np.ndarray, targets: np.ndarray) -> TensorDataset:
    return TensorDataset(torch.as_tensor(inputs, dtype=torch.float32),
                         torch.as_tensor(targets, dtype=torch.float32).unsqueeze(1))


class TrafficTask(Task):
    name = "traffic"

    def __init__(self, config: TrafficConfig) -> None:
        self.config = config

    @functools.cached_property
    def _split(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        c = self.config
        inputs, targets, sensor, hour = windows(generate_flows(c.sensors, c.days, c.data_seed), c.window)
        train = hour < (c.days - c.test_days) * HOURS_PER_DAY
        return (inputs[train], targets[train], sensor[train]), (inputs[~train], targets[~train])

    def build_model(self) -> torch.nn.Module:
        return mlp(self.config.window + CALENDAR_FEATURES, self.config.hidden_sizes, 1)

    def load_partition(self, partition: int, num_partitions: int, partitioner: PartitionerSpec) -> TensorDataset:
        inputs, targets, sensor = self._split[0]
        indices = partition_indices(sensor, num_partitions, partitioner)[partition]
        return as_dataset(inputs[indices], targets[indices])

    def load_test(self) -> TensorDataset:
        return as_dataset(*self._split[1])

    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        optimizer = make_optimizer(model.parameters(), settings.optimizer)
        model.to(device).train()
        for _ in range(settings.local_epochs):
            total, seen = 0.0, 0
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                optimizer.zero_grad()
                loss = F.mse_loss(model(inputs), targets)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(targets)
                seen += len(targets)
        return TrainResult(seen, {"loss": total / seen})

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, data: Dataset[Any], device: torch.device) -> dict[str, float]:
        model.to(device).eval()
        squared, absolute, naive, seen = 0.0, 0.0, 0.0, 0
        day_before = self.config.window - HOURS_PER_DAY  # input column of the same hour one day earlier
        for inputs, targets in DataLoader(data, batch_size=EVAL_BATCH_SIZE):
            inputs, targets = inputs.to(device), targets.to(device)
            predicted = model(inputs)
            squared += float(F.mse_loss(predicted, targets, reduction="sum"))
            absolute += float((predicted - targets).abs().sum())
            naive += float((inputs[:, day_before:day_before + 1] - targets).abs().sum())
            seen += len(targets)
        return {"loss": squared / seen, "mae": absolute / seen * FLOW_SCALE, "naive_mae": naive / seen * FLOW_SCALE}


def task(config: dict[str, Any]) -> TrafficTask:
    """Entrypoint `fedkube.tasks.traffic:task`.

    Config keys: `sensors` (16), `days` (35), `testDays` (7), `window` (24 hours), `dataSeed` (0),
    `hiddenSizes` ([64, 32]).
    """
    return TrafficTask(parse_config(TrafficConfig, config, TrafficTask.name))
