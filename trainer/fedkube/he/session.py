"""Each side's view of a CKKS job: what the aggregator and a client do with their context.

The aggregator gets a strategy that sums ciphertexts with a parameters-only context; a client
gets `CkksClientCodec`, which turns the encrypted aggregate into plain global weights and its
trained weights into an encrypted, example-weighted update.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fedkube.aggregator.history import History
from fedkube.checkpoint import FINAL, WEIGHTS, export_weights
from fedkube.he.aggregate import CkksFedAvg
from fedkube.he.codec import decrypt_mean, encrypt_weighted
from fedkube.he.keys import public_context, read_context
from fedkube.he.params import CkksParams
from fedkube.he.wire import is_encrypted
from fedkube.protocol.tensors import specs_of
from fedkube.spec.model import TaskSpec
from fedkube.stores import Store
from fedkube.tasks import load_task
from fedkube.weights import Weights, set_weights


def aggregator_strategy(params: CkksParams, template: Weights) -> CkksFedAvg:
    return CkksFedAvg(public_context(params), params, specs_of(template))


class CkksClientCodec:
    """Decrypts the global model a round brings and encrypts what this client sends back."""

    def __init__(self, context_path: Path | None, params: CkksParams) -> None:
        if context_path is None:
            raise ValueError("secureAggregation.mode ckks: the client needs --ckks-context (the job's secret context)")
        self.context = read_context(context_path)
        if not self.context.is_private():
            raise ValueError(f"{context_path} holds no CKKS secret key: a client cannot decrypt the global model")
        self.params = params

    def global_weights(self, received: Weights) -> Weights:
        """Round 1 brings the initial model in the clear; later rounds the encrypted aggregate."""
        return decrypt_mean(self.context, received) if is_encrypted(received) else received

    def update(self, local: Weights, num_examples: int) -> Weights:
        return encrypt_weighted(self.context, self.params.slots, local, float(num_examples))


def backfill_client_evaluation(history: History, train_metrics: list[tuple[int, dict[str, float]]]) -> None:
    """Record the clients' evaluation of the model they received on the round that produced it.

    The aggregator of a CKKS job cannot evaluate a model it cannot read; each client decrypts
    the global model at the start of its round and scores it on the task's held-out set.
    """
    produced = next((i for i in range(len(history) - 2, -1, -1) if history[i]["status"] == "completed"), None)
    if produced is None:
        return
    scores = {}
    for key in ("accuracy", "loss"):
        values = [(n, m[f"global_{key}"]) for n, m in train_metrics if f"global_{key}" in m]
        if values:
            scores[key] = sum(n * v for n, v in values) / sum(n for n, _ in values)
    if scores:
        history.amend(produced, **scores)


def decrypted_final_model(store: Store, secret_path: Path) -> Weights:
    """The final model of a CKKS job, read from `<checkpoint uri>/final/` and decrypted."""
    from safetensors.numpy import load_file

    with tempfile.TemporaryDirectory(prefix="fedkube-ckks-") as tmp:
        path = Path(tmp) / WEIGHTS
        export_weights(store, FINAL, path)
        return decrypt_mean(read_context(secret_path), load_file(path))


def evaluate_model(task_spec: TaskSpec, weights: Weights) -> dict[str, float]:
    """Score weights on the task's held-out set ({} when the task has none)."""
    import torch

    task = load_task(task_spec)
    data = task.load_test()
    if data is None:
        return {}
    model = task.build_model()
    set_weights(model, weights)
    return task.evaluate(model, data, torch.device("cpu"))
