"""The application examples' tasks (synthetic finance and traffic data) and the Byzantine wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkube.plan import TrainSettings
from fedkube.spec.model import OptimizerSpec, PartitionerSpec, TaskSpec
from fedkube.tasks import TaskError, load_task
from fedkube.tasks.traffic import HOURS_PER_DAY, generate_flows
from fedkube.weights import get_weights

CPU = torch.device("cpu")
SGD = TrainSettings(local_epochs=1, batch_size=32, optimizer=OptimizerSpec("sgd", lr=0.05))


def test_credit_risk_data_is_synthetic_imbalanced_and_the_same_in_every_process():
    task = load_task(TaskSpec("fedkube.tasks.credit_risk:task", {"samples": 1000, "defaultRate": 0.25}))
    features, labels = task.load_arrays()
    again, _ = load_task(TaskSpec("fedkube.tasks.credit_risk:task", {"samples": 1000, "defaultRate": 0.25})
                         ).load_arrays()
    assert features.shape == (1000, 20) and np.array_equal(features, again)
    assert 0.2 < labels.mean() < 0.3
    parts = [len(task.load_partition(p, 4, PartitionerSpec("iid"))) for p in range(4)]
    assert sum(parts) + len(task.load_test()) == 1000


@pytest.mark.parametrize("config, message", [
    ({"defaultRate": 1.5}, "defaultRate must be a number between 0 and 1"),
    ({"samples": 10}, "samples must be an integer of at least 100"),
    ({"ratio": 3}, "unknown config key 'ratio'"),
])
def test_credit_risk_bad_config_names_the_key(config, message):
    with pytest.raises(TaskError, match=message):
        load_task(TaskSpec("fedkube.tasks.credit_risk:task", config))


def test_traffic_flows_repeat_daily_and_weekly():
    flows = generate_flows(sensors=3, days=14, seed=0)
    assert flows.shape == (3, 14 * HOURS_PER_DAY) and (flows >= 0).all()
    days = flows.reshape(3, 14, HOURS_PER_DAY)
    # Weekday rush hour beats 3 a.m.; Mondays look like the next Monday (up to the 5% noise).
    assert (days[:, 0, 8] > 3 * days[:, 0, 3]).all()
    np.testing.assert_allclose(days[:, 0], days[:, 7], rtol=0.3)
    assert (days[:, 5, 8] < days[:, 0, 8]).all()  # Saturday morning is quiet


def test_traffic_partitions_by_sensor_and_tests_on_the_last_days():
    task = load_task(TaskSpec("fedkube.tasks.traffic:task", {"sensors": 8, "days": 10, "testDays": 2}))
    shards = PartitionerSpec("shards", shards_per_client=2, seed=0)
    sizes = [len(task.load_partition(p, 4, shards)) for p in range(4)]
    per_sensor = 8 * HOURS_PER_DAY - HOURS_PER_DAY  # forecasts after the first day's window
    assert sizes == [2 * per_sensor] * 4
    assert len(task.load_test()) == 8 * 2 * HOURS_PER_DAY
    metrics = task.evaluate(task.build_model(), task.load_test(), CPU)
    assert set(metrics) == {"loss", "mae", "naive_mae"} and metrics["naive_mae"] > 0


@pytest.mark.parametrize("attack, factor", [("signflip", -3.0), ("scale", 3.0)])
def test_byzantine_partitions_replace_their_update(attack, factor):
    honest_spec = {"entrypoint": "fedkube.tasks.digits:task"}
    config = {"task": honest_spec, "partitions": [1], "attack": attack, "scale": 3.0}
    updates = {}
    for name, spec in (("honest", TaskSpec(**honest_spec)), ("byzantine", TaskSpec("fedkube.tasks.byzantine:task",
                                                                                    config))):
        for partition in (0, 1):
            task = load_task(spec)
            data = task.load_partition(partition, 4, PartitionerSpec("iid"))
            torch.manual_seed(0)
            model = task.build_model()
            start = get_weights(model)
            task.train(model, data, SGD, CPU, seed=7)
            updates[name, partition] = {n: a - start[n] for n, a in get_weights(model).items()}
    for n, honest in updates["honest", 1].items():
        np.testing.assert_allclose(updates["byzantine", 1][n], factor * honest, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(updates["byzantine", 0][n], updates["honest", 0][n], rtol=1e-5, atol=1e-7)


def test_byzantine_unknown_attack_is_refused():
    with pytest.raises(TaskError, match="attack must be one of"):
        load_task(TaskSpec("fedkube.tasks.byzantine:task", {"task": {"entrypoint": "fedkube.tasks.digits:task"},
                                                             "attack": "gaussian"}))
