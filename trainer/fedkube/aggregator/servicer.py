"""The gRPC face of the aggregator: translates calls into Coordinator operations, nothing more."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from fedkube.aggregator.accumulate import UpdateRejected
from fedkube.aggregator.coordinator import Coordinator, JobEnd
from fedkube.aggregator.identity import PeerGuard
from fedkube.aggregator.secagg import SecAggRounds
from fedkube.protocol import fedkube_pb2 as pb
from fedkube.protocol import fedkube_pb2_grpc as pb_grpc
from fedkube.protocol.tensors import chunk_views, spec_from_header
from fedkube.protocol.wire import data_message, data_payload, parse_envelope
from fedkube.secure.secagg import ProtocolError

log = logging.getLogger(__name__)


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

    async def GetTask(self, request: pb.TaskRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.Envelope]:
        await self._bind(context, request.partition)
        try:
            task = await self.coordinator.next_task(request.partition, request.session)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        if isinstance(task, JobEnd):
            yield pb.Envelope(done=pb.JobDone(succeeded=task.succeeded, message=task.message))
            return
        yield pb.Envelope(round=pb.RoundInfo(
            round=task.number, rounds=self.coordinator.plan.rounds, ticket=task.tickets[request.partition],
            config_json=json.dumps(task.config.get(request.partition, {})), tensors=[s.header() for s in task.specs]))
        for chunk in chunk_views(task.weights[s.name] for s in task.specs):
            task.bytes_out += len(chunk)
            yield data_message(chunk)

    async def SubmitUpdate(self, request_iterator: AsyncIterator[bytes],
                           context: grpc.aio.ServicerContext) -> pb.SubmitReply:
        """Messages arrive as raw bytes (see protocol.wire): chunks are folded from gRPC's own buffers."""
        first = await anext(aiter(request_iterator), None)
        try:
            envelope = None if first is None else parse_envelope(first)
        except ValueError:
            envelope = None
        if envelope is None or not envelope.HasField("update"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an update stream must start with UpdateInfo")
        info = envelope.update
        await self._bind(context, info.partition)

        async def chunks() -> AsyncIterator[memoryview]:
            async for raw in request_iterator:
                try:
                    payload = data_payload(raw)
                except ValueError as exc:
                    raise UpdateRejected("malformed", str(exc)) from exc
                if payload is None:
                    raise UpdateRejected("malformed", "only data chunks may follow UpdateInfo")
                yield payload

        try:
            await self.coordinator.submit(info.partition, info.round, info.ticket, info.num_examples,
                                          dict(info.metrics), [spec_from_header(h) for h in info.tensors], chunks())
        except UpdateRejected as exc:
            return pb.SubmitReply(accepted=False, reason=f"{exc.reason}: {exc}")
        return pb.SubmitReply(accepted=True)

    async def Status(self, request: pb.StatusRequest, context: grpc.aio.ServicerContext) -> pb.StatusReply:
        return pb.StatusReply(json=json.dumps(self.status()))

    async def SecAgg(self, request: pb.SecAggRequest, context: grpc.aio.ServicerContext) -> pb.SecAggReply:
        await self._bind(context, request.partition)
        if self.secagg is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this job does not use SecAgg+")
        try:
            return await self.secagg.handle(request)
        except ProtocolError as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
