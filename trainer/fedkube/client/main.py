"""`fedkube client --partition i`: train on one partition's data, which never leaves this process.

The client joins (retrying until the aggregator is up), then loops: wait for a round, receive
the global weights, train locally, stream back the delta with its example count and training
metrics. It exits 0 when the aggregator says the job is over, and 1 if the aggregator stays
unreachable for longer than the reconnect timeout.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch

from fedkube import buffers
from fedkube.client.corrections import LocalCorrections
from fedkube.client.rewind import RoundRewind
from fedkube.client.secagg import SecAggParticipant
from fedkube.client.session import Message, SessionEnded, TaskStream
from fedkube.compression import Codec, build_codec
from fedkube.logs import set_context
from fedkube.plan import ClientPlan
from fedkube.privacy.build import client_privacy
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import inline_payload, specs_of
from fedkube.protocol.wire import GRPC_OPTIONS, data_messages, update_message
from fedkube.secure.secagg import ProtocolError
from fedkube.secure.tls import Identity
from fedkube.strategies import proximal_mu
from fedkube.strategies.scaffold import split_variates, with_variates
from fedkube.tasks import load_task
from fedkube.tasks.base import round_seed
from fedkube.tasks.files import open_source
from fedkube.weights import ModelState, Weights, subtract_into, weight_shapes

log = logging.getLogger(__name__)

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.CANCELLED}


class AggregatorUnreachable(RuntimeError):
    pass


@dataclass(frozen=True)
class ConnectOptions:
    target: str
    reconnect_timeout: float = 300.0
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    tls: Identity | None = None  # None: plaintext, only when the spec opts out
    ckks_context: Path | None = None  # the job's secret CKKS context, for secureAggregation.mode ckks


def open_channel(target: str, tls: Identity | None) -> grpc.Channel:
    """mTLS to the aggregator: its certificate must come from the job's CA, ours names our partition."""
    if tls is None:
        log.warning("mutual TLS is off (spec.transport.tls: false): this client's update travels in clear text")
        return grpc.insecure_channel(target, options=GRPC_OPTIONS)
    credentials = grpc.ssl_channel_credentials(tls.ca, tls.key, tls.cert)
    return grpc.secure_channel(target, credentials, options=GRPC_OPTIONS)


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_torch(seed: int, device: torch.device) -> None:
    """Seed the global RNGs the device draws from. On a CPU client only the CPU generator: there
    `torch.manual_seed` also defers a seeding of each uninitialised accelerator backend, capturing a
    stack trace for each, every round."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


class Client:
    def __init__(self, plan: ClientPlan, options: ConnectOptions) -> None:
        self.plan, self.options = plan, options
        self.task = load_task(plan.task)
        self.data = (self.task.load_partition(plan.partition, plan.num_partitions, plan.partitioner)
                     if plan.source is None else self.task.load_source(plan.partition, open_source(plan.source)))
        self.device = pick_device()
        torch.manual_seed(plan.seed)
        self.model = self.task.build_model().to(self.device)
        self.state = ModelState(self.model)  # what each round loads and sends, without a state_dict walk
        self.privacy = client_privacy(plan.privacy)
        self.ckks = None
        if plan.secure_aggregation.mode == "ckks":  # updates leave encrypted; the global model arrives so
            from fedkube.he.params import ckks_params
            from fedkube.he.session import CkksClientCodec

            self.ckks = CkksClientCodec(options.ckks_context, ckks_params(plan.secure_aggregation.ckks))
            self.test_data = self.task.load_test()
        self.channel = open_channel(options.target, options.tls)
        self.stub = pb_grpc.AggregatorStub(self.channel)
        self.session = ""
        self.stream: TaskStream | None = None  # every round on one call, reopened after a failure
        self.codec = build_codec(plan.compression)   # lives as long as the client: top-k's residuals
        self.mu = proximal_mu(plan.strategy)
        self.variates: Weights = {}                    # SCAFFOLD's client control variate c_i
        # What changes from round to round besides the model, kept to train a round again, if the job carries any.
        carried = plan.strategy.name == "scaffold" or self.codec.carries_state
        self.rewind: RoundRewind[tuple[Weights, Codec]] | None = RoundRewind(plan.rewind_rounds) if carried else None
        self.secagg: SecAggParticipant | None = None  # the last SecAgg+ attempt, kept for a resumed unmasking

    def _retrying(self, what: str, call):  # type: ignore[no-untyped-def]
        """Run `call` until it succeeds, backing off while the aggregator is unreachable."""
        deadline = time.monotonic() + self.options.reconnect_timeout
        backoff = self.options.initial_backoff
        while True:
            try:
                return call()
            except grpc.RpcError as exc:
                if exc.code() not in RETRYABLE or time.monotonic() + backoff > deadline:
                    if exc.code() in RETRYABLE:
                        raise AggregatorUnreachable(
                            f"aggregator at {self.options.target} unreachable for "
                            f"{self.options.reconnect_timeout:g}s during {what}: {exc.details()}") from exc
                    raise
                log.info("%s: aggregator not ready (%s), retrying in %.1fs", what, exc.code().name, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, self.options.max_backoff)
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # e.g. an aggregator restart forgot us
                    self.join()

    def join(self) -> None:
        reply = self._retrying("join", lambda: self.stub.Join(pb.JoinRequest(partition=self.plan.partition)))
        self.session = reply.session
        log.info("joined job %s as partition %d", reply.job, self.plan.partition)

    def _next_task(self) -> tuple[pb.RoundInfo, dict[str, Any], Weights] | pb.JobDone:
        """The next round (its instructions, training settings and global weights), or the job's end."""
        if self.stream is None:
            self.stream = TaskStream(self.channel, self.plan.partition, self.session)
        try:
            info = self.stream.next_task()
            if isinstance(info, pb.JobDone):
                return info
            config = json.loads(info.config_json) if info.config_json else {}
            self._join_secure_aggregation(info, config)  # SecAgg+'s keys go out while the weights stream in
            return info, config, self.stream.weights(info)
        except (grpc.RpcError, SessionEnded):
            self._drop_stream()
            raise

    def _drop_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None

    def _evaluate_global(self) -> dict[str, float]:
        """In a CKKS job only clients can read the global model, so they score it for the status."""
        if self.ckks is None or self.test_data is None:
            return {}
        return {f"global_{k}": v for k, v in self.task.evaluate(self.model, self.test_data, self.device).items()}

    def train_round(self, info: pb.RoundInfo, config: dict[str, Any], received: Weights,
                    secagg: SecAggParticipant | None = None) -> Iterable[Message]:
        """Train now; the update's messages (data chunks, if any, are cut as gRPC sends them)."""
        global_weights, server_variates = split_variates(self.ckks.global_weights(received) if self.ckks else received)
        if self.rewind is not None:
            self.variates, self.codec = self.rewind.start(info.round, (self.variates, self.codec))
        self.state.load(global_weights)
        evaluation = self._evaluate_global()
        seed = round_seed(self.plan.seed, info.round, self.plan.partition)
        drift = None
        if server_variates:
            own = {n: self.variates.get(n, np.zeros_like(c)) for n, c in server_variates.items()}
            drift = {n: c - own[n] for n, c in server_variates.items()}
        seed_torch(seed, self.device)  # dropout and other global-RNG draws repeat when a round is retrained
        with LocalCorrections(self.model, self.mu, drift) as corrections:
            result = self.privacy.train(self.task, self.model, self.data, self.plan.train, self.device, seed, config)
        local = self.state.read()  # the model stays as trained until the next round
        update = subtract_into(local, global_weights)  # the global weights are not needed any more
        if server_variates:
            # c_i+ is the round's mean raw gradient; tensors without a gradient keep theirs (zero).
            self.variates = {**own, **corrections.mean_gradients()}
            update = with_variates(update, {n: self.variates[n] - own[n] for n in server_variates})
        update, privacy_metrics = self.privacy.release(update, config)
        if self.ckks:  # a CKKS job sends its example-weighted model, encrypted
            wire, num_examples = self.ckks.update(local, result.num_examples), result.num_examples
        elif secagg is None:
            wire, num_examples = self.codec.encode(update, seed), result.num_examples
        else:  # the example count travels masked inside the vector, as the weight
            wire, num_examples = secagg.masked_update(update, self.privacy.weight(result.num_examples)), 0
        metrics = {**result.metrics, **privacy_metrics, **evaluation}
        log.info("round %d trained on %d examples: %s", info.round, result.num_examples, json.dumps(metrics))
        inline = inline_payload(wire.values())
        header = update_message(pb.UpdateInfo(
            partition=self.plan.partition, round=info.round, ticket=info.ticket, num_examples=num_examples,
            metrics=metrics, tensors=[s.header() for s in specs_of(wire)], inline=inline or b""))
        return [header] if inline is not None else itertools.chain([header], data_messages(wire.values()))

    def run(self) -> int:
        set_context(job=self.plan.job, partition=self.plan.partition)
        # Round 1 receives into memory already mapped, as every later round does (see fedkube.buffers).
        buffers.reserve(weight_shapes(self.model))
        self.join()
        while True:
            task = self._retrying("waiting for a round", self._next_task)
            if isinstance(task, pb.JobDone):
                log.info("job over (%s): %s", "succeeded" if task.succeeded else "failed", task.message)
                return 0
            info, config, weights = task
            set_context(round=info.round)
            answered = False  # the session expects an update, or a pass, for every round it serves
            revealed = False  # with SecAgg+, the reveal ends the round; anything else ends with a pass
            secagg = self.secagg if self.secagg is not None and self.secagg.serves_again(info) else None
            try:
                if secagg is not None and secagg.masked:  # a restarted aggregator finishing this attempt
                    revealed = secagg.unmask(self.stream, ask=True)
                    continue
                if secagg is not None:
                    secagg.share(self.stream)
                update = self.train_round(info, config, weights, secagg)
                answered = True
                self._submit(info, update)
                if secagg is not None and self.stream is not None:  # None: the session broke under the update
                    revealed = secagg.unmask(self.stream, ask=False)
            except ProtocolError as exc:
                log.warning("round %d: secure aggregation attempt left: %s", info.round, exc)
            except (grpc.RpcError, SessionEnded) as exc:  # a SecAgg+ step: the next round reopens the session
                self._drop_stream()
                log.warning("round %d: update not delivered: %s", info.round,
                            exc.details() if isinstance(exc, grpc.RpcError) else exc)
            finally:
                if (not answered or secagg is not None) and not revealed and self.stream is not None:
                    self.stream.pass_round()
                buffers.give_back(weights.values())  # the next round receives into them once they are free

    def _submit(self, info: pb.RoundInfo, update: Iterable[Message]) -> None:
        """Send the update; if the session breaks first, the next round reopens it."""
        assert self.stream is not None  # the round came from it
        try:
            self.stream.submit(info.round, update)
        except (grpc.RpcError, SessionEnded) as exc:
            self._drop_stream()
            log.warning("round %d: update not delivered: %s", info.round,
                        exc.details() if isinstance(exc, grpc.RpcError) else exc)

    def _join_secure_aggregation(self, info: pb.RoundInfo, config: dict[str, Any]) -> None:
        """With SecAgg+, advertise keys for a new attempt (not one served again) while the weights stream in."""
        if "secagg" in config and not (self.secagg is not None and self.secagg.serves_again(info)):
            assert self.stream is not None  # the round came from it
            self.secagg = SecAggParticipant(info, self.plan.partition, config["secagg"])
            self.secagg.advertise(self.stream)


def run_client(plan: ClientPlan, options: ConnectOptions) -> int:
    try:
        return Client(plan, options).run()
    except AggregatorUnreachable as exc:
        log.error("%s", exc)
        return 1
