"""The benchmark workloads as a Flower app (ServerApp + ClientApp, Flower's Message API FedAvg).

Run by the deployment engine: the SuperLink runs the ServerApp, each SuperNode runs the ClientApp
in a fresh process per message (Flower's default isolation), so every round reloads the task.
"""

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from bench.flower_peer import Timeline
from bench.workload import Party, Referee

server = ServerApp()
client = ClientApp()


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    clients = int(config["clients"])
    referee, timeline = Referee(str(config["task"])), Timeline(str(config["out"]))

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
    party = Party(str(context.run_config["task"]), int(context.node_config["partition-id"]),
                  int(context.node_config["num-partitions"]))
    weights, examples = party.train(msg.content["arrays"].to_numpy_ndarrays(),
                                    int(msg.content["config"]["server-round"]))
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord({"num-examples": examples})})
    return Message(content=content, reply_to=msg)
