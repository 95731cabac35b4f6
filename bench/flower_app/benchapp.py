"""The benchmark workloads as a Flower app (ServerApp + ClientApp, Flower's Message API FedAvg).

Run by the deployment engine: the SuperLink runs the ServerApp, each SuperNode runs the ClientApp
in a fresh process per message (Flower's default isolation), so every round reloads the task.
"""

from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from bench.flower_peer import Timeline

server = ServerApp()
client = ClientApp()


class Idle:
    """bench.tasks' `tiny` without torch: one float32 weight that training returns unchanged, with
    one example, and no test set. A process per message would otherwise import torch each round;
    without it Flower's side of the overhead comparison is as cheap as it can be."""

    def __init__(self, *_: Any) -> None:
        pass

    def initial(self) -> list[np.ndarray]:
        return [np.zeros(1, dtype=np.float32)]

    def accuracy(self, weights: list[np.ndarray]) -> None:
        return None

    def train(self, weights: list[np.ndarray], round_number: int) -> tuple[list[np.ndarray], int]:
        return weights, 1


def workload(task: str, role: str, *args: int) -> Any:
    """bench.workload's Party or Referee for `task`, or Idle for `tiny`."""
    if task == "tiny":
        return Idle()
    from bench import workload as shared

    return getattr(shared, role)(task, *args)


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    clients = int(config["clients"])
    referee, timeline = workload(str(config["task"]), "Referee"), Timeline(str(config["out"]))

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        accuracy = referee.accuracy(arrays.to_numpy_ndarrays())
        timeline.record(server_round, accuracy)
        return MetricRecord({} if accuracy is None else {"accuracy": accuracy})

    strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=clients,
                      min_available_nodes=clients)
    strategy.start(grid=grid, initial_arrays=ArrayRecord(referee.initial()), num_rounds=int(config["rounds"]),
                   evaluate_fn=evaluate)
    timeline.finish()


@client.train()
def train(msg: Message, context: Context) -> Message:
    party = workload(str(context.run_config["task"]), "Party", int(context.node_config["partition-id"]),
                     int(context.node_config["num-partitions"]))
    weights, examples = party.train(msg.content["arrays"].to_numpy_ndarrays(),
                                    int(msg.content["config"]["server-round"]))
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord({"num-examples": examples})})
    return Message(content=content, reply_to=msg)
