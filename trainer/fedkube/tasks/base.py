"""The Task interface: what a user brings to a job, reached through a `module:function` entrypoint.

A task says how to build the model, how a client loads its own partition, and how to train and
evaluate. Clients and the aggregator only ever talk to this interface, so a new data set or
model needs no change anywhere else. `ClassificationTask` holds the supervised training loop
once; `InMemoryClassificationTask` adds the held-out split and partitioning for data sets that
fit in memory, so the built-in tasks only say what data and which model.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, TensorDataset

from fedkube.plan import TrainSettings
from fedkube.spec.model import OptimizerSpec, PartitionerSpec, TaskSpec, camel, from_dict
from fedkube.stores import Store
from fedkube.tasks.files import SourceDataError, read_labelled_arrays
from fedkube.tasks.partition import partition_indices

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# The held-out test split is the same for every job, whatever its seed, so results compare.
TEST_SPLIT_SEED = 0
EVAL_BATCH_SIZE = 512


def round_seed(seed: int, round_number: int, partition: int) -> int:
    """The seed of one client's training in one round, reproducible: a hash of the three (numpy's
    SeedSequence cost a small round more than the rest of the client's own work on it)."""
    digest = hashlib.blake2b(f"{seed}:{round_number}:{partition}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class TaskError(ValueError):
    """A task that cannot be loaded or configured; the message names the entrypoint or key."""


@dataclass(frozen=True)
class TrainResult:
    """What a client reports after local training: FedAvg weights updates by `num_examples`."""

    num_examples: int
    metrics: dict[str, float]


class Task(ABC):
    """A federated learning task: model, per-client data, local training and evaluation."""

    name: str

    @abstractmethod
    def build_model(self) -> torch.nn.Module:
        """A freshly initialised model; the caller seeds torch first, so every process builds the same one."""

    @abstractmethod
    def load_partition(self, partition: int, num_partitions: int,
                       partitioner: PartitionerSpec) -> Dataset[Any]:
        """This client's slice of the data, computed locally and deterministically from the partitioner."""

    def load_source(self, partition: int, source: Store) -> Dataset[Any]:
        """This client's own data from its data source (spec.data.sources): a folder or an S3 prefix.

        `source` is rooted at this partition's location; a task is never handed another's.
        """
        raise TaskError(f"task {self.name!r} cannot read spec.data.sources (partition {partition}, "
                        f"{source.uri}); it loads its data through the partitioner")

    def load_test(self) -> Dataset[Any] | None:
        """A central held-out set for the aggregator to score the global model on, if the task has one."""
        return None

    @abstractmethod
    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        """Train `model` in place on `data`; the same seed gives the same result on CPU."""

    @abstractmethod
    def evaluate(self, model: torch.nn.Module, data: Dataset[Any], device: torch.device) -> dict[str, float]:
        """At least `{"loss": ..., "accuracy": ...}` of `model` on `data`."""


def make_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """A fresh optimizer per round: local optimizer state does not outlive a round in FedAvg."""
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    raise ValueError(f"spec.clients.optimizer.name {spec.name!r} is not one of ['adam', 'sgd']")


class ClassificationTask(Task):
    """Supervised classification with cross-entropy: the local loop every built-in task shares."""

    def training_loss(self, model: torch.nn.Module, outputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        """The objective minimised locally; strategies that regularise local training override it."""
        return F.cross_entropy(outputs, targets)

    def train(self, model: torch.nn.Module, data: Dataset[Any], settings: TrainSettings,
              device: torch.device, seed: int) -> TrainResult:
        """`settings.local_epochs` passes over `data`, shuffled by a generator seeded with `seed`.

        The metrics are the running loss and accuracy of the last epoch, the one closest to the
        model that is sent back.
        """
        loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(seed))
        optimizer = make_optimizer(model.parameters(), settings.optimizer)
        return self.run_epochs(model, loader, optimizer, settings.local_epochs, device)

    def run_epochs(self, model: torch.nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
                   optimizer: torch.optim.Optimizer, epochs: int, device: torch.device) -> TrainResult:
        """The local loop over any loader and optimizer, so DP-SGD can wrap both and reuse it.

        Every batch steps the optimizer, even an empty one (Poisson sampling draws those), since a
        private optimizer adds its noise at each step.
        """
        model.to(device).train()
        for _ in range(epochs):
            total_loss, correct, seen = 0.0, 0, 0
            for inputs, targets in loader:
                inputs, targets = inputs.to(device), targets.to(device)
                optimizer.zero_grad()
                outputs = model(inputs)
                loss = self.training_loss(model, outputs, targets)
                loss.backward()
                optimizer.step()
                if len(targets):
                    total_loss += loss.item() * len(targets)
                    correct += int((outputs.argmax(dim=1) == targets).sum())
                    seen += len(targets)
        return TrainResult(seen, {"loss": total_loss / max(seen, 1), "accuracy": correct / max(seen, 1)})

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, data: Dataset[Any], device: torch.device) -> dict[str, float]:
        """Mean cross-entropy and accuracy over `data` (plain cross-entropy, whatever the training loss)."""
        model.to(device).eval()
        total_loss, correct, seen = 0.0, 0, 0
        for inputs, targets in DataLoader(data, batch_size=EVAL_BATCH_SIZE):
            inputs, targets = inputs.to(device), targets.to(device)
            outputs = model(inputs)
            total_loss += float(F.cross_entropy(outputs, targets, reduction="sum"))
            correct += int((outputs.argmax(dim=1) == targets).sum())
            seen += len(targets)
        return {"loss": total_loss / seen, "accuracy": correct / seen}


