"""The Session call over real gRPC: rounds and updates on one stream, inline or chunked, a reply only to
a refused update, and a stream that stays in step after one, or is refused when an update breaks its
framing."""

import asyncio

import grpc
import numpy as np
import pytest

from fedkube.aggregator.coordinator import Coordinator
from fedkube.aggregator.identity import PeerGuard
from fedkube.aggregator.servicer import AggregatorServicer
from fedkube.client.session import TaskStream
from fedkube.plan import make_plan
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import data_envelopes, inline_chunks, receive_tensors, spec_from_header, specs_of
from fedkube.protocol.wire import add_aggregator_service
from fedkube.spec import parse_manifest
from fedkube.strategies import build_strategy

SMALL = {"w": np.arange(3, dtype=np.float32)}
LARGE = {"w": np.arange(300_000, dtype=np.float32), "b": np.ones(2, np.float32)}  # 1.2 MB: chunked


class Harness:
    """An aggregator's gRPC server and coordinator, one client's Session, and rounds run by hand."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        manifest = {"apiVersion": "fedkube.io/v1alpha1", "kind": "FederatedJob", "metadata": {"name": "sess"},
                    "spec": {"task": {"entrypoint": "fedkube.tasks.digits:task"}, "data": {"partitions": 1},
                             "rounds": 3, "clients": {"minAvailable": 1, "roundTimeoutSeconds": 30}}}
        self.plan = make_plan(parse_manifest(manifest, check_entrypoint=False)).aggregator
        self.coordinator = Coordinator(self.plan)
        self.strategy = build_strategy(self.plan.strategy, 1)
        self.weights = weights
        self.outbox: asyncio.Queue[pb.Envelope | None] = asyncio.Queue()

    async def __aenter__(self) -> "Harness":
        self.server = grpc.aio.server()
        add_aggregator_service(AggregatorServicer(self.coordinator, dict, PeerGuard("sess", tls=False)), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = pb_grpc.AggregatorStub(self.channel)
        session = (await self.stub.Join(pb.JoinRequest(partition=0))).session
        await self.outbox.put(pb.Envelope(next=pb.TaskRequest(partition=0, session=session)))
        self.call = self.stub.Session(self._requests())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channel.close()
        await self.server.stop(None)

    async def _requests(self):
        while (envelope := await self.outbox.get()) is not None:
            yield envelope

    def start_round(self, number: int) -> asyncio.Task:
        return asyncio.create_task(self.coordinator.run_round(number, self.weights, specs_of(self.weights),
                                                              self.strategy))

    async def receive_round(self) -> tuple[pb.RoundInfo, dict[str, np.ndarray]]:
        info = (await self.call.read()).round
        specs = [spec_from_header(h) for h in info.tensors]
        if info.inline:
            return info, receive_tensors(specs, inline_chunks(specs, info.inline))
        left, chunks = sum(s.nbytes for s in specs), []
        while left > 0:
            chunks.append((await self.call.read()).data)
            left -= len(chunks[-1])
        return info, receive_tensors(specs, chunks)

    async def send(self, *envelopes: pb.Envelope) -> None:
        for envelope in envelopes:
            await self.outbox.put(envelope)


def update(info: pb.RoundInfo, tensors: dict[str, np.ndarray], inline: bool, ticket: str | None = None) -> list:
    header = pb.UpdateInfo(partition=0, round=info.round, ticket=info.ticket if ticket is None else ticket,
                           num_examples=1, tensors=[s.header() for s in specs_of(tensors)])
    if inline:
        header.inline = b"".join(a.tobytes() for a in tensors.values())
        return [pb.Envelope(update=header)]
    return [pb.Envelope(update=header), *data_envelopes(tensors.values())]


@pytest.mark.parametrize("weights", [SMALL, LARGE], ids=["inline", "chunked"])
async def test_rounds_and_updates_share_one_stream(weights):
    async with Harness(weights) as h:
        for number in (1, 2):
            task = h.start_round(number)
            info, received = await h.receive_round()
            assert info.round == number and bool(info.inline) == (weights is SMALL)
            np.testing.assert_array_equal(received["w"], weights["w"])
            delta = {k: np.full_like(v, number) for k, v in weights.items()}
            await h.send(*update(info, delta, inline=weights is SMALL))
            outcome = await task  # an accepted update gets no reply: the next message is round 2's
            assert outcome.reported == [0]
            np.testing.assert_array_equal(outcome.accumulator.mean()["w"], delta["w"])


async def test_a_rejected_update_is_read_past_and_a_round_can_be_passed():
    async with Harness(LARGE) as h:
        task = h.start_round(1)
        info, _ = await h.receive_round()
        await h.send(*update(info, LARGE, inline=False, ticket="not-mine"))  # its chunks are read past
        reply = (await h.call.read()).reply
        assert not reply.accepted and reply.reason.startswith("not_selected")
        assert h.coordinator.rejected_total == {"not_selected": 1}
        task.cancel()
        task = h.start_round(2)
        info, _ = await h.receive_round()  # the stream is still in step
        assert info.round == 2
        await h.send(pb.Envelope(next=pb.TaskRequest()))  # passes: the session waits for the next round
        for _ in range(200):
            if h.coordinator.waiting[0]:
                break
            await asyncio.sleep(0.01)
        assert h.coordinator.waiting[0] == 1 and 0 in h.coordinator.round.pending()
        task.cancel()


async def test_an_update_whose_data_breaks_the_framing_ends_the_session():
    async with Harness(SMALL) as h:
        task = h.start_round(1)
        info, _ = await h.receive_round()
        header = update(info, SMALL, inline=True)[0]
        header.update.inline = header.update.inline[:-4]  # shorter than its headers announce
        await h.send(header)
        reply = (await h.call.read()).reply
        assert not reply.accepted and reply.reason.startswith("malformed")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await h.call.read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        task.cancel()


async def test_a_session_must_open_with_a_task_request():
    async with Harness(SMALL) as h:
        call = pb_grpc.AggregatorStub(h.channel).Session(iter([pb.Envelope(update=pb.UpdateInfo())]))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call.read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_the_client_reads_past_a_refusal_nobody_waited_for(caplog):
    async with Harness(SMALL) as h:
        channel = grpc.insecure_channel(f"127.0.0.1:{h.port}")
        session = (await h.stub.Join(pb.JoinRequest(partition=0))).session
        stream = TaskStream(channel, partition=0, session=session)
        try:
            task = h.start_round(1)
            info = await asyncio.to_thread(stream.next_task)
            wrong_ticket = update(info, SMALL, inline=True, ticket="not-mine")
            stream.submit(info.round, wrong_ticket)  # returns at once: no wait for the refusal
            for _ in range(200):
                if h.coordinator.rejected_total:
                    break
                await asyncio.sleep(0.01)
            task.cancel()
            h.start_round(2)
            info = await asyncio.to_thread(stream.next_task)  # the refusal is read past, and logged
            assert info.round == 2
            assert "round 1: update rejected: not_selected" in caplog.text
        finally:
            stream.close()
            channel.close()
