"""`fedkube aggregator`: serve the job over gRPC and run its rounds to the end.

A round: sample clients, stream them the global weights, fold their updates into the
strategy's accumulator as they arrive, step the global model, evaluate centrally, checkpoint,
publish status. An aggregator started where checkpoints exist continues from the newest
valid one, so a crashed or rescheduled aggregator resumes instead of starting over; since
sampling, client training and aggregation are all deterministic, it ends with the very bits
an uninterrupted run would have.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import torch

from fedkube import buffers
from fedkube.aggregator.accumulate import WeightedSum
from fedkube.aggregator.coordinator import Coordinator, JobEnd, RoundOutcome
from fedkube.aggregator.float_sum import FloatSum
from fedkube.aggregator.history import History
from fedkube.aggregator.identity import INSECURE_WARNING, PeerGuard
from fedkube.aggregator.metrics import exposition
from fedkube.aggregator.secagg import SecAggRounds
from fedkube.aggregator.servicer import AggregatorServicer
from fedkube.aggregator.state import (
    ResumeError,
    ScalarState,
    Stateful,
    gather,
    restore,
    weights_in_model_order,
)
from fedkube.aggregator.status import StatusBoard, serve_http, status_routes, termination_message
from fedkube.aggregator.status_files import write_atomic, write_text_atomic
from fedkube.aggregator.throttle import Throttle
from fedkube.checkpoint import export_final, latest_checkpoint, write_checkpoint
from fedkube.he.wire import is_encrypted
from fedkube.logs import set_context
from fedkube.plan import METRICS_PORT, STATUS_PORT, AggregatorPlan
from fedkube.privacy.base import BUDGET_EXHAUSTED
from fedkube.privacy.build import aggregator_privacy
from fedkube.protocol.tensors import specs_of
from fedkube.protocol.wire import GRPC_OPTIONS, add_aggregator_service
from fedkube.secure.tls import Identity
from fedkube.stores import StoreError, open_store
from fedkube.strategies import Strategy, Weights, build_strategy
from fedkube.tasks import Task, load_task
from fedkube.weights import share_weights, view_weights

log = logging.getLogger(__name__)

# After the job ends, keep answering so every connected client hears that it is over.
LINGER_SECONDS = 10.0
# The status files are at most this old while rounds end faster (see aggregator/throttle.py).
STATUS_FILE_SECONDS = 0.1
# How long the last checkpoint and the final export keep retrying a failing store before the job fails.
MUST_WRITE_SECONDS = 300.0
T = TypeVar("T")


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


class Evaluator:
    """Central evaluation on the task's held-out set, when it has one.

    The model views the weights it evaluates instead of holding a copy, and is dropped when
    there is no test set: either would cost the aggregator one more model's size of memory.
    """

    def __init__(self, task: Task, model: torch.nn.Module) -> None:
        self.task = task
        self.data = task.load_test()
        self.model = model if self.data is not None else None
        self.device = torch.device("cpu")

    def __call__(self, weights: Weights) -> dict[str, float]:
        if self.model is None or is_encrypted(weights):  # a CKKS job's clients evaluate instead
            return {}
        share_weights(self.model, weights)
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
        **{k: v for k, v in evaluation.items() if k not in ("accuracy", "loss")},  # e.g. a forecast's mae
    }


@contextmanager
def stopwatch(into: dict[str, Any], key: str) -> Iterator[None]:
    """Record how long the block took, in seconds, under `key` (for metrics.json and /metrics)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - started, 4)


