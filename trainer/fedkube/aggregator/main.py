"""`fedkube aggregator`: serve the job over gRPC and run its rounds to the end.

A round: sample clients, stream them the global weights, fold their updates into the
strategy's accumulator as they arrive, step the global model, evaluate centrally, checkpoint,
publish status. An aggregator started where checkpoints exist continues from the newest
valid one, so a crashed or rescheduled aggregator resumes instead of starting over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import torch

from fedkube.aggregator.coordinator import Coordinator, JobEnd, RoundOutcome
from fedkube.aggregator.identity import INSECURE_WARNING, PeerGuard
from fedkube.aggregator.metrics import exposition
from fedkube.aggregator.secagg import SecAggRounds
from fedkube.aggregator.servicer import AggregatorServicer
from fedkube.aggregator.status import StatusBoard, serve_http, status_routes, termination_message
from fedkube.checkpoint import export_final, latest_checkpoint, write_checkpoint
from fedkube.he.wire import is_encrypted
from fedkube.logs import set_context
from fedkube.plan import METRICS_PORT, STATUS_PORT, AggregatorPlan
from fedkube.privacy.base import BUDGET_EXHAUSTED
from fedkube.privacy.build import aggregator_privacy
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import specs_of
from fedkube.secure.tls import Identity
from fedkube.stores import open_store
from fedkube.strategies import Strategy, Weights, build_strategy
from fedkube.tasks import Task, load_task
from fedkube.weights import get_weights, set_weights

log = logging.getLogger(__name__)

GRPC_OPTIONS = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
# After the job ends, keep answering so every connected client hears that it is over.
LINGER_SECONDS = 10.0


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = 7070
    status_port: int = STATUS_PORT
    metrics_port: int = METRICS_PORT
    output_dir: Path = Path("/var/run/fedkube")
    ready_file: Path | None = None
    termination_log: Path | None = None  # where a pod's final status document goes (Kubernetes reads it)
    tls: Identity | None = None  # None: plaintext, only when the spec opts out
    ckks_context: Path | None = None  # the job's public CKKS context, for secureAggregation.mode ckks


class Evaluator:
    """Central evaluation on the task's held-out set, when it has one."""

    def __init__(self, task: Task, model: torch.nn.Module) -> None:
        self.task, self.model = task, model
        self.data = task.load_test()
        self.device = torch.device("cpu")

    def __call__(self, weights: Weights) -> dict[str, float]:
        if self.data is None or is_encrypted(weights):  # a CKKS job's clients evaluate instead
            return {}
        set_weights(self.model, weights)
        return self.task.evaluate(self.model, self.data, self.device)


def history_entry(outcome: RoundOutcome, completed: bool, evaluation: dict[str, float]) -> dict[str, Any]:
    """One line of metrics.json: what happened in a round."""
    rejected: dict[str, int] = {}
    for reason in outcome.rejected.values():
        rejected[reason] = rejected.get(reason, 0) + 1
    total = outcome.num_examples
    train = {}
    for key in ("loss", "accuracy"):
        values = [(n, m[key]) for n, m in outcome.train_metrics if key in m]
        if values and total:
            train[f"train_{key}"] = sum(n * v for n, v in values) / sum(n for n, _ in values)
    return {
        "round": outcome.number,
        "status": "completed" if completed else "abandoned",
        "accuracy": evaluation.get("accuracy"),
        "loss": evaluation.get("loss"),
        "clients_selected": len(outcome.selected),
        "clients_reported": len(outcome.reported),
        "clients_dropped": len(outcome.dropped),
        "clients_rejected": len(outcome.rejected),
        "rejected": rejected,
        "participants": {"reported": outcome.reported, "dropped": outcome.dropped,
                         "rejected": sorted(outcome.rejected)},
        "num_examples": total,
        "seconds": round(outcome.seconds, 4),
        "bytes_in": outcome.bytes_in,
        "bytes_out": outcome.bytes_out,
        "compression_ratio": None if outcome.compression_ratio is None else round(outcome.compression_ratio, 3),
        **train,
    }


