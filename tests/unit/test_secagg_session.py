"""SecAgg+ steps on the Session stream over real gRPC: a whole round by three clients (their keys
out while the weights stream in), a refused step that leaves the stream in step, and steps a plain
job's session refuses."""

import asyncio
import json

import grpc
import numpy as np
import pytest

from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.identity import PeerGuard
from fedkube.aggregator.secagg import SecAggRounds
from fedkube.aggregator.servicer import AggregatorServicer
from fedkube.plan import make_plan
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import inline_chunks, receive_tensors, spec_from_header, specs_of
from fedkube.protocol.wire import add_aggregator_service
from fedkube.secure.secagg import MASKED_TENSOR, ClientSession, RoundSetup
from fedkube.spec import parse_manifest
from fedkube.strategies import build_strategy

SMALL = {"w": np.zeros(5, np.float32)}
LARGE = {"w": np.arange(300_000, dtype=np.float32)}  # 1.2 MB: chunked
CLIENTS = 3


class Client:
    """One partition's Session stream, with the SecAgg+ steps taken by hand."""

    def __init__(self, stub: pb_grpc.AggregatorStub, partition: int, session: str) -> None:
        self.partition = partition
        self.outbox: asyncio.Queue[pb.Envelope] = asyncio.Queue()
        self.outbox.put_nowait(pb.Envelope(next=pb.TaskRequest(partition=partition, session=session)))
        self.call = stub.Session(self._requests())

    async def _requests(self):
        while True:
            yield await self.outbox.get()

    @staticmethod
    def step_message(info: pb.RoundInfo, **step) -> pb.Envelope:
        return pb.Envelope(secagg=pb.SecAggRequest(round=info.round, ticket=info.ticket, **step))

    async def step(self, info: pb.RoundInfo, **step) -> pb.SecAggReply | None:
        await self.outbox.put(self.step_message(info, **step))
        return None if "reveal" in step else (await self.call.read()).secagg_reply

    async def round(self, update: np.ndarray, weight: int) -> None:
        info = (await self.call.read()).round
        session = ClientSession(RoundSetup.from_json(json.loads(info.config_json)["secagg"]),
                                self.partition)
        c_key, s_key = session.advert()
        await self.outbox.put(self.step_message(info, advertise=pb.PeerKeys(cipher_key=c_key, mask_key=s_key)))
        specs = [spec_from_header(h) for h in info.tensors]  # the weights stream in after the advert went out
        if info.inline:
            self.weights = receive_tensors(specs, inline_chunks(specs, info.inline))
        else:
            chunks, left = [], sum(spec.nbytes for spec in specs)
            while left > 0:
                chunks.append((await self.call.read()).data)
                left -= len(chunks[-1])
            self.weights = receive_tensors(specs, chunks)
        keys = (await self.call.read()).secagg_reply.keys
        sealed = session.share({k.partition: (k.cipher_key, k.mask_key) for k in keys.peers})
        inbox = (await self.step(info, share=pb.SealedShares(shares=[pb.SealedShare(partition=p, sealed=b)
                                                                     for p, b in sealed.items()]))).shares
        session.receive({s.partition: s.sealed for s in inbox.shares})
        masked = session.setup.ring.encode(update, weight, into=session.mask_vector())
        header = pb.UpdateInfo(partition=self.partition, round=info.round, ticket=info.ticket,
                               tensors=[s.header() for s in specs_of({MASKED_TENSOR: masked})],
                               inline=masked.tobytes())
        await self.outbox.put(pb.Envelope(update=header))
        survivors = (await self.call.read()).secagg_reply.survivors  # the answer to an accepted masked vector
        assert list(survivors.survived) == list(range(CLIENTS)) and not survivors.dropped
        shares = session.reveal(survivors.survived, survivors.dropped)
        await self.step(info, reveal=pb.RevealedShares(shares=[pb.RevealedShare(partition=p, share=b)
                                                               for p, b in shares.items()]))  # ends the round