class InMemoryClassificationTask(ClassificationTask):
    """A classification data set held as arrays, e.g. one shipped with scikit-learn.

    A fixed stratified split holds out `test_fraction` for central evaluation; partitions are cut
    from the rest only, so no test sample is ever trained on.
    """

    def __init__(self, test_fraction: float) -> None:
        self.test_fraction = test_fraction

    @abstractmethod
    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole data set: features, one row per sample, and integer class labels."""

    @abstractmethod
    def to_tensor(self, features: np.ndarray) -> torch.Tensor:
        """Model input for one party's features (a partition or the test set), seeing no other party's."""

    @functools.cached_property
    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        features, labels = self.load_arrays()
        x_train, x_test, y_train, y_test = train_test_split(
            features, labels, test_size=self.test_fraction, stratify=labels, random_state=TEST_SPLIT_SEED)
        return x_train, x_test, y_train, y_test

    def _dataset(self, features: np.ndarray, labels: np.ndarray) -> TensorDataset:
        return TensorDataset(self.to_tensor(features), torch.as_tensor(labels, dtype=torch.long))

    def load_partition(self, partition: int, num_partitions: int,
                       partitioner: PartitionerSpec) -> TensorDataset:
        if not 0 <= partition < num_partitions:
            raise ValueError(
                f"partition {partition} does not exist (spec.data.partitions is {num_partitions})")
        x_train, _, y_train, _ = self._split
        indices = partition_indices(y_train, num_partitions, partitioner)[partition]
        return self._dataset(x_train[indices], y_train[indices])

    def load_source(self, partition: int, source: Store) -> TensorDataset:
        """Rows in the same feature layout as the built-in data set, e.g. a hospital's own records."""
        try:
            features, labels = read_labelled_arrays(source)
        except SourceDataError as exc:
            raise TaskError(f"task {self.name!r}, partition {partition}: {exc}") from exc
        width = self._split[0].shape[1]
        if features.shape[1] != width:
            raise TaskError(f"task {self.name!r}, partition {partition}: {source.uri} has {features.shape[1]} "
                            f"features per sample, the model takes {width}")
        return self._dataset(features, labels)

    def load_test(self) -> TensorDataset:
        _, x_test, _, y_test = self._split
        return self._dataset(x_test, y_test)


@dataclass(frozen=True)
class InMemoryConfig:
    """Config keys every in-memory built-in task accepts."""

    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if not isinstance(self.test_fraction, float) or not 0 < self.test_fraction < 1:
            raise ValueError(f"testFraction must be a number between 0 and 1, got {self.test_fraction!r}")


def check_widths(key: str, widths: tuple[int, ...], allow_empty: bool) -> None:
    """Layer widths from config must be positive integers (bool is not a width)."""
    if (not widths and not allow_empty) or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
        raise ValueError(f"{key} must be a list of {'' if allow_empty else 'one or more '}positive "
                         f"integers, got {list(widths)!r}")


ConfigT = TypeVar("ConfigT", bound="DataclassInstance")


def parse_config(cls: type[ConfigT], config: Mapping[str, Any], task_name: str) -> ConfigT:
    """`config` (camelCase keys) as the frozen dataclass `cls`; a TaskError names any bad key."""
    known = sorted(camel(f.name) for f in dataclasses.fields(cls))
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise TaskError(f"task {task_name!r}: unknown config key {', '.join(map(repr, unknown))} "
                        f"(known: {', '.join(known)})")
    try:
        result: ConfigT = from_dict(cls, dict(config))
    except (TypeError, ValueError) as exc:
        raise TaskError(f"task {task_name!r}: {exc}") from exc
    return result


def load_task(spec: TaskSpec) -> Task:
    """Import `module:function`, call it with the task's config, and check it made a Task."""
    entrypoint = spec.entrypoint
    module_name, _, attr = entrypoint.partition(":")
    if not module_name or not attr:
        raise TaskError(f"task entrypoint {entrypoint!r} is not of the form 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # whatever the import raised, the user must see it with the entrypoint
        raise TaskError(
            f"task entrypoint {entrypoint!r}: cannot import module {module_name!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskError(f"task entrypoint {entrypoint!r}: module {module_name!r} has no callable {attr!r}")
    try:
        task = factory(dict(spec.config))
    except TaskError as exc:
        raise TaskError(f"task entrypoint {entrypoint!r}: {exc}") from exc
    if not isinstance(task, Task):
        raise TaskError(f"task entrypoint {entrypoint!r} returned {type(task).__name__}, not a fedkube Task")
    return task
