"""The gRPC face of the aggregator: translates calls into Coordinator operations, nothing more."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator

import grpc

from fedkube.aggregator.accumulate import UpdateRejected
from fedkube.aggregator.coordinator import Coordinator, JobEnd, RoundState
from fedkube.aggregator.identity import PeerGuard
from fedkube.aggregator.secagg import SecAggRounds
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import TensorSpec, chunk_views, inline_chunks, spec_from_header
from fedkube.protocol.wire import data_message, data_payload, parse_envelope, round_message

log = logging.getLogger(__name__)


def done(end: JobEnd) -> pb.Envelope:
    return pb.Envelope(done=pb.JobDone(succeeded=end.succeeded, message=end.message))


class UpdateData:
    """One update's data chunks as they arrive: its inline payload cut at tensor boundaries, or the data
    messages that follow it. `bounded` (on a session, where the next message belongs to the session)
    stops at the byte count the headers announce; otherwise the chunks run to the end of the stream."""

    def __init__(self, messages: AsyncIterator[bytes], specs: list[TensorSpec], inline: bytes, bounded: bool) -> None:
        self.messages = messages
        self.left: int | None = sum(s.nbytes for s in specs) if bounded else None
        self._chunks = self._pieces(inline_chunks(specs, inline)) if inline else self._read()

    def __aiter__(self) -> AsyncIterator[memoryview]:
        return self._chunks

    async def _pieces(self, pieces: list[memoryview]) -> AsyncIterator[memoryview]:
        for piece in pieces:
            self._count(piece)
            yield piece

    async def _read(self) -> AsyncIterator[memoryview]:
        while self.left is None or self.left > 0:
            raw = await anext(self.messages, None)
            if raw is None:
                return
            try:
                payload = data_payload(raw)
            except ValueError as exc:
                raise UpdateRejected("malformed", str(exc)) from exc
            if payload is None:
                raise UpdateRejected("malformed", "only data chunks may follow UpdateInfo")
            self._count(payload)
            yield payload

    def _count(self, chunk: memoryview) -> None:
        if self.left is not None:
            self.left -= len(chunk)

    async def finish(self) -> bool:
        """Skip what a rejected update left unread; whether exactly the announced bytes came."""
        try:
            async for _ in self._chunks:
                pass
        except UpdateRejected:
            return False
        return self.left == 0


class AggregatorServicer(pb_grpc.AggregatorServicer):
    def __init__(self, coordinator: Coordinator, status: Callable[[], dict], guard: PeerGuard,
                 secagg: SecAggRounds | None = None) -> None:
        self.coordinator = coordinator
        self.status = status
        self.guard = guard
        self.secagg = secagg

    async def _bind(self, context: grpc.aio.ServicerContext, partition: int) -> None:
        """A call may speak only for the partition its connection's certificate names."""
        if (refusal := self.guard.refusal(context, partition)) is not None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, refusal)

    async def Join(self, request: pb.JoinRequest, context: grpc.aio.ServicerContext) -> pb.JoinReply:
        await self._bind(context, request.partition)
        try:
            session = await self.coordinator.join(request.partition)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return pb.JoinReply(job=self.coordinator.plan.job, session=session, rounds=self.coordinator.plan.rounds)

    async def _task(self, context: grpc.aio.ServicerContext, partition: int, session: str) -> RoundState | JobEnd:
        try:
            return await self.coordinator.next_task(partition, session)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def _round(self, task: RoundState, partition: int, inline: bytes | None = None) -> bytes:
        """The round's instructions for one client: the part all share is encoded once (wire.round_message)."""
        if inline is not None:
            task.bytes_out += len(inline)
        shared = task.shared_info.get(inline is not None)
        if shared is None:
            shared = task.shared_info[inline is not None] = pb.RoundInfo(
                round=task.number, rounds=self.coordinator.plan.rounds, tensors=[s.header() for s in task.specs],
                inline=inline or b"").SerializeToString()
        config = task.config.get(partition)  # none, most often: the client reads "" as {}
        own = pb.RoundInfo(ticket=task.tickets[partition], config_json=json.dumps(config) if config else "")
        return round_message(shared, own.SerializeToString())

    @staticmethod
    def _chunks(task: RoundState) -> Iterator[bytes]:
        for chunk in chunk_views(task.weights[s.name] for s in task.specs):
            task.bytes_out += len(chunk)
            yield data_message(chunk)

    async def GetTask(self, request: pb.TaskRequest,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Envelope | bytes]:
        await self._bind(context, request.partition)
        task = await self._task(context, request.partition, request.session)
        if isinstance(task, JobEnd):
            yield done(task)
            return
        yield self._round(task, request.partition)
        for chunk in self._chunks(task):
            yield chunk

    async def Session(self, request_iterator: AsyncIterator[bytes],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Envelope | bytes]:
        """GetTask and SubmitUpdate for the whole job on one stream, and SecAgg+'s steps (see the .proto): a round
        of a small model is two messages instead of two calls, each a new HTTP/2 stream and server task."""
        messages = aiter(request_iterator)
        opening = await self._read(context, messages)
        if opening is None or not opening.HasField("next"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a session must start with a TaskRequest")
        partition, session = opening.next.partition, opening.next.session
        await self._bind(context, partition)
        while True:
            task = await self._task(context, partition, session)
            if isinstance(task, JobEnd):
                yield done(task)
                return
            inline = task.inline
            yield self._round(task, partition, inline)
            if inline is None:
                for chunk in self._chunks(task):
                    yield chunk
            while True:  # the client's update or `next`; with SecAgg+ its steps too, its reveal or `next` last
                answer = await self._read(context, messages)
                if answer is None:  # the client closed its side
                    return
                if answer.HasField("secagg") and self.secagg is not None:
                    if (step := await self.secagg.handle(partition, answer.secagg)) is None:  # a reveal
                        break
                    yield pb.Envelope(secagg_reply=step)
                elif answer.HasField("update"):
                    reply, framed = await self._submit(context, answer.update, messages, bounded=True)
                    if not reply.accepted:  # see the .proto: an accepted update needs no message
                        yield pb.Envelope(reply=reply)
                    elif self.secagg is not None:  # SecAgg+: the survivor lists answer a masked vector, once known
                        query = pb.SecAggRequest(round=answer.update.round, ticket=answer.update.ticket,
                                                 unmask=pb.UnmaskQuery())
                        yield pb.Envelope(secagg_reply=await self.secagg.handle(partition, query))
                    if not framed:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                            f"the update's data did not match its headers: {reply.reason}")
                    if self.secagg is None:
                        break
                elif answer.HasField("next"):  # the client passes on this round, or is done with it
                    break
                else:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                        "expected an update, a SecAgg+ step or a TaskRequest")

    @staticmethod
    async def _read(context: grpc.aio.ServicerContext, messages: AsyncIterator[bytes]) -> pb.Envelope | None:
        """The next Envelope of a stream; None at its end."""
        raw = await anext(messages, None)
        if raw is None:
            return None
        try:
            return parse_envelope(raw)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def SubmitUpdate(self, request_iterator: AsyncIterator[bytes],
                           context: grpc.aio.ServicerContext) -> pb.SubmitReply:
        """Messages arrive as raw bytes (see protocol.wire): chunks are folded from gRPC's own buffers."""
        messages = aiter(request_iterator)
        first = await anext(messages, None)
        try:
            envelope = None if first is None else parse_envelope(first)
        except ValueError:
            envelope = None
        if envelope is None or not envelope.HasField("update"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an update stream must start with UpdateInfo")
        reply, _ = await self._submit(context, envelope.update, messages, bounded=False)
        return reply

    async def _submit(self, context: grpc.aio.ServicerContext, info: pb.UpdateInfo, messages: AsyncIterator[bytes],
                      bounded: bool) -> tuple[pb.SubmitReply, bool]:
        """Fold one update; the reply, and whether the stream is left at the message after the update's data."""
        await self._bind(context, info.partition)
        specs = [spec_from_header(h) for h in info.tensors]
        data = UpdateData(messages, specs, info.inline, bounded)
        try:
            await self.coordinator.submit(info.partition, info.round, info.ticket, info.num_examples,
                                          dict(info.metrics), specs, data)
            reply = pb.SubmitReply(accepted=True)
        except UpdateRejected as exc:
            reply = pb.SubmitReply(accepted=False, reason=f"{exc.reason}: {exc}")
        return reply, not bounded or await data.finish()

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        return pb.StatusReply(json=json.dumps(self.status()))
