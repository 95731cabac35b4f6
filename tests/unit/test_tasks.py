"""Tasks: loading by entrypoint, the built-in data and models, local training, and FedAvg accuracy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from fedkube.plan import TrainSettings
from fedkube.spec.model import OptimizerSpec, PartitionerSpec, TaskSpec
from fedkube.tasks import Task, TaskError, load_task
from fedkube.tasks.base import make_optimizer, round_seed
from fedkube.tasks.breast_cancer import BreastCancerTask
from fedkube.tasks.digits import DigitsConfig, DigitsTask

CPU = torch.device("cpu")
DIGITS = "fedkube.tasks.digits:task"
BREAST_CANCER = "fedkube.tasks.breast_cancer:task"
SETTINGS = TrainSettings(local_epochs=3, batch_size=32, optimizer=OptimizerSpec("sgd", lr=0.05, momentum=0.9))
DIRICHLET = PartitionerSpec("dirichlet", alpha=0.5, seed=0)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """These models are tiny: a second thread does not help them, and spins when the CPU is shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _task(entrypoint: str, config: dict[str, Any] | None = None) -> Task:
    return load_task(TaskSpec(entrypoint, config or {}))


def _model(task: Task, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return task.build_model()


LOAD_ERRORS = [
    # (name, entrypoint, config, words the message must contain)
    ("not module:function", "fedkube.tasks.digits", {}, "'fedkube.tasks.digits' is not of the form"),
    ("missing module", "fedkube.tasks.nope:task", {}, "'fedkube.tasks.nope:task': cannot import module"),
    ("missing function", "fedkube.tasks.digits:nope", {}, "'fedkube.tasks.digits:nope'.* no callable 'nope'"),
    ("not callable", "fedkube.tasks.digits:NUM_CLASSES", {}, "no callable 'NUM_CLASSES'"),
    ("returns a non-Task", "builtins:dict", {}, "'builtins:dict' returned dict, not a fedkube Task"),
    ("unknown config key", DIGITS, {"testFraktion": 0.3}, f"'{DIGITS}'.*unknown config key 'testFraktion'"),
    ("test fraction out of range", DIGITS, {"testFraction": 1.5}, "testFraction must be a number"),
    ("test fraction not a number", BREAST_CANCER, {"testFraction": "0.2"}, "testFraction must be a number"),
    ("no conv layers", DIGITS, {"channels": []}, "channels must be a list of one or more"),
    ("zero-width layer", BREAST_CANCER, {"hiddenSizes": [8, 0]}, "hiddenSizes must be a list"),
    ("widths not a list", BREAST_CANCER, {"hiddenSizes": 5}, f"'{BREAST_CANCER}'"),
]


@pytest.mark.parametrize(("name", "entrypoint", "config", "words"), LOAD_ERRORS,
                         ids=[e[0] for e in LOAD_ERRORS])
def test_load_task_errors_name_the_entrypoint_or_key(
        name: str, entrypoint: str, config: dict[str, Any], words: str) -> None:
    with pytest.raises(TaskError, match=words) as caught:
        _task(entrypoint, config)

    assert isinstance(caught.value, ValueError)


def test_load_task_builds_configured_builtins() -> None:
    digits = _task(DIGITS, {"channels": [4], "testFraction": 0.5})
    logistic = _task(BREAST_CANCER, {"hiddenSizes": []})

    assert isinstance(digits, DigitsTask) and digits.name == "digits"
    assert isinstance(logistic, BreastCancerTask) and logistic.name == "breast-cancer"
    assert len(digits.load_test()) == 899  # half of 1,797, stratified
    assert [type(m).__name__ for m in logistic.build_model()] == ["Linear"]


def test_digits_partitions_come_from_the_training_split_only() -> None:
    task = _task(DIGITS)
    parts = [task.load_partition(i, 8, DIRICHLET) for i in range(8)]
    test = task.load_test()
    images, _ = test[:]

    assert sum(len(p) for p in parts) + len(test) == 1797
    assert len(test) == 360
    assert images.shape[1:] == (1, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_held_out_split_does_not_depend_on_the_partitioner() -> None:
    first, second = _task(DIGITS), _task(DIGITS)
    first.load_partition(0, 4, PartitionerSpec("iid", seed=1))
    second.load_partition(0, 2, PartitionerSpec("shards", seed=9))

    assert torch.equal(first.load_test()[:][0], second.load_test()[:][0])


def test_load_partition_refuses_a_partition_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="spec.data.partitions is 4"):
        _task(DIGITS).load_partition(4, 4, DIRICHLET)


def test_breast_cancer_parties_standardise_with_their_own_statistics() -> None:
    task = _task(BREAST_CANCER)
    datasets = [task.load_partition(i, 4, PartitionerSpec("dirichlet", alpha=1.0)) for i in range(4)]
    datasets.append(task.load_test())

    for data in datasets:
        features, _ = data[:]
        assert features.shape[1] == 30
        np.testing.assert_allclose(features.mean(dim=0), 0, atol=1e-5)
        np.testing.assert_allclose(features.std(dim=0, unbiased=False), 1, atol=1e-4)


def test_train_is_deterministic_for_a_seed() -> None:
    task = _task(DIGITS)
    data = task.load_partition(0, 8, DIRICHLET)
    runs = {}
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        model = _model(task)
        result = task.train(model, data, SETTINGS, CPU, seed)
        runs[name] = (result, torch.cat([p.flatten() for p in model.parameters()]))

    assert runs["a"][0] == runs["b"][0]
    assert torch.equal(runs["a"][1], runs["b"][1])
    assert not torch.equal(runs["a"][1], runs["c"][1])
    assert runs["a"][0].num_examples == len(data)
    assert set(runs["a"][0].metrics) == {"loss", "accuracy"}


def test_training_improves_the_local_fit() -> None:
    task = _task(BREAST_CANCER)
    data = task.load_partition(0, 4, PartitionerSpec("iid"))
    model = _model(task)
    before = task.evaluate(model, data, CPU)

    task.train(model, data, replace(SETTINGS, local_epochs=10), CPU, seed=0)
    after = task.evaluate(model, data, CPU)

    assert after["loss"] < before["loss"]
    assert after["accuracy"] > 0.9


class FrozenDigits(DigitsTask):
    """A zero training loss: if train computes its loss only through the hook, nothing moves."""

    def training_loss(self, model: torch.nn.Module, outputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        return 0.0 * super().training_loss(model, outputs, targets)


def test_train_minimises_the_overridable_training_loss() -> None:
    task = FrozenDigits(DigitsConfig())
    model = _model(task)
    start = [p.detach().clone() for p in model.parameters()]

    task.train(model, task.load_partition(0, 8, DIRICHLET), SETTINGS, CPU, seed=0)

    assert all(torch.equal(a, b) for a, b in zip(start, model.parameters(), strict=True))


@pytest.mark.parametrize(("name", "spec", "expected"), [
    ("sgd", OptimizerSpec("sgd", lr=0.1, momentum=0.9), torch.optim.SGD),
    ("adam", OptimizerSpec("adam", lr=0.001), torch.optim.Adam),
])
def test_make_optimizer(name: str, spec: OptimizerSpec, expected: type) -> None:
    assert isinstance(make_optimizer([torch.nn.Parameter(torch.zeros(1))], spec), expected)


def test_make_optimizer_refuses_an_unknown_name() -> None:
    with pytest.raises(ValueError, match="spec.clients.optimizer.name 'lbfgs'"):
        make_optimizer([torch.nn.Parameter(torch.zeros(1))], OptimizerSpec("lbfgs"))


def run_fedavg(task: Task, num_partitions: int, partitioner: PartitionerSpec,
               settings: TrainSettings, rounds: int) -> list[float]:
    """Plain in-process FedAvg; returns the global model's test accuracy after each round."""
    global_model = _model(task)
    partitions = [task.load_partition(i, num_partitions, partitioner) for i in range(num_partitions)]
    test = task.load_test()
    assert test is not None
    accuracies = []
    for round_ in range(rounds):
        states, weights = [], []
        for client, data in enumerate(partitions):
            local = _model(task)
            local.load_state_dict(global_model.state_dict())
            result = task.train(local, data, settings, CPU, seed=1000 * round_ + client)
            states.append(local.state_dict())
            weights.append(result.num_examples)
        total = sum(weights)
        global_model.load_state_dict(
            {key: sum(w * s[key] for w, s in zip(weights, states, strict=True)) / total for key in states[0]})
        accuracies.append(task.evaluate(global_model, test, CPU)["accuracy"])
    return accuracies


@pytest.mark.timeout(180)
def test_fedavg_on_non_iid_digits_reaches_95_percent_in_15_rounds() -> None:
    accuracies = run_fedavg(_task(DIGITS), 8, DIRICHLET, SETTINGS, rounds=15)

    assert accuracies[0] < 0.9  # the task is not trivial after one round
    assert max(accuracies) >= 0.95
    assert accuracies[-1] >= 0.95


@pytest.mark.timeout(180)
@pytest.mark.parametrize("partitioner", [PartitionerSpec("iid"), PartitionerSpec("dirichlet", alpha=1.0)],
                         ids=["iid", "dirichlet"])
def test_fedavg_on_four_hospitals_reaches_93_percent_in_20_rounds(partitioner: PartitionerSpec) -> None:
    settings = TrainSettings(local_epochs=3, batch_size=32, optimizer=OptimizerSpec("sgd", lr=0.05))

    accuracies = run_fedavg(_task(BREAST_CANCER), 4, partitioner, settings, rounds=20)

    assert accuracies[-1] >= 0.93


def test_round_seeds_repeat_for_the_same_client_and_round_and_differ_otherwise() -> None:
    seeds = {(s, r, p): round_seed(s, r, p) for s in (0, 1) for r in range(1, 30) for p in range(8)}
    assert all(0 <= v < 2**32 for v in seeds.values())
    assert len(set(seeds.values())) == len(seeds)  # 464 draws of 32 bits: a collision would be a fault
    assert all(round_seed(*key) == v for key, v in seeds.items())
    assert round_seed(1, 12, 3) != round_seed(11, 2, 3)  # the parts stay apart