@contextmanager
def stopwatch(into: dict[str, Any], key: str) -> Iterator[None]:
    """Record how long the block took, in seconds, under `key` (for metrics.json and /metrics)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - started, 4)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


class Aggregator:
    """The job's rounds, from the first (or the one after the newest checkpoint) to the last."""

    def __init__(self, plan: AggregatorPlan, options: ServeOptions) -> None:
        self.plan, self.options = plan, options
        self.task = load_task(plan.task)
        torch.manual_seed(plan.seed)
        model = self.task.build_model()
        self.weights: Weights = get_weights(model)
        self.evaluate = Evaluator(self.task, model)
        self.privacy = aggregator_privacy(plan.privacy)
        self.strategy: Strategy = self.privacy.wrap(build_strategy(plan.strategy, plan.num_partitions))
        if plan.secure_aggregation.mode == "ckks":  # the global model lives on the server only encrypted
            from fedkube.he.params import ckks_params
            from fedkube.he.session import aggregator_strategy

            self.strategy = aggregator_strategy(options.ckks_context, ckks_params(plan.secure_aggregation.ckks),
                                                self.weights)
        self.coordinator = Coordinator(plan)
        self.guard = PeerGuard(plan.job, tls=options.tls is not None)
        self.board = StatusBoard(plan.job, plan.rounds, clients=self._client_counts, privacy=self.privacy.status())
        self.store = open_store(plan.checkpoint.uri or f"file://{options.output_dir.resolve()}/checkpoints",
                                plan.checkpoint.endpoint_url)
        self.secagg = (SecAggRounds(plan, self.coordinator, self.store)
                       if plan.secure_aggregation.mode == "secagg+" else None)
        self.next_round = 1

    def _client_counts(self) -> dict[str, int]:
        c, state = self.coordinator, self.coordinator.round
        return {"joined": len(c.live), "selected": len(state.selected) if state else 0,
                "reported": len(state.reported) if state else 0,
                "dropped": c.dropped_total, "rejected": sum(c.rejected_total.values()),
                **{f"rejected_{k}": v for k, v in sorted(c.rejected_total.items())}, **self.guard.counts()}

    def resume(self) -> None:
        checkpoint = latest_checkpoint(self.store)
        if checkpoint is None:
            return
        # Tensors travel in the model's order; a checkpoint's own order is not necessarily that.
        self.weights = {name: checkpoint.weights[name] for name in self.weights}
        self.strategy.load_state(checkpoint.state.get("strategy", {}), checkpoint.arrays)
        self.privacy.load_state(checkpoint.state.get("privacy", {}))
        self.board.privacy = self.privacy.status()
        self.board.history = checkpoint.state.get("history", [])
        self.board.round = checkpoint.round
        self.board.checkpoint = {"uri": checkpoint.uri, "round": checkpoint.round}
        self.next_round = checkpoint.round + 1
        log.info("resuming after round %d from %s", checkpoint.round, checkpoint.uri)

    def checkpoint(self, round_number: int) -> None:
        scalars, arrays = self.strategy.state()
        state = {"round": round_number, "job": self.plan.job, "seed": self.plan.seed,
                 "strategy": scalars, "privacy": self.privacy.state(), "history": self.board.history,
                 "manifest": self.plan.manifest}
        uri = write_checkpoint(self.store, round_number, self.weights, arrays, state, self.plan.checkpoint.keep_last)
        self.board.checkpoint = {"uri": uri, "round": round_number}

    def publish(self) -> None:
        write_json_atomic(self.options.output_dir / "metrics.json", self.board.history)
        write_json_atomic(self.options.output_dir / "status.json", self.board.document())

    async def run_rounds(self) -> JobEnd:
        for number in range(self.next_round, self.plan.rounds + 1):
            exhausted = self.privacy.budget_exhausted()
            if exhausted is not None:
                return self.stop_early(number - 1, exhausted)
            if not await self.coordinator.wait_for_quorum(self.plan.join_timeout_seconds):
                return JobEnd(False, (
                    f"only {len(self.coordinator.live)} of the required {self.plan.min_available} clients "
                    f"(spec.clients.minAvailable) are connected after {self.plan.join_timeout_seconds:g}s"))
            self.board.phase, self.board.round = "Running", number
            set_context(round=number)
            rounds = self.secagg or self.coordinator
            outcome = await rounds.run_round(number, self.weights, specs_of(self.weights), self.strategy,
                                             self.privacy.round_config)
            completed = len(outcome.reported) >= self.plan.min_available
            evaluation: dict[str, float] = {}
            timings: dict[str, float] = {}
            if completed:
                with stopwatch(timings, "aggregation_seconds"):
                    self.weights = self.strategy.apply(self.weights, outcome.accumulator)
                with stopwatch(timings, "evaluation_seconds"):
                    evaluation = self.evaluate(self.weights)
            else:
                log.warning("round %d abandoned: %d of %d required clients reported", number,
                            len(outcome.reported), self.plan.min_available)
            entry = history_entry(outcome, completed, evaluation) | timings
            self.privacy.record(entry, outcome.client_metrics, completed)
            self.board.history.append(entry)
            self.board.privacy = self.privacy.status()
            if self.plan.secure_aggregation.mode == "ckks":
                from fedkube.he.session import backfill_client_evaluation

                backfill_client_evaluation(self.board.history, outcome.train_metrics)
            if number % self.plan.checkpoint.every_rounds == 0 or number == self.plan.rounds:
                with stopwatch(entry, "checkpoint_seconds"):
                    self.checkpoint(number)
            self.publish()
            log.info("round %d/%d %s: accuracy=%s reported=%d dropped=%d rejected=%d", number, self.plan.rounds,
                     "completed" if completed else "abandoned", evaluation.get("accuracy"),
                     len(outcome.reported), len(outcome.dropped), len(outcome.rejected))
        set_context(round=None)
        export_final(self.store, self.weights)
        return JobEnd(True, f"finished {self.plan.rounds} rounds")

    def stop_early(self, last_round: int, message: str) -> JobEnd:
        """End a job whose privacy budget allows no further round, keeping its last round's model."""
        log.warning("%s", message)
        self.board.privacy = self.privacy.status()
        if last_round and (self.board.checkpoint or {}).get("round") != last_round:
            self.checkpoint(last_round)
        export_final(self.store, self.weights)
        return JobEnd(True, message, BUDGET_EXHAUSTED)

    async def linger(self) -> None:
        """Give connected clients time to fetch JobDone before the server goes away."""
        deadline = time.monotonic() + LINGER_SECONDS
        while not self.coordinator.live <= self.coordinator.told and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # let the last JobDone messages flush

    async def serve(self) -> int:
        set_context(job=self.plan.job)
        self.options.output_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        server = grpc.aio.server(options=GRPC_OPTIONS)
        pb_grpc.add_AggregatorServicer_to_server(
            AggregatorServicer(self.coordinator, self.board.document, self.guard, self.secagg), server)
        address = f"{self.options.host}:{self.options.port}"
        if self.options.tls is None:
            log.warning(INSECURE_WARNING)
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, self.guard.server_credentials(self.options.tls))
        await server.start()
        watcher = asyncio.create_task(self.guard.watch())
        routes = status_routes(self.board.document, exposition(self.board.document))
        http = [await serve_http(routes, self.options.host, p)
                for p in (self.options.status_port, self.options.metrics_port)]
        status_port, metrics_port = (h.sockets[0].getsockname()[1] for h in http)
        log.info("aggregator for job %s serving gRPC on %d, status on %d, metrics on %d", self.plan.job, port,
                 status_port, metrics_port)
        if self.options.ready_file:
            write_json_atomic(self.options.ready_file,
                              {"port": port, "status_port": status_port, "metrics_port": metrics_port})
        self.publish()
        try:
            end = await self.run_rounds()
        except Exception as exc:  # any crash still tells clients and the status reader why
            log.exception("aggregator failed")
            end = JobEnd(False, f"aggregator error: {exc}")
        self.board.phase = "Succeeded" if end.succeeded else "Failed"
        self.board.message, self.board.reason = end.message, end.reason
        self.publish()
        if self.options.termination_log is not None:
            try:
                self.options.termination_log.write_text(termination_message(self.board.document()))
            except OSError as exc:
                log.warning("could not write the termination message: %s", exc)
        await self.coordinator.finish(end)
        await self.linger()
        watcher.cancel()
        await server.stop(grace=1.0)
        for h in http:
            h.close()
        log.info("job %s %s: %s", self.plan.job, self.board.phase.lower(), end.message)
        return 0 if end.succeeded else 1


def run_aggregator(plan: AggregatorPlan, options: ServeOptions) -> int:
    return asyncio.run(Aggregator(plan, options).serve())