class Aggregator:
    """The job's rounds, from the first (or the one after the newest checkpoint) to the last."""

    def __init__(self, plan: AggregatorPlan, options: ServeOptions) -> None:
        self.plan, self.options = plan, options
        self.task = load_task(plan.task)
        torch.manual_seed(plan.seed)
        model = self.task.build_model()
        self.weights: Weights = view_weights(model)  # the model's own memory, not a copy
        self.evaluate = Evaluator(self.task, model)
        self.privacy = aggregator_privacy(plan.privacy)
        self.strategy: Strategy = self.privacy.wrap(build_strategy(plan.strategy, plan.num_partitions))
        if plan.secure_aggregation.mode == "ckks":  # the global model lives on the server only encrypted
            from fedkube.he.params import ckks_params
            from fedkube.he.session import aggregator_strategy

            self.strategy = aggregator_strategy(ckks_params(plan.secure_aggregation.ckks), self.weights)
        self.coordinator = Coordinator(plan)
        self.guard = PeerGuard(plan.job, tls=options.tls is not None)
        self.status_files = Throttle(self.publish, STATUS_FILE_SECONDS)  # all but the rounds' writes: run()
        self.board = StatusBoard(plan.job, plan.rounds, clients=self._client_counts, privacy=self.privacy.status())
        self.store = open_store(plan.checkpoint.uri or f"file://{options.output_dir.resolve()}/checkpoints",
                                plan.checkpoint.endpoint_url)
        # Everything a checkpoint carries besides weights and history.
        self.parts: dict[str, Stateful] = {"strategy": self.strategy, "clients": self.coordinator,
                                           "privacy": ScalarState(self.privacy)}
        self.secagg = (SecAggRounds(plan, self.coordinator, self.store)
                       if plan.secure_aggregation.mode == "secagg+" else None)
        self.next_round = 1
        self.must_write_seconds = MUST_WRITE_SECONDS

    def _client_counts(self) -> dict[str, int]:
        c, state = self.coordinator, self.coordinator.round
        return {"joined": len(c.live), "selected": len(state.selected) if state else 0,
                "reported": len(state.reported) if state else 0,
                "dropped": c.dropped_total, "rejected": sum(c.rejected_total.values()),
                **{f"rejected_{k}": v for k, v in sorted(c.rejected_total.items())}, **self.guard.counts()}

    def resume(self) -> None:
        """Continue from the newest valid checkpoint, if any.

        Store errors (no bucket, access denied) propagate, so a misconfigured job fails at start
        instead of training from round 1 over a checkpoint it could not read.
        """
        checkpoint = latest_checkpoint(self.store)
        if checkpoint is None:
            log.info("no checkpoint at %s: starting at round 1", self.store.uri)
            return
        owner = checkpoint.state.get("job")
        if owner != self.plan.job:
            raise ResumeError(f"{checkpoint.uri} belongs to job {owner!r}, not {self.plan.job!r}: "
                              "give each job its own spec.checkpoint.uri")
        if is_encrypted(checkpoint.weights):  # CKKS: the model exists only as ciphertext, which clients check
            self.weights = checkpoint.weights
        else:
            self.weights = weights_in_model_order(self.weights, checkpoint.weights, checkpoint.uri)
        restore(self.parts, checkpoint.state.get("parts", {}), checkpoint.arrays)
        self.board.privacy = self.privacy.status()
        self.board.history = History(checkpoint.state.get("history", []))
        self.board.round = checkpoint.round
        self.board.checkpoint = {"uri": checkpoint.uri, "round": checkpoint.round}
        self.next_round = checkpoint.round + 1
        log.info("resuming after round %d from %s", checkpoint.round, checkpoint.uri)

    def _write_checkpoint(self, round_number: int) -> Callable[[], str]:
        """Take the state now (between rounds, so it is consistent); the returned call writes it."""
        scalars, arrays = gather(self.parts)
        state = {"round": round_number, "job": self.plan.job, "seed": self.plan.seed,
                 "parts": scalars, "history": list(self.board.history), "manifest": self.plan.manifest}
        weights, keep_last = self.weights, self.plan.checkpoint.keep_last
        return lambda: write_checkpoint(self.store, round_number, weights, arrays, state, keep_last)

    async def _store_write(self, what: str, write: Callable[[], T], must: bool) -> T | None:
        """Run a store write in a thread, so gRPC and the status endpoint keep answering.

        A failure (after the store's own retries) does not stop training: the finished rounds
        stay in memory and the next checkpoint carries them all. A write that `must` land (the
        last checkpoint, the final model) is retried with backoff for `must_write_seconds`.
        """
        deadline = time.monotonic() + self.must_write_seconds
        delay = 1.0
        while True:
            try:
                return await asyncio.to_thread(write)
            except StoreError as exc:
                if not must:
                    log.error("%s failed; training goes on and the next checkpoint retries: %s", what, exc)
                    return None
                if time.monotonic() + delay > deadline:
                    raise
                log.error("%s failed; retrying in %.0fs (until %.0fs have passed): %s",
                          what, delay, self.must_write_seconds, exc)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 30.0)

    async def checkpoint(self, round_number: int, must: bool = False) -> None:
        uri = await self._store_write(f"checkpoint of round {round_number} to {self.store.uri}",
                                      self._write_checkpoint(round_number), must)
        if uri is None:
            self.board.checkpoint = {**(self.board.checkpoint or {}), "error": (
                f"checkpoint of round {round_number} to {self.store.uri} failed; retried at the next one")}
        else:
            self.board.checkpoint = {"uri": uri, "round": round_number}

    def publish(self) -> None:
        history = self.board.history.parts()
        write_atomic(self.options.output_dir / "metrics.json", history)
        write_atomic(self.options.output_dir / "status.json", self.board.document_parts(history))

    def report(self, summary: Callable[[], None]) -> None:
        """A finished round's status files and log line."""
        self.status_files()
        summary()

    def reserve_first_sum(self) -> None:
        """Map the first round's running sum while the clients connect (see fedkube.buffers)."""
        accumulator = self.strategy.new_round(specs_of(self.weights))
        if isinstance(accumulator, WeightedSum) and isinstance(accumulator.store, FloatSum):
            buffers.give_back(accumulator.sums)

    async def run_rounds(self) -> JobEnd:
        reserving = asyncio.create_task(asyncio.to_thread(self.reserve_first_sum))
        try:
            return await self._run_rounds(reserving)
        finally:
            reserving.cancel()  # a job that ends before its first round does not wait for it

    async def _run_rounds(self, reserving: asyncio.Task[None]) -> JobEnd:
        for number in range(self.next_round, self.plan.rounds + 1):
            exhausted = self.privacy.budget_exhausted()
            if exhausted is not None:
                return await self.stop_early(number - 1, exhausted)
            report = self.coordinator.on_wake
            if report is not None and len(self.coordinator.live) < self.plan.min_available:
                self.coordinator.on_wake = None
                report()  # no round starts until clients come back: the last one's report does not wait
            if not await self.coordinator.wait_for_quorum(self.plan.join_timeout_seconds):
                return JobEnd(False, (
                    f"only {len(self.coordinator.live)} of the required {self.plan.min_available} clients "
                    f"(spec.clients.minAvailable) are connected after {self.plan.join_timeout_seconds:g}s"))
            await reserving
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
                    replaced, self.weights = self.weights, self.strategy.apply(self.weights, outcome.accumulator)
                buffers.give_back(replaced.values())  # the next round's sum may take its memory
                del replaced
                with stopwatch(timings, "evaluation_seconds"):
                    evaluation = self.evaluate(self.weights)
            else:
                log.warning("round %d abandoned: %d of %d required clients reported", number,
                            len(outcome.reported), self.plan.min_available)
            # When the round's record was complete (evaluation included), as wall-clock Unix time.
            entry = history_entry(outcome, completed, evaluation) | timings | {"ended": round(time.time(), 6)}
            self.privacy.record(entry, outcome.client_metrics, completed)
            self.board.history.append(entry)
            self.board.privacy = self.privacy.status()
            if self.plan.secure_aggregation.mode == "ckks":
                from fedkube.he.session import backfill_client_evaluation

                backfill_client_evaluation(self.board.history, outcome.train_metrics)
            summary = functools.partial(
                log.info, "round %d/%d %s: accuracy=%s reported=%d dropped=%d rejected=%d", number, self.plan.rounds,
                "completed" if completed else "abandoned", evaluation.get("accuracy"), len(outcome.reported),
                len(outcome.dropped), len(outcome.rejected), extra={"round": number})
            if number % self.plan.checkpoint.every_rounds == 0 or number == self.plan.rounds:
                self.status_files.run()  # before the checkpoint's await: metrics.json agrees with /status and /metrics
                with stopwatch(entry, "checkpoint_seconds"):
                    await self.checkpoint(number, must=number == self.plan.rounds)
                self.status_files.run()
                summary()
            else:  # once the next round's clients are woken: files and log line are written while they train
                self.coordinator.on_wake = functools.partial(self.report, summary)
        set_context(round=None)
        await self.export_final_model()
        return JobEnd(True, f"finished {self.plan.rounds} rounds")

    async def export_final_model(self) -> None:
        weights = self.weights
        await self._store_write(f"export of the final model to {self.store.uri}",
                                lambda: export_final(self.store, weights), must=True)

    async def stop_early(self, last_round: int, message: str) -> JobEnd:
        """End a job whose privacy budget allows no further round, keeping its last round's model."""
        log.warning("%s", message)
        self.board.privacy = self.privacy.status()
        if last_round and (self.board.checkpoint or {}).get("round") != last_round:
            await self.checkpoint(last_round, must=True)
        await self.export_final_model()
        return JobEnd(True, message, BUDGET_EXHAUSTED)

    async def linger(self) -> None:
        """Give connected clients time to fetch JobDone before the server goes away."""
        deadline = time.monotonic() + LINGER_SECONDS
        while not self.coordinator.live <= self.coordinator.told and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)  # let the last JobDone messages flush

    def record_end(self, end: JobEnd) -> None:
        """Publish how the job ended, in the status files and the pod's termination message."""
        self.board.phase = "Succeeded" if end.succeeded else "Failed"
        self.board.message, self.board.reason = end.message, end.reason
        self.status_files.run()
        if self.options.termination_log is not None:
            try:
                self.options.termination_log.write_text(termination_message(self.board.document()))
            except OSError as exc:
                log.warning("could not write the termination message: %s", exc)

    async def serve(self) -> int:
        set_context(job=self.plan.job)
        self.options.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.resume()
        except (StoreError, ResumeError) as exc:  # before serving: clients keep waiting for a fixed aggregator
            log.error("cannot resume from %s: %s", self.store.uri, exc)
            self.record_end(JobEnd(False, f"cannot resume from {self.store.uri}: {exc}"))
            return 1
        server = grpc.aio.server(options=GRPC_OPTIONS)
        add_aggregator_service(
            AggregatorServicer(self.coordinator, self.board.document, self.guard, self.secagg), server)
        address = f"{self.options.host}:{self.options.port}"
        if self.options.tls is None:
            log.warning(INSECURE_WARNING)
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, self.guard.server_credentials(self.options.tls))
        await server.start()
        watcher = asyncio.create_task(self.guard.watch())
        routes = status_routes(self.board.document_bytes, exposition(self.board.document))
        http = [await serve_http(routes, self.options.host, p)
                for p in (self.options.status_port, self.options.metrics_port)]
        status_port, metrics_port = (h.sockets[0].getsockname()[1] for h in http)
        log.info("aggregator for job %s serving gRPC on %d, status on %d, metrics on %d", self.plan.job, port,
                 status_port, metrics_port)
        if self.options.ready_file:
            write_text_atomic(self.options.ready_file,
                              json.dumps({"port": port, "status_port": status_port, "metrics_port": metrics_port}))
        self.status_files.run()
        try:
            end = await self.run_rounds()
        except Exception as exc:  # any crash still tells clients and the status reader why
            log.exception("aggregator failed")
            end = JobEnd(False, f"aggregator error: {exc}")
        self.record_end(end)
        await self.coordinator.finish(end)
        await self.linger()
        if (unsettled := self.guard.unsettled_seconds()) > 0:  # count refusals of the last seconds too
            await asyncio.sleep(unsettled)
            self.record_end(end)
        watcher.cancel()
        await server.stop(grace=1.0)
        for h in http:
            h.close()
        log.info("job %s %s: %s", self.plan.job, self.board.phase.lower(), end.message)
        return 0 if end.succeeded else 1


def run_aggregator(plan: AggregatorPlan, options: ServeOptions) -> int:
    return asyncio.run(Aggregator(plan, options).serve())