class Aggregator:
    def __init__(self, secure: bool, weights: dict[str, np.ndarray] = SMALL) -> None:
        spec = {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": CLIENTS}, "rounds": 3,
                "clients": {"minAvailable": CLIENTS, "roundTimeoutSeconds": 30}}
        if secure:
            spec["secureAggregation"] = {"mode": "secagg+"}
        manifest = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "sa"},
                    "spec": spec}
        self.plan = make_plan(parse_manifest(manifest, check_entrypoint=False)).aggregator
        self.coordinator = Coordinator(self.plan)
        self.secagg = SecAggRounds(self.plan, self.coordinator) if secure else None
        self.strategy = build_strategy(self.plan.strategy, CLIENTS)
        self.weights = weights

    async def __aenter__(self) -> "Aggregator":
        self.server = grpc.aio.server()
        add_aggregator_service(AggregatorServicer(self.coordinator, dict, PeerGuard("sa", tls=False), self.secagg),
                               self.server)
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = pb_grpc.AggregatorStub(self.channel)
        self.clients = [Client(stub, p, (await stub.Join(pb.JoinRequest(partition=p))).session)
                        for p in range(CLIENTS)]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop(None)

    def start_round(self, number: int) -> asyncio.Task:
        rounds = self.secagg or self.coordinator
        return asyncio.create_task(rounds.run_round(number, self.weights, specs_of(self.weights), self.strategy))


async def back_waiting(agg: Aggregator) -> None:
    """Partition 0's session is back waiting for a round: the stream is in step."""
    for _ in range(200):
        if agg.coordinator.waiting[0]:
            break
        await asyncio.sleep(0.01)
    assert agg.coordinator.waiting[0] == 1


@pytest.mark.parametrize("model", [SMALL, LARGE], ids=["inline", "chunked"])
async def test_a_secagg_round_runs_on_the_session_streams_and_the_next_follows(model):
    rng = np.random.default_rng(1)
    updates = [rng.uniform(-1, 1, model["w"].size).astype(np.float32) for _ in range(CLIENTS)]
    weights = [3, 1, 2]
    async with Aggregator(secure=True, weights=model) as agg:
        for number in (1, 2):  # the streams are in step for the next round
            task = agg.start_round(number)
            await asyncio.gather(*(c.round(u, w) for c, u, w in zip(agg.clients, updates, weights, strict=True)))
            outcome = await task
            assert outcome.reported == list(range(CLIENTS))
            assert all(np.array_equal(c.weights["w"], model["w"]) for c in agg.clients)
            expected = sum(w * u.astype(np.float64) for u, w in zip(updates, weights, strict=True)) / sum(weights)
            ring = agg.secagg.ring
            assert np.abs(outcome.accumulator.mean()["w"] - expected).max() <= ring.step


async def test_a_refused_step_is_answered_abandoned_and_the_stream_stays_in_step():
    async with Aggregator(secure=True) as agg:
        task = agg.start_round(1)
        client = agg.clients[0]
        info = (await client.call.read()).round
        reply = await client.step(pb.RoundInfo(round=info.round, ticket="not-mine"), advertise=pb.PeerKeys())
        assert reply.WhichOneof("step") == "abandoned" and "partition 0" in reply.abandoned
        await client.outbox.put(pb.Envelope(next=pb.TaskRequest()))  # passes on the round
        await back_waiting(agg)
        task.cancel()


async def test_a_plain_jobs_session_refuses_secagg_steps():
    async with Aggregator(secure=False) as agg:
        task = agg.start_round(1)
        client = agg.clients[0]
        info = (await client.call.read()).round
        await client.outbox.put(pb.Envelope(secagg=pb.SecAggRequest(round=info.round, ticket=info.ticket,
                                                                    unmask=pb.UnmaskQuery())))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await client.call.read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "SecAgg+ step" in refused.value.details()
        task.cancel()


async def test_a_refused_masked_vector_is_answered_with_the_refusal_not_the_survivor_lists():
    async with Aggregator(secure=True) as agg:
        task = agg.start_round(1)
        client = agg.clients[0]
        info = (await client.call.read()).round
        wrong = pb.UpdateInfo(partition=0, round=info.round, ticket="not-mine", inline=bytes(4 * 6),
                              tensors=[pb.TensorHeader(name=MASKED_TENSOR, dtype="uint32", shape=[6], nbytes=24)])
        await client.outbox.put(pb.Envelope(update=wrong))
        reply = (await client.call.read()).reply
        assert not reply.accepted and reply.reason.startswith("not_selected")
        await client.outbox.put(pb.Envelope(next=pb.TaskRequest()))  # no reveal: the client passes
        await back_waiting(agg)
        task.cancel()
