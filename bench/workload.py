"""The work both peers do, defined once: fedkube's tasks driven through plain numpy weights.

Flower's clients and server (bench/flower_peer.py, bench/flower_app/) and the single-process
floor (bench/digits.py) call this, so every peer trains the same model on the same partitions
with the same settings and seeds as the fedkube job from `manifest()`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedkube.plan import TrainSettings
from fedkube.spec.model import OptimizerSpec, PartitionerSpec
from fedkube.tasks.base import Task, TaskError
from fedkube.tasks.base import round_seed as client_seed
from fedkube.weights import get_weights, set_weights

SEED = 0
ENTRYPOINTS = {"tiny": "bench.tasks:tiny", "blob": "bench.tasks:blob", "digits": "fedkube.tasks.digits:task"}
# The digits example's settings (examples/digits-fedavg.yaml): Dirichlet 0.5, 3 epochs of SGD.
PARTITIONER = PartitionerSpec(kind="dirichlet", alpha=0.5, seed=SEED)
TRAIN = TrainSettings(local_epochs=3, batch_size=32, optimizer=OptimizerSpec(name="sgd", lr=0.05, momentum=0.9))


def manifest(name: str, task: str, clients: int, rounds: int, config: dict[str, Any] | None = None,
             spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fedkube job for `task`: every client in every round, no checkpoint until the end; `spec`
    adds or replaces top-level spec fields (e.g. transport)."""
    return {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": name},
            "spec": {"task": {"entrypoint": ENTRYPOINTS[task], "config": config or {}}, "seed": SEED, "rounds": rounds,
                     "data": {"partitions": clients, "partitioner": {"kind": "dirichlet", "alpha": 0.5, "seed": SEED}},
                     "clients": {"minAvailable": clients, "fraction": 1.0, "roundTimeoutSeconds": 600,
                                 "localEpochs": TRAIN.local_epochs, "batchSize": TRAIN.batch_size,
                                 "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
                     "checkpoint": {"everyRounds": rounds}, **(spec or {})}}


def load(task: str) -> Task:
    from fedkube.spec.model import TaskSpec
    from fedkube.tasks import load_task

    if task not in ENTRYPOINTS:
        raise TaskError(f"unknown benchmark task {task!r}")
    return load_task(TaskSpec(entrypoint=ENTRYPOINTS[task], config={}))


def round_seed(round_number: int, partition: int) -> int:
    """The same per-client, per-round shuffling seed fedkube's client uses."""
    return client_seed(SEED, round_number, partition)


class Party:
    """One client's data and model, trained from given weights (what each peer's client runs)."""

    def __init__(self, task: str, partition: int, clients: int) -> None:
        self.task = load(task)
        self.partition = partition
        self.data = self.task.load_partition(partition, clients, PARTITIONER)
        torch.manual_seed(SEED)
        self.model = self.task.build_model()

    def train(self, weights: list[np.ndarray], round_number: int) -> tuple[list[np.ndarray], int]:
        names = list(get_weights(self.model))
        set_weights(self.model, dict(zip(names, weights, strict=True)))
        result = self.task.train(self.model, self.data, TRAIN, torch.device("cpu"),
                                 round_seed(round_number, self.partition))
        return list(get_weights(self.model).values()), result.num_examples


class Referee:
    """The initial model and the central evaluation on the task's held-out set."""

    def __init__(self, task: str) -> None:
        self.task = load(task)
        torch.manual_seed(SEED)
        self.model = self.task.build_model()
        self.names = list(get_weights(self.model))
        self.test = self.task.load_test()

    def initial(self) -> list[np.ndarray]:
        return list(get_weights(self.model).values())

    def accuracy(self, weights: list[np.ndarray]) -> float | None:
        if self.test is None:
            return None
        set_weights(self.model, dict(zip(self.names, weights, strict=True)))
        return self.task.evaluate(self.model, self.test, torch.device("cpu"))["accuracy"]
